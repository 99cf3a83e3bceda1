"""The ``mlops`` group: every command is listed and runs, each loading only its own module."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import COMMAND_MODULES, cli

ROOT = Path(__file__).resolve().parents[2]


def test_every_command_of_every_module_is_listed_with_its_module():
    modules = {f"pipeline.cli.{name}" for name in COMMAND_MODULES.values()}
    found = {command.name: module.rsplit(".", 1)[1] for module in sorted(modules)
             for command in importlib.import_module(module).COMMANDS}
    assert found == COMMAND_MODULES
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in COMMAND_MODULES)


def test_a_command_imports_only_its_own_module():
    code = ("import sys\nfrom pipeline.cli.main import main\nsys.argv = ['mlops', 'score-batch', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.cli.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "Score a table" in result.stdout
    assert result.stdout.splitlines()[-1] == "['pipeline.cli.batch', 'pipeline.cli.context', 'pipeline.cli.main']"
