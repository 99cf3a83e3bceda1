"""Monitoring numbers from collected events: traffic, errors by status class, latency percentiles,
prediction distributions and input drift, per deployment and per model version it served.

``summarize`` streams the events once. What it keeps per (deployment, model, version) is bounded
except for three flat numeric arrays (time, status, latency: 18 bytes per event, for exact
percentiles and the time series): feature rows are folded into exact PSI bin counts and a
``drift.Reservoir`` sample, predictions into label counts (or a reservoir when they are numbers).
Each version is compared with the baseline of the model it serves. The statistics themselves live
in ``pipeline.monitor.drift`` (pure functions).

Errors are split by status class: 4xx are the caller's (401 without a valid key and 404 for an
unknown route are refused before scoring, and counted as such), 5xx the model's or the server's.
"""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import MlopsError
from pipeline.monitor import drift
from pipeline.monitor.drift import DriftPolicy
from pipeline.server.eventfiles import ROUTER_FOLDER
from pipeline.server.events import Event

SAMPLE_ROWS = 10_000  # the reservoir the KS test and the HTML overlays use, per version
MAX_LABELS = 50  # distinct prediction labels kept per version; the rest are counted as "(other)"
_FLUSH_ROWS = 4096
NO_MODEL = "(none)"  # the router's own answers name no model


@dataclass
class Baseline:
    """A model's reference data, with its PSI bins computed once."""

    path: str
    columns: list[str]
    data: np.ndarray  # rows × features
    policy: DriftPolicy = field(default_factory=DriftPolicy)

    def __post_init__(self) -> None:
        self.edges = [drift.quantile_edges(self.data[:, i], self.policy.bins) for i in range(len(self.columns))]
        self.counts = [drift.bin_counts(self.data[:, i], e) for i, e in enumerate(self.edges)]


def load_baseline(path: Path, policy: DriftPolicy | None = None, name: str | None = None) -> Baseline:
    """A CSV with a header row (or JSON lines of objects) → ``Baseline`` (``name``: as reports show it)."""
    try:
        if path.suffix in (".jsonl", ".json"):
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            columns = list(records[0])
            data = np.array([[float(r[c]) for c in columns] for r in records])
        else:
            with path.open(newline="") as handle:
                reader = csv.reader(handle)
                columns = next(reader)
                data = np.array([[float(v) for v in row] for row in reader if row])
        if data.ndim != 2 or data.shape[1] != len(columns):
            raise ValueError("no rows, or rows of another width than the header")
    except (OSError, ValueError, StopIteration, KeyError, IndexError) as error:
        raise MlopsError(f"cannot read baseline data {path}: {error}") from None
    return Baseline(name or str(path), columns, data, policy or DriftPolicy())


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


def predictions(outputs: Any) -> list[Any]:
    """The predicted values of one response (one per row): labels or numbers; [] when there are none."""
    if isinstance(outputs, Mapping):
        for key in ("predictions", "outputs"):
            if key in outputs:
                return predictions(outputs[key])
        return predictions(next(iter(outputs.values()))) if len(outputs) == 1 else []
    if isinstance(outputs, list):
        if outputs and isinstance(outputs[0], Mapping) and "data" in outputs[0]:  # OIP output tensors
            return predictions(outputs[0]["data"])
        return [v[0] if isinstance(v, list) and len(v) == 1 else v for v in outputs
                if isinstance(v, str | int | float | bool) or (isinstance(v, list) and len(v) == 1)]
    if isinstance(outputs, str | int | float | bool):
        return [outputs]
    return []


def _epoch(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return math.nan
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _iso(epoch: float | None) -> str | None:
    if epoch is None or math.isnan(epoch):
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def percentiles(latencies: np.ndarray) -> dict[str, float]:
    """p50, p95, p99 and max of latencies in ms (NaN, an event without a latency, left out)."""
    values = latencies[~np.isnan(latencies)]
    if not len(values):
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3)}


