"""Two working copies with no shared `.mlops/` folder — two CI runners — share one MLflow server.

Everything here is real: a real `mlflow server`, real git clones, the real CLI in subprocesses, and
the local target serving what the shared registry holds.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import git
import pytest

from tests.e2e.conftest import REPO, Repo

pytestmark = pytest.mark.slow

SHARED = """\
version: 1
registry:
  type: mlflow
  tracking_uri: ${{MLFLOW_TRACKING_URI}}
  experiment: {experiment}
models:
  {model}:
    path: models/iris
    flavor: sklearn
targets:
  local: {{type: local}}
endpoints:
  {endpoint}:
    target: local
    traffic: {{blue: 100}}
    deployments:
      blue:
        model: {model}
        readiness_probe: {{period: 0.2, failure_threshold: 100}}
"""


class Runner(Repo):
    """One working copy, as a fresh CI runner has it: its own clone, its own (empty) `.mlops/`."""

    def __init__(self, root: Path, env: dict[str, str]):
        super().__init__(root)
        self.env = env

    def mlops(self, *args: str, **kwargs):
        return super().mlops(*args, env=self.env, **kwargs)

    def spawn(self, *args: str):
        import subprocess
        import sys

        return subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", *args], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def pull(self) -> None:
        git.Repo(self.root).remotes.origin.pull("main")


@pytest.fixture
def runners(tmp_path: Path, mlflow_server: str):
    names = {"experiment": f"mlops/test-{uuid.uuid4().hex[:8]}", "model": f"iris-{uuid.uuid4().hex[:6]}",
             "endpoint": "shared"}
    origin = tmp_path / "origin"
    shutil.copytree(REPO / "models" / "iris", origin / "models" / "iris")
    (origin / "mlops.yaml").write_text(SHARED.format(**names))
    (origin / ".gitignore").write_text(".mlops/\n")
    repo = git.Repo.init(origin, initial_branch="main")
    repo.git.add(A=True)
    repo.index.commit("first model")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    a = Runner(Path(git.Repo.clone_from(origin, tmp_path / "a").working_tree_dir), env)
    b = Runner(Path(git.Repo.clone_from(origin, tmp_path / "b").working_tree_dir), env)
    try:
        yield a, b, names, repo
    finally:
        for runner in (a, b):
            runner.mlops("destroy", "--yes", check=False)


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_fresh_clone_sees_what_another_applied(runners, mlflow_server):
    a, b, names, _ = runners
    model = names["model"]
    a.mlops("apply", "--yes")
    assert a.score([[5.1, 3.5, 1.4, 0.2]], "shared").status_code == 200

    plan = json.loads(b.mlops("plan", "--format", "json").stdout)
    assert [s["id"] for s in plan["steps"] if s["kind"] == "register"] == []  # registered once, by A
    assert {s["after"]["model"] for s in plan["steps"] if s["kind"] == "deploy"} == {f"{model}:1"}

    history = json.loads(b.mlops("history", "--format", "json").stdout)
    commit = git.Repo(a.root).head.commit.hexsha
    assert [(e["commit"], e["outcome"]) for e in history] == [(commit, "ok")]
    assert history[0]["served"]["shared/blue"]["model"] == f"{model}:1"

    spec = (b.root / "mlops.yaml").read_text().replace(f"model: {model}\n", f"model: {model}:1\n")
    (b.root / "mlops.yaml").write_text(spec)
    assert f"{model}:1" in b.mlops("plan").stdout  # a pinned version resolves in a fresh clone

    version = client(mlflow_server).get_model_version(model, "1")
    assert version.tags["mlops.lineage.commit"] == commit and version.tags["mlops.digest"].startswith("sha256:")
    assert client(mlflow_server).get_model_version_by_alias(model, "shared-blue").version == "1"


def test_concurrent_applies_wait_for_the_lock_naming_the_holder_and_register_once(runners, mlflow_server):
    a, b, names, _ = runners
    for runner in (a, b):  # the same retrained model reaches both runners (a merge and a re-run)
        (runner.root / "models" / "iris" / "NOTES.md").write_text("retrained\n")
        runner.commit("retrained")
    first = a.spawn("apply", "--yes")
    lock = f"mlops--lock--{names['experiment'].replace('/', '-')}"
    deadline = time.monotonic() + 60
    while True:  # wait until A holds the lock on the server
        try:
            client(mlflow_server).get_registered_model(lock)
            break
        except Exception:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
    refused = b.mlops("apply", "--yes", "--lock-timeout", "1s", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "is locked by apply by" in refused.stderr and "lock id" in refused.stderr  # names the holder
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, out + err
    plan = json.loads(b.mlops("plan", "--format", "json").stdout)
    assert [s["id"] for s in plan["steps"] if s["kind"] == "register"] == []  # A registered it
    b.mlops("apply", "--yes", "--lock-timeout", "2m")
    versions = client(mlflow_server).search_model_versions(f"name='{names['model']}'")
    assert sorted(int(v.version) for v in versions) == [1]  # identical content: one version, whoever applied
    history = json.loads(b.mlops("history", "--format", "json").stdout)
    assert [e["outcome"] for e in history] == ["ok", "ok"]


TRAIN = """\
import sys
import mlflow
import mlflow.sklearn
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment(sys.argv[2])
rows = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]] * 5
model = LogisticRegression().fit(rows, [0, 1, 0, 1] * 5)
with mlflow.start_run():
    mlflow.sklearn.log_model(model, name="model", registered_model_name=sys.argv[1], serialization_format="skops")
