"""The contract every ``Target`` adapter must pass.

A test module subclasses ``TargetContract`` and provides a ``harness`` fixture: a ``Harness`` (or a
subclass) holding the target under test, the loaded spec and a registry with the example model
registered twice (``iris-classifier:1`` the model, ``:2`` the same plus a file) and a model whose
service never gets ready (``broken:1``). ``probe`` sends one request the way a caller would (real
targets: HTTP to the endpoint's URL with its key; the fake: a look at what it observes) and
``failing_request`` gives a request whose health check fails on that target.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from pipeline.errors import HealthCheckFailed, MlopsError, TargetError
from pipeline.keys import KEY_NAMES
from pipeline.spec.loader import load
from pipeline.spec.model import settings_digest
from pipeline.state import RUNNING
from pipeline.targets.base import DeployRequest, ResolvedModel

REPO = Path(__file__).resolve().parents[2]
IRIS = [[5.1, 3.5, 1.4, 0.2]]
ENDPOINT = "iris"

SPEC = """\
version: 1
registry: .mlops/registry
{environments}models:
  iris-classifier: {{path: models/iris, flavor: sklearn}}
  broken: {{path: models/broken, flavor: python}}
targets:
  under-test: {target}
endpoints:
  iris:
    target: under-test
    auth_mode: key
    traffic: {{blue: 100, green: 0, broken: 0}}
    deployments:
      blue: {{model: iris-classifier,{environment} readiness_probe: {{period: 0.2, failure_threshold: 150}}}}
      green: {{model: iris-classifier,{environment} readiness_probe: {{period: 0.2, failure_threshold: 150}}}}
      broken: {{model: broken,{environment} readiness_probe: {{period: 0.2, failure_threshold: 50}}}}
"""

BROKEN_SCORE = """\
def init():
    raise RuntimeError("this model cannot load: weights missing")


def run(data):
    return data
"""


def write_repository(root: Path, target: str, environment: str | None = None) -> Path:
    """A repository with the example model (and a second content of it), a broken model and mlops.yaml."""
    shutil.copytree(REPO / "models" / "iris", root / "models" / "iris")
    shutil.copytree(REPO / "models" / "iris", root / "versions" / "iris-2")
    (root / "versions" / "iris-2" / "NOTES.md").write_text("retrained\n")
    (root / "models" / "broken").mkdir(parents=True)
    (root / "models" / "broken" / "score.py").write_text(BROKEN_SCORE)
    environments = ""
    if environment:
        shutil.copytree(REPO / "environments", root / "environments")
        environments = f"environments:\n  {environment}: {{requirements: environments/sklearn/requirements.txt}}\n"
    (root / "mlops.yaml").write_text(SPEC.format(
        environments=environments, target=target,
        environment=f" environment: {environment}," if environment else ""))
    return root / "mlops.yaml"


class Harness:
    """The target under test and what it takes to build its deploy requests."""

    def __init__(self, root: Path, target, registry, image: str | None = None):
        self.root = root
        self.spec = load(root / "mlops.yaml")
        self.target = target
        self.registry = registry
        self.image = image
        self.models = {
            ("iris-classifier", 1): registry.register("iris-classifier", root / "models" / "iris", flavor="sklearn")[0],
            ("iris-classifier", 2): registry.register("iris-classifier", root / "versions" / "iris-2",
                                                      flavor="sklearn")[0],
            ("broken", 1): registry.register("broken", root / "models" / "broken", flavor="python")[0],
        }

    @property
    def endpoint(self):
        return self.spec.endpoints[ENDPOINT]

    def serve_metrics(self, deployment: str) -> None:
        """Real instances expose /metrics themselves; an in-memory target is told what to answer."""

    def request(self, deployment: str = "blue", version: int = 1, model: str | None = None, **settings
                ) -> DeployRequest:
        """What the executor would send to deploy ``deployment`` with ``model:version`` (and ``settings``)."""
        spec = dataclasses.replace(self.endpoint.deployments[deployment], **settings)
        name = model or spec.model.name
        record = self.models[(name, version)]
        resolved = ResolvedModel(name, version, record.digest, record.flavor,
                                 self.registry.materialize(name, version))
        return DeployRequest(endpoint=self.endpoint, deployment=spec, model=resolved, image=self.image,
                             settings_digest=settings_digest(self.endpoint, spec))

    def serve(self, deployment: str = "blue", version: int = 1):
        """Deploy and route all live traffic to it."""
        observed = self.target.deploy(self.request(deployment, version))
        self.target.set_traffic(ENDPOINT, {deployment: 100}, {})
        return observed

    def failing_request(self, deployment: str = "blue") -> DeployRequest:
        """A request whose new instances never become ready (here: a model whose init raises)."""
        return self.request(deployment, 1, model="broken")

    def probe(self, key: str | None = None) -> str | None:
        """One scoring request to the endpoint's URL; None when it succeeded, else what went wrong."""
        url = self.target.url(ENDPOINT)
        if url is None:
            return "the endpoint has no URL"
        key = key or self.target.keys(ENDPOINT)["primary"]
        try:
            response = httpx.post(f"{url}/score", json={"data": IRIS}, timeout=10,
                                  headers={"authorization": f"Bearer {key}"})
        except httpx.HTTPError as error:
            return repr(error)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        return None

    def accepts(self, key: str, within: float = 5.0) -> bool:
        """The endpoint accepts ``key`` (keys take effect within a second on real targets)."""
        deadline = time.monotonic() + within
        while True:
            if self.probe(key) is None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def cleanup(self) -> None:
        endpoints, _ = self.target.observe()
        for endpoint in endpoints:
            self.target.delete_endpoint(endpoint.name)