@dataclass
class FeatureDrift:
    feature: str
    psi: float
    level: str  # the PSI's reading: stable | moderate | significant
    ks_statistic: float
    p_value: float
    drifted: bool | None  # None: not judged (too few rows, or too small a baseline)
    baseline_mean: float
    current_mean: float


@dataclass
class DriftReport:
    baseline: str
    baseline_rows: int
    rows: int  # collected rows of the baseline's width
    judged: bool
    reason: str  # why not judged, or a summary
    features: list[FeatureDrift]
    policy: DriftPolicy
    # feature -> (bin edges, baseline density, collected density) over shared bins, for the plots
    histograms: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)


class _Series:
    """What one (deployment, model, version) accumulates while the events stream by."""

    def __init__(self, baseline: Baseline | None):
        self.baseline = baseline
        self.times = array("d")
        self.statuses = array("H")
        self.latencies = array("d")
        self.rows = 0
        self.other_width_rows = 0
        self._buffer: list[list[float]] = []
        self.labels: Counter[str] = Counter()
        self.numbers: drift.Reservoir | None = None
        self.number_count = 0
        if baseline is not None:
            self.counts = [np.zeros(len(e) + 1, dtype=np.int64) for e in baseline.edges]
            self.sample = drift.Reservoir(SAMPLE_ROWS, len(baseline.columns))
            self.sums = np.zeros(len(baseline.columns))

    def add(self, event: Event) -> None:
        status, latency = event.status, event.latency_ms
        self.times.append(_epoch(event.time))
        self.statuses.append(status if 0 <= status <= 65535 else 0)
        self.latencies.append(math.nan if latency is None else latency)
        if status >= 400:
            return
        if self.baseline is not None:
            inputs = event.inputs
            rows = inputs.get("data") if type(inputs) is dict and len(inputs) == 1 else None
            if type(rows) is list and rows and type(rows[0]) is list:  # the common {"data": rows}: numpy checks
                self._buffer.extend(rows)                                # them a block at a time, in flush
            else:
                valid = feature_rows(inputs)
                self._buffer.extend(valid)
            if len(self._buffer) >= _FLUSH_ROWS:
                self.flush()
        else:
            self.rows += len(feature_rows(event.inputs))
        outputs = event.outputs
        values = outputs if type(outputs) is list and outputs and type(outputs[0]) in (int, str) else \
            predictions(outputs)
        for value in values:
            if type(value) is list:  # a row of several outputs in a list of labels: not a label
                continue
            if isinstance(value, float) and not value.is_integer():
                if self.numbers is None:
                    self.numbers = drift.Reservoir(SAMPLE_ROWS, 1, seed=1)
                self.numbers.add(np.array([[value]]))
                self.number_count += 1
            else:
                label = str(value)
                if label in self.labels or len(self.labels) < MAX_LABELS:
                    self.labels[label] += 1
                else:
                    self.labels["(other)"] += 1

    def flush(self) -> None:
        if self.baseline is None or not self._buffer:
            return
        width, buffer = len(self.baseline.columns), self._buffer
        self._buffer = []
        try:  # one C call for the whole block when it is rows of numbers of one width (the usual case)
            block = np.asarray(buffer)
        except ValueError:  # rows of different lengths
            block = np.empty(0)
        if block.ndim != 2 or block.dtype.kind not in "fiu":
            buffer = feature_rows(buffer)  # row by row: the rows of numbers, whatever their width
            block = np.empty((0, 0))
        self.rows += len(buffer)
        if block.shape[1:] != (width,):
            matching = [row for row in buffer if len(row) == width]
            self.other_width_rows += len(buffer) - len(matching)
            if not matching:
                return
            block = np.asarray(matching, dtype=float)
        block = block.astype(float, copy=False)
        for i, edges in enumerate(self.baseline.edges):
            self.counts[i] += drift.bin_counts(block[:, i], edges)
        self.sums += block.sum(axis=0)
        self.sample.add(block)

    def drift_report(self) -> DriftReport | None:
        baseline = self.baseline
        if baseline is None:
            return None
        self.flush()
        policy = baseline.policy
        rows = self.rows - self.other_width_rows
        features, judged_any, reason = [], False, ""
        for i, column in enumerate(baseline.columns):
            value = round(drift.psi(baseline.counts[i], self.counts[i]), 4) if rows else 0.0
            statistic, p_value = drift.ks_test(baseline.data[:, i], self.sample.rows[:, i]) if rows else (0.0, 1.0)
            drifted, reason = drift.judge(value, p_value, rows, len(baseline.data), policy)
            judged_any = judged_any or drifted is not None
            features.append(FeatureDrift(column, value, drift.psi_level(value, policy), round(statistic, 4),
                                         float(f"{p_value:.4g}"), drifted,
                                         round(float(baseline.data[:, i].mean()), 4),
                                         round(float(self.sums[i] / rows), 4) if rows else math.nan))
        if judged_any:
            drifted_names = [f.feature for f in features if f.drifted]
            reason = f"drifted: {', '.join(drifted_names)}" if drifted_names else "no feature drifted"
        histograms = {}
        for i, column in enumerate(baseline.columns):
            if not len(self.sample.rows):
                break
            both = np.concatenate([baseline.data[:, i], self.sample.rows[:, i]])
            low, high = np.percentile(both, [0.5, 99.5])
            edges = np.histogram_bin_edges(both, bins=30, range=(low, high) if high > low else None)
            histograms[column] = (edges, np.histogram(baseline.data[:, i], edges, density=True)[0],
                                  np.histogram(self.sample.rows[:, i], edges, density=True)[0])
        return DriftReport(baseline.path, len(baseline.data), rows, judged_any, reason, features, policy, histograms)


