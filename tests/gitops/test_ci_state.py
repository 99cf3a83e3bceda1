"""On a CI runner: local state is refused where it would be lost, and a plan without credentials says so."""

from __future__ import annotations

from pathlib import Path

import git
from click.testing import CliRunner

from pipeline.cli.main import cli

LOCAL = """\
version: 1
targets:
  local: {type: local}
"""

SHARED = """\
version: 1
registry:
  type: mlflow
  tracking_uri: ${MLFLOW_TRACKING_URI}
targets:
  local: {type: local}
endpoints:
  fraud:
    target: local
    deployments:
      blue: {model: "models:/fraud/1"}
"""


def run(path: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["--file", str(path / "mlops.yaml"), *args], env=env)


def test_apply_with_the_embedded_registry_is_refused_under_ci_but_plan_runs(tmp_path):
    (tmp_path / "mlops.yaml").write_text(LOCAL)
    refused = run(tmp_path, "apply", "--yes", env={"CI": "true"})
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "mlops.yaml" in refused.output and "would be lost with the runner" in refused.output
    assert "--allow-local-state" in refused.output and not (tmp_path / ".mlops").exists()
    assert run(tmp_path, "plan", env={"CI": "true"}).exit_code == 0
    assert run(tmp_path, "apply", "--yes", "--allow-local-state", env={"CI": "true"}).exit_code == 0


def test_a_shared_registry_without_its_url_names_the_variable(tmp_path):
    (tmp_path / "mlops.yaml").write_text(SHARED)
    result = run(tmp_path, "plan", env={"MLFLOW_TRACKING_URI": ""})
    assert result.exit_code == 1
    assert "mlops.yaml:4:3: the environment variable MLFLOW_TRACKING_URI is not set" in result.output


def test_without_credentials_the_plan_reviews_the_change_and_says_there_is_no_live_plan(tmp_path):
    repo = git.Repo.init(tmp_path, initial_branch="main")
    (tmp_path / "mlops.yaml").write_text(SHARED)
    repo.git.add(A=True)
    repo.index.commit("base")
    (tmp_path / "mlops.yaml").write_text(SHARED.replace("models:/fraud/1", "models:/fraud@champion"))
    result = run(tmp_path, "plan", "--base", "HEAD", "--no-live", "--format", "markdown",
                 env={"MLFLOW_TRACKING_URI": ""})
    assert result.exit_code == 0, result.output
    assert "models:/fraud/1" in result.output and "models:/fraud@champion" in result.output
    assert "No live plan" in result.output and "fork" in result.output
