"""Progressive rollouts driven by the running apply: no controller runs beside the services.

The ``Controller`` is the state machine: it sets the canary's weight for a step, lets it bake for
the rollout's ``interval``, asks a ``Meter`` for the canary's and the stable deployment's numbers
over that window, judges them against the gates, and answers "promote" or "rollback". A check
with too few canary requests is no verdict: the window grows until it has them or the step's
``progress_deadline`` passes. Time comes from a ``Clock`` (tests pass a fake one, so the state
machine runs instantly), the operator's ``mlops rollout promote|abort`` arrive as commands.

Every transition is saved in a ``RolloutStore`` (one JSON file per deployment, replaced
atomically) before it takes effect, so an apply killed mid-rollout and run again resumes at the
step it reached: never from 0, never at 100 %.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.faults import crash_point
from pipeline.spec.rollout import Analysis, Rollout, format_duration, format_limit

ACTIVE = ("mirror", "step", "paused", "promoting", "rolling_back")  # a rerun resumes these
PROMOTE, ABORT = "promote", "abort"


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# -- what is measured and how it is judged -------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """One deployment over one window: scoring requests, 5xx answers, 99th percentile (seconds)."""

    requests: int = 0
    errors: int = 0
    p99: float | None = None


@dataclass(frozen=True)
class Measurement:
    canary: Stats
    stable: Stats
    prediction_drift: float | None = None  # PSI of the canary's predictions against the stable ones
    input_drift: float | None = None  # PSI of the canary's inputs against the model's baseline (worst feature)


class Meter(Protocol):
    def mark(self) -> Any:
        """The start of a window (counters as they are now)."""
        ...

    def measure(self, mark: Any) -> Measurement:
        """The canary and the stable deployment from ``mark`` until now."""
        ...


@dataclass(frozen=True)
class Reading:
    name: str
    value: float | None  # None: not measurable yet (no requests, too few rows)
    limit: float
    skipped: str = ""  # why this gate does not apply to this window (it neither passes nor fails it)

    @property
    def passed(self) -> bool | None:
        if self.skipped:
            return True
        return None if self.value is None else self.value <= self.limit

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.name} not judged ({self.skipped})"
        if self.value is None:
            return f"{self.name} n/a (limit {format_limit(self.name, self.limit)})"
        sign = "≤" if self.passed else ">"
        return f"{self.name} {format_limit(self.name, self.value)} {sign} {format_limit(self.name, self.limit)}"


@dataclass(frozen=True)
class Verdict:
    readings: tuple[Reading, ...]
    requests: int
    min_requests: int

    @property
    def failed(self) -> tuple[Reading, ...]:
        return tuple(r for r in self.readings if r.passed is False)

    @property
    def inconclusive(self) -> bool:
        """Too little traffic to judge (failures are judged only on enough requests too)."""
        return self.requests < self.min_requests or (
            not self.failed and any(r.passed is None for r in self.readings))

    @property
    def passed(self) -> bool:
        return not self.inconclusive and not self.failed

    def summary(self) -> str:
        shown = ", ".join(str(r) for r in self.readings) or "no gates"
        return f"{self.requests} canary requests; {shown}"


def evaluate(analysis: Analysis, measured: Measurement, stable_live: bool = True) -> Verdict:
    """Each gate's value for this window. The latency ratio compares the two deployments over the same
    window: it waits for ``min_requests`` on the stable one too, and is not judged while the stable
    one has no live weight (at 100 %)."""
    canary, stable = measured.canary, measured.stable
    enough = stable.requests >= analysis.min_requests and bool(stable.p99)
    values: dict[str, float | None] = {
        "error_rate": canary.errors / canary.requests if canary.requests else None,
        "latency_p99": canary.p99,
        "latency_p99_ratio": canary.p99 / stable.p99 if canary.p99 is not None and enough and stable.p99 else None,
        "prediction_drift": measured.prediction_drift,
        "input_drift": measured.input_drift,
    }
    skipped = {"latency_p99_ratio": "" if stable_live else "the stable version has no live weight"}
    return Verdict(tuple(Reading(g.name, values[g.name], g.max, skipped.get(g.name, "")) for g in analysis.metrics),
                   canary.requests, analysis.min_requests)


# -- the saved state -----------------------------------------------------------------------


@dataclass
class RolloutState:
    endpoint: str
    deployment: str
    canary: str
    model: str  # the version being rolled out ("iris:4")
    identity: str  # model digest, image and settings: a rerun resumes only the same rollout
    # mirror | step | paused | promoting | rolling_back (active) | promoted | rolled_back | abandoned |
    # retry (a rolled-back version an operator let the next apply try again)
    phase: str = "step"
    step: int = 0  # index into the weights
    weight: int = 0  # the canary's live weight now (percent of the deployment's share)
    failures: int = 0
    started: float = 0.0
    updated: float = 0.0
    approved: bool = False  # pause_before_promote: promotion was asked for
    reason: str = ""  # why it paused or rolled back
    last_check: str = ""
    history: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RolloutState:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class RolloutStore:
    """``<state>/rollouts/<endpoint>/<deployment>.json`` (the state) and ``.command`` (an operator's
    promote or abort, consumed by the apply that drives the rollout)."""

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def under(cls, state_dir: Path) -> RolloutStore:
        """The store of a state folder (``.mlops/``): its ``rollouts/``."""
        return cls(state_dir / "rollouts")

    def _path(self, endpoint: str, deployment: str, suffix: str) -> Path:
        return self.folder / endpoint / f"{deployment}{suffix}"

    def load(self, endpoint: str, deployment: str) -> RolloutState | None:
        try:
            return RolloutState.from_json(self._path(endpoint, deployment, ".json").read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            return None  # a torn file cannot come from the atomic writes: treat it as no rollout

    def all(self, endpoint: str) -> list[RolloutState]:
        folder = self.folder / endpoint
        states = [self.load(endpoint, p.stem) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
        return [s for s in states if s is not None]

    def save(self, state: RolloutState) -> None:
        self._write(self._path(state.endpoint, state.deployment, ".json"), state.to_json())
        crash_point("rollout state saved")

    def request(self, endpoint: str, deployment: str, command: str) -> None:
        self._write(self._path(endpoint, deployment, ".command"), command)

    def take_command(self, endpoint: str, deployment: str) -> str | None:
        path = self._path(endpoint, deployment, ".command")
        try:
            command = path.read_text().strip()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return command or None

    @staticmethod
    def _write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        with temp.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)


# -- the state machine ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    kind: str  # "pass" | "fail" | PROMOTE | ABORT
    reason: str = ""


class Controller:
    """Walks one rollout from its saved state to "promote" or "rollback" (the caller acts on it)."""

    def __init__(self, rollout: Rollout, state: RolloutState, meter: Meter, *,
                 route: Callable[[int, int], None], save: Callable[[RolloutState], None],
                 command: Callable[[], str | None], report: Callable[[RolloutState, str], None],
                 clock: Clock | None = None, tick: float = 1.0):
        self.rollout, self.state, self.meter = rollout, state, meter
        self.route, self._save, self.command, self._report = route, save, command, report
        self.clock = clock or SystemClock()
        self.tick = min(tick, rollout.interval / 4)
        self._last_wait_report = 0.0

    def _record(self, message: str) -> None:
        self.state.updated = self.clock.now()
        self.state.history = (self.state.history + [message])[-50:]
        self._save(self.state)
        self._report(self.state, message)

    def run(self) -> str:
        """"promote" or "rollback" (``state.reason`` says why)."""
        weights = self.rollout.weights()
        state = self.state
        if state.phase in ("promoting", "rolling_back"):  # killed while acting on a decision: finish it
            return PROMOTE if state.phase == "promoting" else "rollback"
        if state.phase == "paused":
            return self._hold()
        if state.phase == "mirror":
            self.route(0, 100)
            self._record(f"mirror: every request copied to {state.canary} for "
                         f"{format_duration(self.rollout.mirror_first)}")
            result = self._bake(self.rollout.mirror_first)
            if result.kind != "pass":
                return self._decide(result)
            state.phase, state.step = "step", 0
        while state.step < len(weights):
            weight = weights[state.step]
            if weight == 100 and self.rollout.pause_before_promote and not state.approved:
                return self._pause("waiting for mlops rollout promote before 100%")
            state.weight = weight
            self.route(weight, 0)
            self._record(f"step {state.step + 1}/{len(weights)}: {weight}% to {state.canary}, baking "
                         f"{format_duration(self.rollout.interval)}")
            result = self._bake(self.rollout.interval)
            if result.kind != "pass":
                return self._decide(result)
            state.step += 1
        if self.rollout.pause_before_promote and 100 not in weights and not state.approved:
            return self._pause("waiting for mlops rollout promote")
        return PROMOTE

    def _decide(self, result: _Result) -> str:
        if result.kind == PROMOTE:
            self.state.approved = True
            return PROMOTE
        where = "mirror phase" if self.state.phase == "mirror" else f"{self.state.weight}%"
        if result.kind == ABORT:
            self.state.reason = f"aborted at {where} by mlops rollout abort"
            return "rollback"
        self.state.reason = f"halted at {where}: {result.reason}"
        if self.rollout.on_failure == "pause":
            return self._pause(self.state.reason)
        return "rollback"

    def _pause(self, why: str) -> str:
        self.state.phase, self.state.reason = "paused", why
        self._record(f"paused: {why}")
        return self._hold()

    def _hold(self) -> str:
        """Paused: hold the weight until an operator promotes or aborts (no deadline)."""
        while True:
            command = self.command()
            if command == PROMOTE:
                self.state.approved = True
                return PROMOTE
            if command == ABORT:
                self.state.reason = f"aborted while paused ({self.state.reason})"
                return "rollback"
            self.clock.sleep(self.tick)

    def _bake(self, duration: float) -> _Result:
        """Bake for ``duration``, then check; a failed check bakes again at the same weight."""
        started = check_started = self.clock.now()
        mark = self.meter.mark()
        analysis = self.rollout.analysis
        while True:
            command = self.command()
            if command in (PROMOTE, ABORT):
                return _Result(command)
            remaining = duration - (self.clock.now() - check_started)
            if remaining > 0:
                self.clock.sleep(min(self.tick, remaining))
                continue
            stable_live = self.state.phase == "mirror" or self.state.weight < 100
            verdict = evaluate(analysis, self.meter.measure(mark), stable_live)
            self.state.last_check = verdict.summary()
            if verdict.passed:
                self._record(f"check passed: {verdict.summary()}")
                return _Result("pass")
            if verdict.inconclusive:
                waited = self.clock.now() - started
                if waited >= self.rollout.progress_deadline:
                    return _Result("fail", f"no verdict within progress_deadline "
                                           f"{format_duration(self.rollout.progress_deadline)} ({verdict.summary()}, "
                                           f"at least {analysis.min_requests} needed)")
                if self.clock.now() - self._last_wait_report >= self.rollout.interval:
                    self._last_wait_report = self.clock.now()
                    self._report(self.state, f"inconclusive, waiting for traffic: {verdict.summary()}")
                self.clock.sleep(self.tick)
                continue
            self.state.failures += 1
            failed = ", ".join(str(r) for r in verdict.failed)
            self._record(f"check failed ({self.state.failures}/{analysis.failure_limit}): {failed}")
            if self.state.failures >= analysis.failure_limit:
                return _Result("fail", failed)
            mark, check_started = self.meter.mark(), self.clock.now()
