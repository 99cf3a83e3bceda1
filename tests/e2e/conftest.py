"""A real GitOps repository (the example's model, a local target) driven through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import git
import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

SPEC = """\
version: 1
registry: .mlops/registry
models:
  iris-classifier:
    path: models/iris
    flavor: sklearn
    baseline: models/iris/baseline.csv
  broken:
    path: models/broken
    flavor: python
targets:
  local: {type: local}
endpoints:
  iris:
    target: local
    auth_mode: key
    traffic: {blue: 100}
    deployments:
      blue:
        model: iris-classifier
        data_collector: {sampling_rate: 1.0}
        readiness_probe: {period: 0.2, failure_threshold: 100}
"""

BROKEN_SCORE = """\
def init():
    raise RuntimeError("this model cannot load: weights missing")


def run(data):
    return data
"""


class Repo:
    """A temporary repository and a way to run `mlops` in it."""

    def __init__(self, root: Path):
        self.root = root

    def mlops(self, *args: str, check: bool = True, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=self.root,
                                capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"mlops {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", *args], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str) -> None:
        repo = git.Repo(self.root)
        repo.git.add(A=True)
        repo.index.commit(message)

    def endpoint(self, name: str = "iris") -> tuple[str, dict]:
        status = json.loads(self.mlops("status", "--format", "json").stdout)
        row = next(r for r in status if r["endpoint"] == name)
        keys = json.loads(self.mlops("endpoints", "keys", name, "--format", "json").stdout)
        return row["url"], {"Authorization": f"Bearer {keys['primary']}"}

    def score(self, rows, name: str = "iris") -> httpx.Response:
        url, headers = self.endpoint(name)
        return httpx.post(f"{url}/score", json={"data": rows}, headers=headers, timeout=10)


@pytest.fixture
def repo(tmp_path: Path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "models" / "iris", root / "models" / "iris")
    (root / "models" / "broken").mkdir(parents=True)
    (root / "models" / "broken" / "score.py").write_text(BROKEN_SCORE)
    (root / "mlops.yaml").write_text(SPEC)
    (root / ".gitignore").write_text(".mlops/\n")
    git.Repo.init(root, initial_branch="main")
    project = Repo(root)
    project.commit("first model")
    try:
        yield project
    finally:
        project.mlops("destroy", "--yes", check=False)