"""

NATIVE = """\
version: 1
registry:
  type: mlflow
  tracking_uri: ${{MLFLOW_TRACKING_URI}}
  experiment: {experiment}
targets:
  local: {{type: local}}
endpoints:
  fraud:
    target: local
    traffic: {{blue: 50, green: 50}}
    deployments:
      blue:
        model: models:/{model}/1
        readiness_probe: {{period: 0.2, failure_threshold: 100}}
      green:
        model: models:/{model}@champion
        readiness_probe: {{period: 0.2, failure_threshold: 100}}
"""


def test_a_model_logged_with_mlflow_deploys_by_version_and_by_alias(tmp_path, mlflow_server):
    import subprocess
    import sys

    model = f"fraud-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    subprocess.run([sys.executable, "-c", TRAIN, model, f"train-{model}"], env=env, check=True, capture_output=True)
    client(mlflow_server).set_registered_model_alias(model, "champion", "1")
    root = tmp_path / "native"
    root.mkdir()
    (root / "mlops.yaml").write_text(NATIVE.format(experiment=f"mlops/{model}", model=model))
    runner = Runner(root, env)
    try:
        plan = runner.mlops("plan").stdout
        assert f"{model}:1" in plan and "register" not in plan
        runner.mlops("apply", "--yes")
        for _ in range(4):  # both deployments answer, whichever the split picks
            response = runner.score([[0.0, 1.0], [1.0, 1.0]], "fraud")
            assert response.status_code == 200, response.text
            assert response.json()["predictions"] == [0, 1]
        aliases = client(mlflow_server).get_registered_model(model).aliases
        assert aliases["fraud-blue"] == "1" and aliases["fraud-green"] == "1" and aliases["champion"] == "1"
        subprocess.run([sys.executable, "-c", TRAIN, model, f"train-{model}"], env=env, check=True,
                       capture_output=True)
        client(mlflow_server).set_registered_model_alias(model, "champion", "2")
        plan = runner.mlops("plan").stdout
        assert f"{model}:1 → {model}:2 (models:/{model}@champion moved)" in plan
        runner.mlops("destroy", "--yes")
        assert client(mlflow_server).get_registered_model(model).aliases == {"champion": "2"}  # only the user's
    finally:
        runner.mlops("destroy", "--yes", check=False)
