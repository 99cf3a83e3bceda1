"""``FakeTarget`` (the in-memory target shipped with the package) passes the target contract."""

from __future__ import annotations

import pytest

from pipeline.errors import HealthCheckFailed, TargetError
from pipeline.registry.memory import InMemoryRegistry
from pipeline.state import STOPPED
from pipeline.targets.fake import FakeTarget
from tests.targets.contract import ENDPOINT, Harness, TargetContract, deployment, endpoint, write_repository


class FakeHarness(Harness):
    def serve_metrics(self, deployment: str) -> None:
        self.target.metric_texts[(ENDPOINT, deployment)] = {
            "instance-1": "# TYPE mlops_request_duration_seconds histogram\n"}

    def failing_request(self, deployment: str = "blue"):
        self.target.fail_health_check(ENDPOINT, deployment)
        return self.request(deployment, 1)

    def probe(self, key: str | None = None) -> str | None:
        """What a caller would get, read from what the fake observes: every deployment with live
        traffic is there and ready, and the key is one of the endpoint's."""
        seen = endpoint(self.target)
        if seen is None:
            return "the endpoint does not exist"
        live = [name for name, percent in seen.traffic.items() if percent]
        if not live:
            return "no deployment receives traffic"
        for name in live:
            state = deployment(self.target, name)
            if state is None or not state.ready_instances:
                return f"deployment {name} is {'missing' if state is None else 'not ready'}"
        if key is not None and key not in self.target.keys(ENDPOINT).values():
            return "HTTP 401"
        return None


@pytest.fixture
def harness(tmp_path):
    write_repository(tmp_path, "{type: local}")
    registry = InMemoryRegistry()
    harness = FakeHarness(tmp_path, FakeTarget("under-test", deploy_seconds=0.05), registry)
    yield harness
    harness.cleanup()
    registry.close()


class TestFakeTarget(TargetContract):
    pass


def test_it_can_be_told_to_fail_a_health_check_and_to_stop(harness):
    target = harness.target
    harness.serve("blue", 1)
    target.fail_health_check(ENDPOINT, "blue", "the model never loads")
    with pytest.raises(HealthCheckFailed, match="the model never loads"):
        target.deploy(harness.request("blue", 2))
    assert "the model never loads" in target.logs(ENDPOINT, "blue")
    target.fail_health_check(ENDPOINT, "blue", None)
    assert target.deploy(harness.request("blue", 2)).model == "iris-classifier:2"
    target.stop(ENDPOINT, "blue")
    assert deployment(target).status == STOPPED and deployment(target).ready_instances == 0
    assert ("deploy", ENDPOINT, "blue", "iris-classifier:2") in target.calls


def test_an_image_building_fake_needs_an_image(harness):
    target = FakeTarget("box", builds_images=True)
    with pytest.raises(TargetError, match="no image"):
        target.deploy(harness.request("blue", 1))
    assert target.observe() == ([], [])
