"""The scoring process imports what it serves with: no YAML, JSON Schema or CLI libraries."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(result.stdout))


def test_the_scoring_app_imports_no_yaml_jsonschema_or_click():
    modules = _modules_after("import pipeline.server.app")
    assert "pipeline.server.app" in modules
    assert not {"yaml", "jsonschema", "click"} & modules
    assert not [m for m in modules if m.startswith(("pipeline.spec", "pipeline.cli", "pipeline.plan",
                                                    "pipeline.apply", "pipeline.targets"))]
