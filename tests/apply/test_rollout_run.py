"""A rollout carried out on a target (``FakeTarget``, fake clock): what it starts, routes and removes,
and when a rerun resumes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.apply.journal import Journal
from pipeline.apply.rollout import RolloutState, RolloutStore
from pipeline.apply.rollout_run import RolloutRun
from pipeline.errors import RolloutFailed
from pipeline.spec.loader import load
from pipeline.targets.base import DeployRequest, ResolvedModel
from pipeline.targets.fake import FakeTarget

SPEC = """\
version: 1
models:
  scorer: {path: m, flavor: python}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    traffic: {blue: 100}
    deployments:
      blue:
        model: scorer
        rollout:
          steps: [10, 50]
          interval: 1m
          analysis: {min_requests: 10, failure_limit: 1, metrics: [{name: error_rate, max: 1%}]}
"""


class Clock:
    def __init__(self):
        self.time = 0.0

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds


class ServingTarget(FakeTarget):
    """Each read of /metrics finds 100 more requests (``errors`` of them 5xx) on every deployment."""

    def __init__(self, errors: int = 0):
        super().__init__("local")
        self.errors, self.reads = errors, 0

    def metrics(self, endpoint: str, deployment: str) -> dict[str, str]:
        if not any(d.endpoint == endpoint and d.name == deployment for d in self.observe()[1]):
            return {}
        self.reads += 1
        total = 100 * self.reads
        failed = self.errors * self.reads if deployment.endswith("canary") else 0
        return {"one": f'mlops_requests_total{{route="/score",status="200"}} {total - failed}\n'
                       f'mlops_requests_total{{route="/score",status="500"}} {failed}\n'}


class Usage:
    def add_usage(self, *args) -> None:
        pass


@pytest.fixture
def spec(tmp_path: Path):
    (tmp_path / "m").mkdir()
    (tmp_path / "mlops.yaml").write_text(SPEC)
    return load(tmp_path / "mlops.yaml")


def request(spec, version: int) -> DeployRequest:
    endpoint = spec.endpoints["web"]
    return DeployRequest(endpoint=endpoint, deployment=endpoint.deployments["blue"],
                         model=ResolvedModel("scorer", version, f"sha256:{version}", "python", Path("m")))


def rollout(spec, target, version: int = 2, said: list | None = None) -> str:
    said = said if said is not None else []
    return RolloutRun(request(spec, version), target, Usage(), spec, Journal(spec.state_dir() / "journal", "t"),
                      said.append, Clock()).run()


def traffic(target) -> list[dict]:
    return [call[2] for call in target.calls if call[0] == "set_traffic"]


def serving(spec, errors: int = 0) -> ServingTarget:
    target = ServingTarget(errors)
    target.ensure_endpoint(spec.endpoints["web"])
    target.deploy(request(spec, 1))
    target.set_traffic("web", {"blue": 100}, {})
    return target


def test_promotion_replaces_the_stable_version_and_removes_the_canary(spec):
    target = serving(spec)
    assert rollout(spec, target) == "scorer:2 promoted after 2 step(s)"
    assert traffic(target)[1:] == [{"blue": 90, "blue-canary": 10}, {"blue": 50, "blue-canary": 50}, {"blue": 100}]
    deployments = {d.name: d.model for d in target.observe()[1]}
    assert deployments == {"blue": "scorer:2"}


def test_rollback_routes_back_and_says_why(spec):
    target = serving(spec, errors=5)
    with pytest.raises(RolloutFailed, match=r"halted at 10%: error_rate 5% > 1%"):
        rollout(spec, target)
    assert traffic(target)[-1] == {"blue": 100}
    assert {d.name: d.model for d in target.observe()[1]} == {"blue": "scorer:1"}
    assert RolloutStore.under(spec.state_dir()).load("web", "blue").phase == "rolled_back"


def test_a_rerun_resumes_while_the_canary_runs_and_starts_over_without_it(spec):
    target = serving(spec)
    store = RolloutStore.under(spec.state_dir())
    store.save(RolloutState("web", "blue", "blue-canary", "scorer:2", "sha256:2|None|", step=1, weight=50))
    base = request(spec, 2)
    target.deploy(replace(base, deployment=replace(base.deployment, name="blue-canary")))
    said: list[str] = []
    rollout(spec, target, said=said)
    assert "resuming the rollout of scorer:2 at step 2 (50%)" in said
    assert traffic(target)[1] == {"blue": 50, "blue-canary": 50}  # never from 0, never at 100

    store.save(RolloutState("web", "blue", "blue-canary", "scorer:3", "sha256:3|None|", step=1, weight=50))
    said.clear()
    rollout(spec, target, version=3, said=said)  # no canary runs: nothing to resume
    assert not [s for s in said if s.startswith("resuming")]

