"""plan --replay on the shipped fakes: which steps are replayed, on whose requests, and what is said
when there is nothing to replay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix

from pipeline.apply import replay
from pipeline.apply.observe import served
from pipeline.apply.service import Deployer
from pipeline.registry.memory import InMemoryRegistry
from pipeline.spec.loader import load
from pipeline.targets.fake import FakeTarget

REPO = Path(__file__).resolve().parents[2]
SPEC = """\
version: 1
registry: .mlops/registry
models:
  iris: {path: models/iris, flavor: sklearn, baseline: models/iris/baseline.csv}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    traffic: {blue: 100}
    deployments:
      blue: {model: iris, data_collector: {sampling_rate: 1.0}}
"""
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.registry = InMemoryRegistry()
        self.target = FakeTarget("local")
        self.target.data_dir = root / ".mlops" / "data"  # type: ignore[attr-defined]  # where the services write

    def deployer(self, text: str = SPEC) -> Deployer:
        (self.root / "mlops.yaml").write_text(text)
        return Deployer(load(self.root / "mlops.yaml"), self.root / "mlops.yaml", self.registry,
                        {"local": self.target}, None, self.root / ".mlops")

    def collect(self, deployment: str, version: int, rows: list, answers: list, status: int = 200) -> None:
        folder = self.target.data_dir / "web" / deployment / "2026" / "01" / "01" / "10"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "00-1-0000000a.jsonl").open("a") as handle:
            for i in range(0, len(rows), 3):
                handle.write(json.dumps({"time": f"2026-01-01T10:00:00.{len(rows) * version + i:06d}+00:00",
                                         "route": "/score", "status": status, "model": "iris",
                                         "model_version": version, "deployment": deployment,
                                         "inputs": {"columns": COLUMNS, "data": rows[i:i + 3]},
                                         "outputs": answers[i:i + 3]}) + "\n")

    def retrain(self) -> LogisticRegression:
        features, species = load_iris(return_X_y=True)
        estimator = LogisticRegression(C=0.02, max_iter=500).fit(features, species)
        sio.dump(estimator, self.root / "models" / "iris" / "model.skops")
        return estimator

    def replay(self, service: Deployer, limit: int) -> list[dict]:
        found = replay.cases(service.plan(), served(service.spec, service.targets))
        return replay.run(service.spec, service.registry, service.targets, found, limit)


@pytest.fixture
def project(tmp_path):
    shutil.copytree(REPO / "models" / "iris", tmp_path / "models" / "iris")
    made = Project(tmp_path)
    made.deployer().apply()
    yield made
    made.registry.close()


def test_an_update_replays_the_live_versions_requests_on_the_working_tree_model(project):
    features, species = load_iris(return_X_y=True)
    project.collect("blue", 0, features[:30].tolist(), [2] * 30)  # an older version's answers: passed over
    project.collect("blue", 1, features.tolist(), species.tolist())
    estimator = project.retrain()
    (report,) = project.replay(project.deployer(), limit=40)
    assert (report["step"], report["source"], report["live_model"], report["candidate_model"]) == (
        "update:web/blue", "web/blue", "iris:1", "iris:2")
    assert report["candidate_from"].startswith("working tree models/iris")
    rows = features[-120:]  # the last 40 requests of 3 rows
    expected = estimator.predict(rows)
    result = report["result"]
    assert (result["requests"], result["rows"], result["failed"]) == (40, 120, 0)
    assert result["agreement"] == pytest.approx(accuracy_score(species[-120:], expected))
    labels = sorted(set(species[-120:]) | set(expected))
    assert result["confusion"] == confusion_matrix(species[-120:], expected, labels=labels).tolist()


def test_a_registered_candidate_is_loaded_from_the_registry(project):
    features, species = load_iris(return_X_y=True)
    project.collect("blue", 1, features.tolist(), species.tolist())
    estimator = project.retrain()
    project.registry.register("iris", project.root / "models" / "iris", flavor="sklearn")
    pinned = SPEC.replace("blue: {model: iris,", "blue: {model: 'iris:2',")
    (report,) = project.replay(project.deployer(pinned), limit=10)
    assert report["candidate_from"] == "registered"
    assert report["result"]["agreement"] == pytest.approx(accuracy_score(species[-30:], estimator.predict(
        features[-30:])))


def test_a_new_deployment_beside_a_live_one_gets_the_serving_deployments_requests(project):
    features, species = load_iris(return_X_y=True)
    project.collect("blue", 1, features.tolist(), species.tolist())
    project.retrain()
    beside = SPEC.replace("    deployments:\n", "    deployments:\n      green: {model: iris}\n").replace(
        "blue: {model: iris,", "blue: {model: 'iris:1',")
    (report,) = project.replay(project.deployer(beside), limit=5)
    assert (report["step"], report["source"], report["live_model"]) == ("deploy:web/green", "web/blue", "iris:1")
    assert report["result"]["rows"] == 15


def test_nothing_to_replay_says_why(project):
    project.retrain()
    off = SPEC.replace(", data_collector: {sampling_rate: 1.0}", "")
    (report,) = project.replay(project.deployer(off), limit=50)
    assert "result" not in report
    assert "web/blue collected no answered requests of iris:1" in report["note"]
    assert "data_collector is off" in report["note"]


def test_steps_that_keep_the_model_version_are_not_replayed(project):
    settings_only = SPEC.replace("blue: {model: iris,", "blue: {model: iris, instance_count: 2,")
    service = project.deployer(settings_only)
    assert service.plan().has_changes
    assert project.replay(service, limit=50) == []


def test_a_candidate_that_cannot_load_is_reported_not_raised(project):
    features, species = load_iris(return_X_y=True)
    project.collect("blue", 1, features.tolist(), species.tolist())
    (project.root / "models" / "iris" / "model.skops").write_bytes(np.arange(10).tobytes())
    (report,) = project.replay(project.deployer(), limit=5)
    assert "the candidate cannot be loaded here" in report["note"]
