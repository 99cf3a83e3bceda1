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
        assert own == template.read_text().replace('pip install "mlops-pipeline[mlflow]==@MLOPS_VERSION@"',
                                                   'pip install -e ".[mlflow]"')


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


def test_scaffolded_workflows_install_exactly_the_mlops_that_wrote_them(tmp_path):
    assert CliRunner().invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    version = subprocess.run(["mlops", "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    for name in ("mlops-plan.yml", "mlops-apply.yml", "mlops-promote.yml"):
        installs = [line.strip() for line in (tmp_path / ".github" / "workflows" / name).read_text().splitlines()
                    if "pip install" in line]
        assert installs == [f'run: pip install "mlops-pipeline[mlflow]=={version}"'], name


def test_scaffolded_workflows_pass_actionlint(tmp_path):
    if shutil.which("actionlint") is None:
        pytest.skip("actionlint is not installed")
    assert CliRunner().invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    files = [str(p) for p in (tmp_path / ".github" / "workflows").glob("*.yml")]
    result = subprocess.run(["actionlint", *files], capture_output=True, text=True)
    assert len(files) == 3 and result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_release_builds_an_sdist_and_a_wheel_that_pass_twine_check(tmp_path):
    """What the release workflow runs before publishing, on this checkout."""
    pytest.importorskip("build")
    pytest.importorskip("twine")
    import sys

    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".mlops", "*.egg-info", "__pycache__",
                                                                ".venv", "build", "dist", ".*_cache"))
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True)
    built = sorted(p.name for p in (tmp_path / "dist").iterdir())
    from pipeline import __version__

    assert built == [f"mlops_pipeline-{__version__}-py3-none-any.whl", f"mlops_pipeline-{__version__}.tar.gz"]
    dist = [str(path) for path in (tmp_path / "dist").iterdir()]
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *dist], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    import zipfile

    names = zipfile.ZipFile(tmp_path / "dist" / built[0]).namelist()
    assert "pipeline/spec/mlops.schema.json" in names and "pipeline/gitops/templates/workflows/mlops-plan.yml" in names
