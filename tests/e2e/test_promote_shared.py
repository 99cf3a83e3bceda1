"""From training to production: a version registered with MLflow's own API is promoted from one working copy
as a pull request, the branch applied, and both copies' history shows the promotion (one MLflow server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import git
import pytest

from tests.e2e.test_shared_state import Runner, client
from tests.gitops.test_promote import FakePulls

pytestmark = pytest.mark.slow

TRAIN_TWICE = """\
import sys
import mlflow
import mlflow.sklearn
from sklearn.linear_model import LogisticRegression

mlflow.set_experiment(sys.argv[2])
rows = [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]] * 5
for c in (1.0, 0.5):
    model = LogisticRegression(C=c).fit(rows, [0, 1, 0, 1] * 5)
    with mlflow.start_run():
        mlflow.log_metric("accuracy", 0.9 + c / 100)
        mlflow.sklearn.log_model(model, name="model", registered_model_name=sys.argv[1],
                                 serialization_format="skops")
"""

SPEC = """\
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
    deployments:
      blue:
        model: models:/{model}/1   # production
        readiness_probe: {{period: 0.2, failure_threshold: 100}}
"""


def test_a_registered_version_is_promoted_by_alias_through_a_pull_request(tmp_path: Path, mlflow_server: str):
    model = f"fraud-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    subprocess.run([sys.executable, "-c", TRAIN_TWICE, model, f"train-{model}"], env=env, check=True,
                   capture_output=True)
    client(mlflow_server).set_registered_model_alias(model, "champion", "2")

    origin = tmp_path / "origin.git"
    git.Repo.init(origin, bare=True, initial_branch="main")
    seed = git.Repo.clone_from(origin, tmp_path / "seed")
    seed.git.checkout("-b", "main")
    (tmp_path / "seed" / "mlops.yaml").write_text(SPEC.format(experiment=f"mlops/{model}", model=model))
    (tmp_path / "seed" / ".gitignore").write_text(".mlops/\n")
    seed.git.add(A=True)
    seed.git.commit("-m", "fraud on version 1", "--author", "Ada <ada@example.com>")
    seed.git.push("origin", "main")
    copies = []
    for name in ("a", "b"):
        repo = git.Repo.clone_from(origin, tmp_path / name)
        with repo.config_writer() as config:
            config.set_value("user", "name", f"user-{name}").set_value("user", "email", f"{name}@example.com")
        copies.append(Runner(Path(repo.working_tree_dir), env))
    a, b = copies
    github = FakePulls()
    try:
        a.mlops("apply", "--yes")
        b.env = {**env, **github.env, "GITHUB_ACTOR": ""}  # B runs the promotion, as the workflow would
        promoted = b.mlops("promote", "fraud/blue", "--to", f"models:/{model}@champion", "--open-pr")
        assert f"models:/{model}@champion points at version 2 now; pinning {model}:2." in promoted.stderr
        assert f"+        model: models:/{model}/2   # production" in promoted.stdout
        (pull,) = github.pulls
        assert pull["head"]["ref"] == "mlops/promote-fraud-blue-2" and pull["base"]["ref"] == "main"
        body = pull["body"]
        assert f"~ deployment fraud/blue: model models:/{model}/1 → models:/{model}/2" in body
        assert "### mlops plan" in body and f"{model}:2" in body
        assert "- run id: `" in body and "| accuracy | 0.905 |" in body

        assert git.Repo(b.root).active_branch.name == "mlops/promote-fraud-blue-2"
        b.mlops("apply", "--yes")  # what the merge would apply
        response = b.score([[0.0, 1.0], [1.0, 1.0]], "fraud")
        assert response.status_code == 200, response.text
        trailer = f"fraud/blue {model}:2 from models:/{model}@champion by user-b"
        history = b.mlops("history", "fraud").stdout
        assert f"    promoted {trailer}" in history
        entries = json.loads(b.mlops("history", "--format", "json").stdout)
        assert [e["promotions"] for e in entries] == [[], [trailer]]
        assert entries[1]["served"]["fraud/blue"]["model"] == f"{model}:2"

        git.Repo(a.root).remotes.origin.fetch()  # the other copy sees the promotion once it has the commit
        assert f"    promoted {trailer}" in a.mlops("history", "fraud").stdout
        again = b.mlops("promote", "fraud/blue", "--to", "2", "--open-pr")
        assert "nothing to change, no pull request opened" in again.stdout and len(github.pulls) == 1
    finally:
        github.server.shutdown()
        for copy in copies:  # each copy started its own local endpoint
            copy.mlops("destroy", "--yes", check=False)