@dataclass
class VersionReport:
    model: str
    version: int | None
    requests: int
    ok: int
    client_errors: int  # 4xx
    model_errors: int  # 5xx
    unauthorized: int  # 401: refused before scoring
    not_found: int  # 404: an unknown route or model
    rows: int
    first: str | None
    last: str | None
    latency_ms: dict[str, float]
    predictions: dict[str, Any]  # {"labels": {label: count}} or {"count", "quantiles"}
    drift: DriftReport | None

    @property
    def name(self) -> str:
        return self.model if self.version is None else f"{self.model}:{self.version}"


@dataclass
class DeploymentReport:
    deployment: str
    versions: list[VersionReport]
    latency_ms: dict[str, float]
    series: dict[str, Any] = field(repr=False)  # time series for plots: see ``_time_series``

    @property
    def title(self) -> str:
        """The deployment's name, or what the router's own row stands for."""
        return "router (refused before reaching a deployment)" if self.deployment == ROUTER_FOLDER else self.deployment

    def _sum(self, name: str) -> int:
        return sum(getattr(v, name) for v in self.versions)

    requests = property(lambda self: self._sum("requests"))
    client_errors = property(lambda self: self._sum("client_errors"))
    model_errors = property(lambda self: self._sum("model_errors"))
    unauthorized = property(lambda self: self._sum("unauthorized"))
    not_found = property(lambda self: self._sum("not_found"))
    rows = property(lambda self: self._sum("rows"))

    @property
    def errors(self) -> int:
        return self.client_errors + self.model_errors

    @property
    def first(self) -> str | None:
        return min((v.first for v in self.versions if v.first), default=None)

    @property
    def last(self) -> str | None:
        return max((v.last for v in self.versions if v.last), default=None)

    def rate(self, count: int) -> float:
        return count / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        return self.rate(self.errors)

    @property
    def max_psi(self) -> float | None:
        values = [f.psi for v in self.versions if v.drift and v.drift.judged for f in v.drift.features]
        return max(values, default=None)

    @property
    def drifted_features(self) -> int:
        return sum(bool(f.drifted) for v in self.versions if v.drift for f in v.drift.features)

    def to_dict(self) -> dict[str, Any]:
        def version(v: VersionReport) -> dict[str, Any]:
            data = {k: getattr(v, k) for k in ("model", "version", "requests", "ok", "client_errors",
                                               "model_errors", "unauthorized", "not_found", "rows", "first",
                                               "last", "latency_ms", "predictions")}
            data["drift"] = None if v.drift is None else {
                **{k: getattr(v.drift, k) for k in ("baseline", "baseline_rows", "rows", "judged", "reason")},
                "features": [vars(f) for f in v.drift.features]}
            return data

        return {"deployment": self.deployment, "requests": self.requests, "errors": self.errors,
                "client_errors": self.client_errors, "model_errors": self.model_errors,
                "unauthorized": self.unauthorized, "not_found": self.not_found,
                "error_rate": round(self.error_rate, 6), "client_error_rate": round(self.rate(self.client_errors), 6),
                "model_error_rate": round(self.rate(self.model_errors), 6), "rows": self.rows,
                "first": self.first, "last": self.last, "latency_ms": self.latency_ms,
                "max_psi": self.max_psi, "drifted_features": self.drifted_features,
                "models": [v.name for v in self.versions], "versions": [version(v) for v in self.versions]}