def deployment(target, name: str = "blue"):
    _, deployments = target.observe()
    return next((d for d in deployments if d.key == f"{ENDPOINT}/{name}"), None)


def endpoint(target):
    endpoints, _ = target.observe()
    return next((e for e in endpoints if e.name == ENDPOINT), None)


class TargetContract:
    def test_observe_after_deploy_shows_the_deployment(self, harness):
        target = harness.target
        created = target.ensure_endpoint(harness.endpoint)
        assert created.name == ENDPOINT and created.url == target.url(ENDPOINT) and created.url
        request = harness.request("blue", 1)
        returned = target.deploy(request)
        seen = deployment(target)
        assert seen == returned
        assert seen.model == "iris-classifier:1" and seen.target == target.name
        assert seen.settings_digest == request.settings_digest
        assert seen.instance_count == seen.ready_instances == 1 and seen.status == RUNNING
        assert endpoint(target).auth_mode == "key" and endpoint(target).url == target.url(ENDPOINT)
        assert isinstance(target.logs(ENDPOINT, "blue"), str)
        with pytest.raises(TargetError):
            target.logs(ENDPOINT, "nothing")

    def test_metrics_are_read_from_each_instance(self, harness):
        target = harness.target
        target.ensure_endpoint(harness.endpoint)
        target.deploy(harness.request("blue", 1))
        harness.serve_metrics("blue")
        texts = target.metrics(ENDPOINT, "blue")
        assert len(texts) == 1 and "mlops_request_duration_seconds" in next(iter(texts.values()))
        assert target.metrics(ENDPOINT, "nothing") == {}

    def test_deploying_the_same_request_twice_is_idempotent(self, harness):
        target = harness.target
        request = harness.request("blue", 1)
        first = target.deploy(request)
        again = target.deploy(request)
        assert again == first == deployment(target)
        endpoints, deployments = target.observe()
        assert [d.key for d in deployments] == [f"{ENDPOINT}/blue"]
        assert [e.name for e in endpoints] == [ENDPOINT]

    def test_a_rolling_replace_keeps_serving(self, harness):
        target = harness.target
        harness.serve("blue", 1)
        assert harness.probe() is None
        failures, sent, stop = [], [], threading.Event()

        def load() -> None:
            while not stop.is_set():
                sent.append(1)
                failure = harness.probe()
                if failure:
                    failures.append(failure)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            replaced = target.deploy(harness.request("blue", 2, instance_count=2))
        finally:
            stop.set()
            thread.join()
        assert sent and not failures, f"{len(failures)} of {len(sent)} requests failed: {failures[:3]}"
        assert replaced.model == "iris-classifier:2" and replaced.ready_instances == 2
        assert deployment(target) == replaced

    def test_a_failed_health_check_leaves_the_old_one_serving(self, harness):
        target = harness.target
        before = harness.serve("blue", 1)
        with pytest.raises(HealthCheckFailed, match="keeps serving"):
            target.deploy(harness.failing_request("blue"))
        assert deployment(target) == before and harness.probe() is None
        with pytest.raises(HealthCheckFailed, match="nothing was deployed"):
            target.deploy(harness.failing_request("broken"))
        assert deployment(target, "broken") is None

    def test_delete_is_idempotent(self, harness):
        target = harness.target
        harness.serve("blue", 1)
        target.deploy(harness.request("green", 1))
        target.delete(ENDPOINT, "green")
        target.delete(ENDPOINT, "green")
        target.delete(ENDPOINT, "never-deployed")
        assert deployment(target, "green") is None and deployment(target, "blue") is not None
        assert harness.probe() is None
        target.delete_endpoint(ENDPOINT)
        target.delete_endpoint(ENDPOINT)
        assert target.observe() == ([], [])
        assert target.url(ENDPOINT) is None

    def test_traffic_set_is_observed(self, harness):
        target = harness.target
        target.deploy(harness.request("blue", 1))
        target.deploy(harness.request("green", 2))
        target.set_traffic(ENDPOINT, {"blue": 70, "green": 30}, {})
        seen = endpoint(target)
        assert dict(seen.traffic) == {"blue": 70, "green": 30} and dict(seen.mirror_traffic) == {}
        target.set_traffic(ENDPOINT, {"blue": 100}, {"green": 20})
        seen = endpoint(target)
        assert dict(seen.traffic) == {"blue": 100} and dict(seen.mirror_traffic) == {"green": 20}
        assert harness.probe() is None
        with pytest.raises(TargetError):
            target.set_traffic("no-such-endpoint", {"blue": 100}, {})

    def test_keys_are_read_and_rotated(self, harness):
        target = harness.target
        with pytest.raises(TargetError):
            target.keys(ENDPOINT)  # no endpoint yet
        harness.serve("blue", 1)
        keys = target.keys(ENDPOINT)
        assert set(keys) == set(KEY_NAMES) and len(set(keys.values())) == 2 and all(keys.values())
        assert target.keys(ENDPOINT) == keys
        rotated = target.rotate_key(ENDPOINT, "secondary")
        assert rotated["primary"] == keys["primary"] and rotated["secondary"] != keys["secondary"]
        assert target.keys(ENDPOINT) == rotated
        assert harness.accepts(rotated["secondary"]) and harness.probe(rotated["primary"]) is None
        assert harness.probe(keys["secondary"]) is not None  # the replaced key no longer works
        with pytest.raises(MlopsError):
            target.rotate_key(ENDPOINT, "tertiary")
        assert target.keys(ENDPOINT) == rotated
