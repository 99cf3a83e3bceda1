"""`mlops init` scaffolds a working repository; every workflow passes actionlint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "pipeline" / "gitops" / "templates" / "workflows"


def test_init_makes_a_repo_that_validates_and_plans(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".github" / "workflows" / "mlops-plan.yml").exists()
    spec = str(tmp_path / "mlops.yaml")
    assert CliRunner().invoke(cli, ["--file", spec, "validate"]).exit_code == 0
    plan = CliRunner().invoke(cli, ["--file", spec, "plan", "--detailed-exitcode"])
    assert plan.exit_code == 2 and "register" in plan.output


def test_init_never_overwrites_and_ignores_the_state_once(tmp_path):
    (tmp_path / "mlops.yaml").write_text("# mine\n")
    (tmp_path / ".gitignore").write_text("*.pyc")
    first = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert "skipped mlops.yaml (exists)" in first.output
    assert (tmp_path / "mlops.yaml").read_text() == "# mine\n"
    second = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert "created" not in second.output
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n.mlops/\n"


def test_repository_workflows_are_the_templates_installing_from_source():
    for template in TEMPLATES.glob("*.yml"):
        own = (REPO / ".github" / "workflows" / template.name).read_text()
        assert own == template.read_text().replace("pip install mlops-pipeline", "pip install -e .")


def test_workflows_pass_actionlint():
    if shutil.which("actionlint") is None:
        if os.environ.get("MLOPS_TESTS_IN_CI"):
            pytest.fail("actionlint is not installed; .ci/run installs it")
        pytest.skip("actionlint is not installed")
    files = [*map(str, (REPO / ".github" / "workflows").glob("*.yml")), *map(str, TEMPLATES.glob("*.yml"))]
    result = subprocess.run(["actionlint", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_action_is_pinned_to_a_commit_with_its_version_named():
    files = sorted((REPO / ".github" / "workflows").glob("*.yml")) + sorted(TEMPLATES.glob("*.yml"))
    uses = [line.strip() for path in files for line in path.read_text().splitlines() if "uses:" in line]
    assert uses
    pinned = re.compile(r"^- uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+(\.\d+)*$")
    assert [line for line in uses if not pinned.match(line)] == []
