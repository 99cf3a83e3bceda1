"""Monitoring: traffic, errors, latency and data drift, computed from collected events.

Drift is the Population Stability Index (PSI) of each input feature: the collected values are
binned by the baseline's deciles and compared with the baseline's shares. The usual reading:
below 0.1 stable, 0.1–0.2 moderate shift, above 0.2 significant drift.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import MlopsError
from pipeline.server.events import Event

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.2
_EPSILON = 1e-4  # keeps empty bins from making the PSI infinite
MIN_ROWS_FOR_DRIFT = 30  # fewer rows say nothing about a distribution


@dataclass
class FeatureDrift:
    feature: str
    psi: float
    baseline_mean: float
    current_mean: float

    @property
    def level(self) -> str:
        if self.psi >= PSI_SIGNIFICANT:
            return "drift"
        return "moderate" if self.psi >= PSI_MODERATE else "stable"


@dataclass
class DeploymentReport:
    deployment: str
    requests: int = 0
    errors: int = 0
    rows: int = 0
    first: str | None = None
    last: str | None = None
    models: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    drift: list[FeatureDrift] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_rate"] = round(self.error_rate, 4)
        data["drift"] = [{**asdict(d), "level": d.level} for d in self.drift]
        return data


def load_baseline(path: Path) -> tuple[list[str], np.ndarray]:
    """A CSV with a header row (or JSON lines of objects) → (column names, rows × features)."""
    try:
        if path.suffix in (".jsonl", ".json"):
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            columns = list(records[0])
            return columns, np.array([[float(r[c]) for c in columns] for r in records])
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            columns = next(reader)
            return columns, np.array([[float(v) for v in row] for row in reader if row])
    except (OSError, ValueError, StopIteration, KeyError, IndexError) as error:
        raise MlopsError(f"cannot read baseline data {path}: {error}") from None


def feature_rows(inputs: Any) -> list[list[float]]:
    """The feature rows of one collected request, whichever protocol it used."""
    if isinstance(inputs, Mapping):
        if "input_data" in inputs:
            return feature_rows(inputs["input_data"])
        if "data" in inputs:
            return feature_rows(inputs["data"])
        if "inputs" in inputs and inputs["inputs"]:  # Open Inference Protocol: the first tensor
            tensor = inputs["inputs"][0]
            values = np.asarray(tensor.get("data", []), dtype=float)
            shape = tensor.get("shape") or [len(values)]
            columns = shape[-1] if len(shape) > 1 else 1
            return values.reshape(-1, columns).tolist()
        if len(inputs) == 1:  # as the collector stores a tensor: {"input-0": [[...], ...]}
            return feature_rows(next(iter(inputs.values())))
        return []
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], list):
        return [row for row in inputs if all(isinstance(v, int | float) for v in row)]
    if isinstance(inputs, list) and inputs and all(isinstance(v, int | float) for v in inputs):
        return [inputs]
    return []


def psi(baseline: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(baseline, edges)[0] / len(baseline) + _EPSILON
    actual = np.histogram(current, edges)[0] / max(len(current), 1) + _EPSILON
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p95": round(float(np.percentile(array, 95)), 3),
            "p99": round(float(np.percentile(array, 99)), 3), "max": round(float(array.max()), 3)}


def summarize(events: Iterable[Event], baseline: tuple[list[str], np.ndarray] | None = None
              ) -> list[DeploymentReport]:
    """One report per deployment: traffic, errors, latency percentiles and drift per feature."""
    reports: dict[str, DeploymentReport] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    rows: dict[str, list[list[float]]] = defaultdict(list)
    for event in events:
        name = event.deployment or "?"
        report = reports.setdefault(name, DeploymentReport(deployment=name))
        report.requests += 1
        report.errors += int(event.failed)
        report.first = report.first or event.time
        report.last = event.time or report.last
        model = f"{event.model}:{event.model_version}"
        if model not in report.models:
            report.models.append(model)
        if event.latency_ms is not None:
            latencies[name].append(float(event.latency_ms))
        if not event.failed:
            rows[name].extend(feature_rows(event.inputs))
    for name, report in reports.items():
        report.latency_ms = _percentiles(latencies[name])
        report.rows = len(rows[name])
        if baseline is not None and len(rows[name]) >= MIN_ROWS_FOR_DRIFT:
            columns, reference = baseline
            current = np.asarray([r for r in rows[name] if len(r) == len(columns)], dtype=float)
            if len(current):
                report.drift = [FeatureDrift(column, round(psi(reference[:, i], current[:, i]), 4),
                                             round(float(reference[:, i].mean()), 4),
                                             round(float(current[:, i].mean()), 4))
                                for i, column in enumerate(columns)]
    return sorted(reports.values(), key=lambda r: r.deployment)


def _moment(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_text(endpoint: str, reports: list[DeploymentReport], since: datetime, until: datetime,
                files_read: int) -> str:
    if not reports:
        return f"no requests between {_moment(since)} and {_moment(until)} ({files_read} files read)"
    lines = [f"Endpoint {endpoint}"]
    for r in reports:
        latency = ", ".join(f"{k} {v:g} ms" for k, v in r.latency_ms.items())
        lines.append(f"  {r.deployment}: {r.requests} requests ({r.rows} rows), {r.errors} errors "
                     f"({r.error_rate:.1%}), models {', '.join(r.models)}")
        lines.append(f"    latency: {latency or 'n/a'}   from {r.first} to {r.last}")
        if not r.drift and r.rows < MIN_ROWS_FOR_DRIFT:
            lines.append(f"    drift: needs at least {MIN_ROWS_FOR_DRIFT} collected rows (have {r.rows})")
        for d in r.drift:
            lines.append(f"    drift {d.feature:<20} PSI {d.psi:>7.4f}  {d.level:<8} "
                         f"mean {d.baseline_mean:g} → {d.current_mean:g}")
    return "\n".join(lines)
