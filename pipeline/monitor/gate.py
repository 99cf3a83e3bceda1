"""``--fail-on drift>0.2,error_rate>1%``: thresholds a report must stay within, for CI gating.

Each condition is ``METRIC>VALUE`` (or ``>=``); a value may end in ``%`` (a share) or ``ms``. The
metrics are read per deployment, so a message names the deployment that crossed::

    drift               the largest PSI of a judged feature (none when drift was not judged)
    drifted_features    how many features were judged drifted
    error_rate          (4xx + 5xx) / requests;  client_error_rate: 4xx;  model_error_rate: 5xx
    p50, p95, p99       latency percentiles in ms
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import MlopsError
from pipeline.monitor.report import DeploymentReport

METRICS: dict[str, Callable[[DeploymentReport], float | None]] = {
    "drift": lambda r: r.max_psi,
    "drifted_features": lambda r: float(r.drifted_features),
    "error_rate": lambda r: r.error_rate,
    "client_error_rate": lambda r: r.rate(r.client_errors),
    "model_error_rate": lambda r: r.rate(r.model_errors),
    "p50": lambda r: r.latency_ms.get("p50"),
    "p95": lambda r: r.latency_ms.get("p95"),
    "p99": lambda r: r.latency_ms.get("p99"),
}
_CONDITION = re.compile(r"^\s*([a-z0-9_]+)\s*(>=|>)\s*([0-9]*\.?[0-9]+)\s*(%|ms)?\s*$")


@dataclass(frozen=True)
class Threshold:
    metric: str
    comparison: str  # ">" or ">="
    value: float
    text: str  # as the user wrote it

    def crossed_by(self, report: DeploymentReport) -> str | None:
        """A message naming what crossed, or None."""
        measured = METRICS[self.metric](report)
        compare = operator.gt if self.comparison == ">" else operator.ge
        if measured is None or not compare(measured, self.value):
            return None
        shown = f"{measured:.2%}" if self.metric.endswith("rate") else f"{measured:g}"
        return f"{report.deployment}: {self.metric} {shown} crossed --fail-on {self.text}"


def parse_fail_on(text: str) -> list[Threshold]:
    """``drift>0.2,error_rate>1%`` → thresholds; a ``MlopsError`` naming the option for anything else."""
    thresholds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _CONDITION.match(part)
        if match is None or match.group(1) not in METRICS:
            raise MlopsError(f"--fail-on '{part}': expected METRIC>VALUE with METRIC one of "
                             f"{', '.join(METRICS)} (e.g. drift>0.2,error_rate>1%,p99>250ms)")
        metric, comparison, number, unit = match.groups()
        value = float(number) / 100 if unit == "%" else float(number)
        if unit == "%" and not metric.endswith("rate"):
            raise MlopsError(f"--fail-on '{part}': only the *_rate metrics take a percentage")
        thresholds.append(Threshold(metric, comparison, value, part))
    if not thresholds:
        raise MlopsError("--fail-on is empty: give METRIC>VALUE, e.g. drift>0.2,error_rate>1%")
    return thresholds


def crossed(reports: list[DeploymentReport], thresholds: list[Threshold]) -> list[str]:
    """Every (deployment, threshold) crossed, as messages."""
    return [message for report in reports for threshold in thresholds
            if (message := threshold.crossed_by(report)) is not None]


def unmeasured(reports: list[DeploymentReport], thresholds: list[Threshold]) -> list[str]:
    """The thresholds a deployment could not be checked against (drift not judged, no latency), as
    warnings: a gate that silently passes on missing numbers would pass anything."""
    return [f"{report.deployment}: no {threshold.metric} to check --fail-on {threshold.text} against"
            + (f" ({_why_no_drift(report)})" if threshold.metric == "drift" else "")
            for report in reports for threshold in thresholds if METRICS[threshold.metric](report) is None]


def _why_no_drift(report: DeploymentReport) -> str:
    reasons = {v.drift.reason for v in report.versions if v.drift is not None}
    return "; ".join(sorted(reasons)) or "the model has no baseline"