_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def _time_series(series: Mapping[str, _Series]) -> dict[str, Any]:
    """Per time bucket (a width from 1 minute to 1 week, ≤ 120 buckets): requests and errors per version,
    latency percentiles of the deployment."""
    times = np.concatenate([np.frombuffer(s.times, dtype=float) for s in series.values()])
    times = times[~np.isnan(times)]
    if not len(times):
        return {"bucket_seconds": 0, "starts": [], "versions": {}, "latency": {}}
    first, last = times.min(), times.max()
    width = next((w for w in _BUCKETS if (last - first) / w <= 120), _BUCKETS[-1])
    origin = first // width * width
    count = int((last - origin) // width) + 1
    versions = {}
    indexes, latencies = [], []
    for name, s in series.items():
        stamps = np.frombuffer(s.times, dtype=float)
        statuses = np.frombuffer(s.statuses, dtype=np.uint16)
        valid = ~np.isnan(stamps)
        index = ((stamps[valid] - origin) // width).astype(int)
        versions[name] = {
            "requests": np.bincount(index, minlength=count).tolist(),
            "client_errors": np.bincount(index, statuses[valid] // 100 == 4, count).astype(int).tolist(),
            "model_errors": np.bincount(index, statuses[valid] >= 500, count).astype(int).tolist()}
        indexes.append(index)
        latencies.append(np.frombuffer(s.latencies, dtype=float)[valid])
    index, values = np.concatenate(indexes), np.concatenate(latencies)
    order = np.argsort(index, kind="stable")
    per_bucket = np.split(values[order], np.searchsorted(index[order], np.arange(1, count)))
    latency: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
    for bucket in per_bucket:
        found = percentiles(bucket)
        for key in latency:
            latency[key].append(found.get(key))
    return {"bucket_seconds": width, "starts": [_iso(origin + i * width) for i in range(count)],
            "versions": versions, "latency": latency}


def summarize(events: Iterable[Event], baselines: Mapping[str, Baseline] | None = None
              ) -> list[DeploymentReport]:
    """One report per deployment, with one per model version it served; each version's inputs are
    compared with ``baselines[model]`` (the baseline of the model it serves) when there is one."""
    baselines = baselines or {}
    by_deployment: dict[str, dict[tuple[str, int | None], _Series]] = {}
    for event in events:
        versions = by_deployment.setdefault(event.deployment or "?", {})
        key = (event.model or NO_MODEL, event.model_version)
        series = versions.get(key)
        if series is None:
            series = versions[key] = _Series(baselines.get(event.model or ""))
        series.add(event)
    reports = []
    for deployment, versions in sorted(by_deployment.items()):
        version_reports = []
        for (model, number), s in sorted(versions.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
            s.flush()  # the last rows into the counts (and ``rows``)
            statuses = np.frombuffer(s.statuses, dtype=np.uint16)
            stamps = np.frombuffer(s.times, dtype=float)
            known = stamps[~np.isnan(stamps)]
            version_reports.append(VersionReport(
                model, number, len(statuses), int((statuses < 400).sum()),
                int(((statuses >= 400) & (statuses < 500)).sum()), int((statuses >= 500).sum()),
                int((statuses == 401).sum()), int((statuses == 404).sum()), s.rows,
                _iso(known.min()) if len(known) else None, _iso(known.max()) if len(known) else None,
                percentiles(np.frombuffer(s.latencies, dtype=float)), _prediction_summary(s), s.drift_report()))
        all_latencies = np.concatenate([np.frombuffer(s.latencies, dtype=float) for s in versions.values()])
        named = {f"{model}:{number}": s for (model, number), s in versions.items()}
        reports.append(DeploymentReport(deployment, version_reports, percentiles(all_latencies),
                                        _time_series(named)))
    return reports


def _prediction_summary(series: _Series) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if series.labels:
        summary["labels"] = dict(series.labels.most_common())
    if series.numbers is not None:
        values = series.numbers.rows[:, 0]
        quantiles = np.percentile(values, [5, 25, 50, 75, 95])
        summary["numbers"] = {"count": series.number_count, "mean": round(float(values.mean()), 6),
                              "quantiles": dict(zip(("p5", "p25", "p50", "p75", "p95"),
                                                    (round(float(q), 6) for q in quantiles), strict=True)),
                              "sample": values.round(6).tolist()}
    return summary


def _moment(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_text(endpoint: str, reports: list[DeploymentReport], since: datetime, until: datetime,
                files_read: int, skipped: int = 0) -> str:
    skipped_note = f", {skipped} corrupt lines skipped" if skipped else ""
    if not reports:
        return f"no requests between {_moment(since)} and {_moment(until)} ({files_read} files read{skipped_note})"
    lines = [f"Endpoint {endpoint}: {_moment(since)} to {_moment(until)} ({files_read} files read{skipped_note})"]
    for r in reports:
        latency = ", ".join(f"{k} {v:g} ms" for k, v in r.latency_ms.items())
        lines.append(f"  {r.title}: {r.requests} requests ({r.rows} rows), errors {r.errors} "
                     f"({r.error_rate:.2%}): 4xx {r.client_errors} (401 {r.unauthorized}, 404 {r.not_found}), "
                     f"5xx {r.model_errors}")
        lines.append(f"    latency: {latency or 'n/a'}   first {r.first}, last {r.last}")
        for v in r.versions:
            lines.append(f"    {v.name}: {v.requests} requests, 4xx {v.client_errors}, 5xx {v.model_errors}, "
                         f"{v.rows} rows")
            if v.predictions.get("labels"):
                total = sum(v.predictions["labels"].values())
                shares = ", ".join(f"{label} {count / total:.1%}" for label, count in v.predictions["labels"].items())
                lines.append(f"      predictions: {shares}")
            if v.predictions.get("numbers"):
                numbers = v.predictions["numbers"]
                quantiles = ", ".join(f"{k} {q:g}" for k, q in numbers["quantiles"].items())
                lines.append(f"      predictions: {numbers['count']} numbers, mean {numbers['mean']:g}, {quantiles}")
            if v.drift is None:
                if v.model != NO_MODEL:
                    lines.append("      drift: the model has no baseline in mlops.yaml")
                continue
            lines.append(f"      drift against {v.drift.baseline} ({v.drift.baseline_rows} rows): {v.drift.reason}")
            lines.append(f"        ({v.drift.policy.describe()})")
            for d in v.drift.features:
                verdict = {True: "DRIFTED", False: "ok", None: "not judged"}[d.drifted]
                lines.append(f"        {d.feature:<20} PSI {d.psi:>7.4f} {d.level:<11} KS p {d.p_value:<9.3g} "
                             f"{verdict:<10} mean {d.baseline_mean:g} → {d.current_mean:g}")
    return "\n".join(lines)
