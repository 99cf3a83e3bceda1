"""One progressive update, carried out on a target: the canary started beside the stable deployment,
the ``Controller`` walked through the weights, then promotion or rollback.

Promotion replaces the stable deployment with the new version (a rolling replacement, while the
canary still serves its weight), routes the endpoint as mlops.yaml says, and removes the canary.
Rollback routes the endpoint as mlops.yaml says (the stable version takes the canary's share back)
and removes the canary, then fails the step with the metric that halted it. Weights go through
``Target.set_traffic``, the same call every traffic step uses, so every target that routes by
weight can roll out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pipeline.apply.journal import Journal
from pipeline.apply.rollout import ABORT, PROMOTE, Clock, Controller, RolloutState, RolloutStore
from pipeline.apply.rollout_meter import TargetMeter
from pipeline.errors import RolloutFailed, RolloutRefused
from pipeline.spec.model import Spec
from pipeline.spec.rollout import DRIFT_METRICS, canary_name
from pipeline.state import RUNNING, ObservedDeployment
from pipeline.targets.base import DeployRequest, Target


def canary_traffic(traffic: dict[str, int], stable: str, canary: str, weight: int) -> dict[str, int]:
    """The endpoint's weights with ``weight`` percent of the stable deployment's share given to the canary
    (at least 1 while the weight is above 0, so a small share still gets traffic)."""
    share = traffic.get(stable, 0)
    given = min(share, max(1, round(share * weight / 100))) if weight else 0
    return {**traffic, stable: share - given, canary: given}


class RolloutRun:
    def __init__(self, request: DeployRequest, target: Target, registry: Any, spec: Spec, journal: Journal,
                 say: Callable[[str], None], clock: Clock):
        self.request, self.target, self.registry, self.spec = request, target, registry, spec
        self.journal, self.say, self.clock = journal, say, clock
        self.endpoint, self.deployment = request.endpoint, request.deployment
        self.rollout = self.deployment.rollout
        self.canary = canary_name(self.deployment.name)
        self.store = RolloutStore.under(spec.state_dir())

    def _identity(self) -> str:
        return f"{self.request.model.digest}|{self.request.image}|{self.request.settings_digest}"

    def _canary(self) -> ObservedDeployment | None:
        _, deployments = self.target.observe()
        return next((d for d in deployments if d.endpoint == self.endpoint.name and d.name == self.canary), None)

    def _state(self, canary: ObservedDeployment | None) -> RolloutState:
        """The saved rollout of this same version, resumed where it was while its canary still runs
        (or it was deciding); else a new one."""
        saved = self.store.load(self.endpoint.name, self.deployment.name)
        deciding = saved is not None and saved.phase in ("promoting", "rolling_back")
        if saved is not None and saved.active and saved.identity == self._identity() and (canary or deciding):
            weights = self.rollout.weights()
            where = {"mirror": "the mirror phase", "paused": "its pause", "promoting": "promotion",
                     "rolling_back": "rollback"}.get(saved.phase) or (
                f"step {saved.step + 1} ({weights[saved.step]}%)" if saved.step < len(weights) else "promotion")
            self.say(f"resuming the rollout of {saved.model} at {where}")
            return saved
        now = self.clock.now()
        return RolloutState(endpoint=self.endpoint.name, deployment=self.deployment.name, canary=self.canary,
                            model=self.request.model.ref, identity=self._identity(),
                            phase="mirror" if self.rollout.mirror_first else "step", started=now, updated=now)

    def _save(self, state: RolloutState) -> None:
        self.store.save(state)
        self.journal.record("rollout", step=f"update:{self.deployment.key}", phase=state.phase,
                            index=state.step, weight=state.weight, failures=state.failures)

    def _route(self, weight: int, mirror: int) -> None:
        traffic = canary_traffic(dict(self.endpoint.traffic), self.deployment.name, self.canary, weight)
        mirrors = {**self.endpoint.mirror_traffic, **({self.canary: mirror} if mirror else {})}
        self.target.set_traffic(self.endpoint.name, traffic, mirrors)

    def _start_canary(self, running: ObservedDeployment | None) -> None:
        """The canary runs this version (started again only when it does not run it, or not ready)."""
        if running is not None and running.model == self.request.model.ref and running.status == RUNNING:
            return
        model = self.request.model
        self.registry.add_usage(f"{self.endpoint.name}/{self.canary} (canary)", model.name, model.version)
        self.target.deploy(replace(self.request, deployment=replace(self.deployment, name=self.canary)))
        self.say(f"canary {self.canary} runs {model.ref}")

    def _refuse_a_rolled_back_version(self) -> None:
        """A version whose rollout failed is not tried again by itself (as Argo Rollouts and Flagger keep a
        failed revision): every later apply would send users to it again. A change of the version, its
        image or its settings is a new rollout; ``mlops rollout retry`` lets the same one try again."""
        saved = self.store.load(self.endpoint.name, self.deployment.name)
        if saved is not None and saved.phase == "rolled_back" and saved.identity == self._identity():
            raise RolloutRefused(
                f"{saved.model} was rolled back from {self.deployment.key} ({saved.reason}); it is not tried "
                f"again by itself: run mlops rollout retry {self.endpoint.name} --deployment "
                f"{self.deployment.name} to try it again, or change the version in mlops.yaml")

    def run(self) -> str:
        self._refuse_a_rolled_back_version()
        self.target.ensure_endpoint(self.endpoint)
        canary = self._canary()
        state = self._state(canary)
        self._save(state)
        if state.phase not in ("promoting", "rolling_back"):
            self._start_canary(canary)
        model = self.spec.models.get(self.request.model.name)
        gates = {g.name for g in self.rollout.analysis.metrics}
        meter = TargetMeter(self.target, self.endpoint.name, self.deployment.name, self.canary,
                            data_dir=self.spec.state_dir() / "data",
                            baseline=self.spec.root / model.baseline if model and model.baseline
                            and "input_drift" in gates else None,
                            drift=bool(gates & set(DRIFT_METRICS)), since=state.started)
        store = self.store

        def command() -> str | None:
            wanted = store.take_command(self.endpoint.name, self.deployment.name)
            if wanted in (PROMOTE, ABORT):
                self.say(f"{wanted} requested by mlops rollout {wanted}")
            return wanted

        decision = Controller(self.rollout, state, meter, route=self._route, save=self._save, command=command,
                              report=lambda _, message: self.say(message), clock=self.clock).run()
        if decision == PROMOTE:
            return self._promote(state)
        self._roll_back(state)
        raise RolloutFailed(f"rollout of {state.model} to {self.deployment.key} rolled back: {state.reason}; "
                            f"all traffic is back on the stable version")

    def _promote(self, state: RolloutState) -> str:
        state.phase = "promoting"
        self._save(state)
        model = self.request.model
        self.registry.add_usage(f"{self.deployment.key} (being deployed)", model.name, model.version)
        self.target.deploy(self.request)  # the stable deployment now runs the new version
        self.target.set_traffic(self.endpoint.name, self.endpoint.traffic, self.endpoint.mirror_traffic)
        self.target.delete(self.endpoint.name, self.canary)
        state.phase, state.weight = "promoted", 100
        state.history.append(f"promoted {state.model}")
        self._save(state)
        self.say(f"promoted {state.model}")
        return f"{state.model} promoted after {len(self.rollout.weights())} step(s)"

    def _roll_back(self, state: RolloutState) -> None:
        state.phase = "rolling_back"
        self._save(state)
        self.target.set_traffic(self.endpoint.name, self.endpoint.traffic, self.endpoint.mirror_traffic)
        self.target.delete(self.endpoint.name, self.canary)
        state.phase, state.weight = "rolled_back", 0
        state.history.append(f"rolled back: {state.reason}")
        self._save(state)
        self.say(f"rolled back: {state.reason}")
