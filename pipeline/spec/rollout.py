"""A deployment's progressive rollout (``rollout:``), as Flagger, Argo Rollouts and SageMaker name it.

An update of a deployment that has one runs the new version beside the stable one as a canary,
moves live weight to it step by step, bakes each step for ``interval`` while gates judge the
canary's metrics against limits (and against the stable deployment over the same window), then
promotes it, or sends all traffic back to the stable version. The values here are plain: seconds,
fractions; ``parse_*`` read the text forms the file uses (``5m``, ``300ms``, ``1%``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STRATEGIES = ("all_at_once", "canary", "linear")
ON_FAILURE = ("rollback", "pause")
# metric -> what its limit is: "percent" (a fraction, written 1% or 0.01), "duration" (seconds,
# written 300ms or 0.3s), "number"
METRICS = {"error_rate": "percent", "latency_p99": "duration", "latency_p99_ratio": "number",
           "prediction_drift": "number", "input_drift": "number"}
DRIFT_METRICS = ("prediction_drift", "input_drift")  # read from collected events, not from /metrics
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
PERCENT_PATTERN = r"^[0-9]+(\.[0-9]+)?%$"
_DURATION = re.compile(DURATION_PATTERN)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from ``500ms``, ``30s``, ``5m``, ``1h`` (the schema admits only these forms)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a duration like 30s, 5m or 300ms")
    return float(text[: match.start(2)]) * _SECONDS[match.group(2)]


def parse_limit(metric: str, value: str | float) -> float:
    """A gate's limit in base units: a fraction for percentages, seconds for durations."""
    kind = METRICS[metric]
    if isinstance(value, str):
        if kind == "percent" and re.match(PERCENT_PATTERN, value):
            return float(value[:-1]) / 100
        if kind == "duration":
            return parse_duration(value)
        raise ValueError(f"'{value}' is not a {'percentage like 1%' if kind == 'percent' else 'number'}")
    if kind == "duration":
        raise ValueError(f"{value} has no unit; write a duration like 300ms or 0.3s")
    return float(value)


def format_duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:.4g}ms" if seconds < 1 else f"{seconds:.4g}s"


def format_limit(metric: str, value: float) -> str:
    kind = METRICS[metric]
    if kind == "percent":
        return f"{value * 100:.3g}%"
    if kind == "duration":
        return format_duration(value)
    return f"{value:.4g}"


@dataclass(frozen=True)
class Gate:
    """One metric of the canary and the most it may reach (base units, see ``parse_limit``)."""

    name: str
    max: float

    def __str__(self) -> str:
        return f"{self.name} ≤ {format_limit(self.name, self.max)}"


@dataclass(frozen=True)
class Analysis:
    min_requests: int = 100  # fewer canary requests in a window: no verdict yet (wait, up to the deadline)
    failure_limit: int = 2  # failed checks that fail the rollout (a failed check keeps the weight)
    metrics: tuple[Gate, ...] = ()


@dataclass(frozen=True)
class Rollout:
    strategy: str = "all_at_once"
    steps: tuple[int, ...] = ()  # canary: the weights given
    step_weight: int | None = None  # linear: the weight added per step
    max_weight: int = 100  # linear: the last weight before promotion
    interval: float = 60.0  # seconds each step bakes
    mirror_first: float = 0.0  # seconds of shadow traffic (no live weight) before the first step
    analysis: Analysis = Analysis()
    pause_before_promote: bool = False
    progress_deadline: float = 600.0  # seconds a step may go without a verdict
    on_failure: str = "rollback"

    @property
    def progressive(self) -> bool:
        return self.strategy != "all_at_once"

    def weights(self) -> tuple[int, ...]:
        """The canary's live weight at each step (percent of the stable deployment's share)."""
        if self.strategy == "canary":
            return self.steps
        if self.strategy == "linear" and self.step_weight:
            return tuple(range(self.step_weight, self.max_weight, self.step_weight)) + (self.max_weight,)
        return ()

    def schedule(self) -> str:
        """``5% →(5m) 25% →(5m) 100% →(5m) promote; gates: error_rate ≤ 1%, …``: each arrow says how
        long the stop before it bakes."""
        stops: list[tuple[str, float | None]] = [("mirror", self.mirror_first)] if self.mirror_first else []
        pause = ("pause until mlops rollout promote", None)
        for weight in self.weights():
            if self.pause_before_promote and weight == 100:
                stops.append(pause)
            stops.append((f"{weight}%", self.interval))
        if self.pause_before_promote and 100 not in self.weights():
            stops.append(pause)
        text = "".join(f"{label} →({format_duration(bake)}) " if bake else f"{label} → " for label, bake in stops)
        gates = ", ".join(str(g) for g in self.analysis.metrics) or "none (time only)"
        return (f"{text}promote; gates: {gates}; at least {self.analysis.min_requests} canary requests per "
                f"check, {self.analysis.failure_limit} failed check(s) → {self.on_failure}, "
                f"deadline {format_duration(self.progress_deadline)} per step")

    def describe(self) -> dict:
        """What a plan shows and saves (JSON-ready)."""
        return {"strategy": self.strategy, "weights": list(self.weights()), "interval": self.interval,
                "mirror_first": self.mirror_first, "gates": [str(g) for g in self.analysis.metrics],
                "min_requests": self.analysis.min_requests, "failure_limit": self.analysis.failure_limit,
                "pause_before_promote": self.pause_before_promote,
                "progress_deadline": self.progress_deadline, "on_failure": self.on_failure,
                "schedule": self.schedule()}


def canary_name(deployment: str) -> str:
    """The name the canary of a deployment runs under on its target, beside the stable one."""
    return f"{deployment}-canary"


def build(raw: dict | None) -> Rollout:
    """A ``Rollout`` from the ``rollout:`` mapping the schema and the checks accepted."""
    if not raw:
        return Rollout()
    analysis = raw.get("analysis") or {}
    gates = tuple(Gate(m["name"], parse_limit(m["name"], m["max"])) for m in analysis.get("metrics") or ())
    return Rollout(
        strategy=raw.get("strategy", "canary"),
        steps=tuple(raw.get("steps") or ()),
        step_weight=raw.get("step_weight"),
        max_weight=raw.get("max_weight", 100),
        interval=parse_duration(raw.get("interval", "1m")),
        mirror_first=parse_duration(raw["mirror_first"]) if raw.get("mirror_first") else 0.0,
        analysis=Analysis(min_requests=analysis.get("min_requests", 100),
                          failure_limit=analysis.get("failure_limit", 2), metrics=gates),
        pause_before_promote=bool(raw.get("pause_before_promote", False)),
        progress_deadline=parse_duration(raw.get("progress_deadline", "10m")),
        on_failure=raw.get("on_failure", "rollback"))
