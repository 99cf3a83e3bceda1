"""What a rollout's gates read: each deployment's Prometheus ``/metrics`` (``Target.metrics``) and its
collected events.

Counters and histograms are scraped from every instance of the canary and of the stable deployment
at the start and at the end of a window; the window's numbers are their differences (an instance
that restarted in between counts from zero). The 99th percentile is interpolated within the
histogram's buckets, as Prometheus' ``histogram_quantile`` does. Drift is read from the events the
scoring services collected in the window, through ``prediction_psi`` and ``input_psi``: the one
place that says how drift is computed: ``monitor.drift``'s PSI over the stable predictions' (or the
baseline's) quantile bins, from ``DriftPolicy().min_rows`` rows on, as ``mlops monitor`` judges it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families  # the format's own parser

from pipeline.apply.rollout import Measurement, Stats
from pipeline.errors import TargetError
from pipeline.monitor import drift
from pipeline.monitor.collected import read_events
from pipeline.monitor.report import Baseline, feature_rows, load_baseline
from pipeline.monitor.report import predictions as answered
from pipeline.server.events import Event
from pipeline.targets.base import Target

MIN_ROWS_FOR_DRIFT = drift.DriftPolicy().min_rows  # fewer rows: the PSI is mostly noise (monitor.drift)
SCORING_ROUTES = ("/score", "/invocations", "/v2/models/{name}/infer")


@dataclass
class Scrape:
    """One instance's counters: scoring requests, 5xx, and the latency histogram's cumulative buckets."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] | None = None


def parse_metrics(text: str) -> Scrape:
    scrape = Scrape(buckets={})
    assert scrape.buckets is not None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route") not in SCORING_ROUTES:
                continue
            if sample.name == "mlops_requests_total":
                scrape.requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    scrape.errors += sample.value
            elif sample.name == "mlops_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                scrape.buckets[bound] = scrape.buckets.get(bound, 0.0) + sample.value
    return scrape


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of cumulative histogram buckets, interpolated linearly inside its bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is all that is known
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def window(start: dict[str, Scrape], end: dict[str, Scrape]) -> Stats:
    """The differences of every instance's counters between two scrapes, summed."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for instance, now in end.items():
        before = start.get(instance)
        if before is None or now.requests < before.requests:  # new or restarted: counts from zero
            before = Scrape(buckets={})
        requests += now.requests - before.requests
        errors += now.errors - before.errors
        for bound, count in (now.buckets or {}).items():
            buckets[bound] = buckets.get(bound, 0.0) + count - (before.buckets or {}).get(bound, 0.0)
    return Stats(int(requests), int(errors), quantile(buckets, 0.99))


# -- drift: the functions to point at a shared drift module ----------------------------------


def predictions(events: Iterable[Event]) -> np.ndarray:
    """The numeric predictions of successful events, one per row, as ``mlops monitor`` reads them
    (``monitor.report.predictions``: the predictions, not the probabilities beside them)."""
    return np.asarray([value for event in events if not event.failed for value in answered(event.outputs)
                       if isinstance(value, int | float) and not isinstance(value, bool)], dtype=float)


def prediction_psi(stable: np.ndarray, canary: np.ndarray) -> float | None:
    """PSI of the canary's predictions binned by the stable ones' deciles; None with too few."""
    if len(stable) < MIN_ROWS_FOR_DRIFT or len(canary) < MIN_ROWS_FOR_DRIFT:
        return None
    return drift.sample_psi(stable, canary)


def input_psi(baseline: Baseline, events: Iterable[Event]) -> float | None:
    """The worst feature's PSI of the canary's inputs against the model's baseline; None with too few rows."""
    rows = [row for event in events if not event.failed for row in feature_rows(event.inputs)
            if len(row) == len(baseline.columns)]
    if len(rows) < MIN_ROWS_FOR_DRIFT:
        return None
    current = np.asarray(rows, dtype=float)
    return max(drift.psi(baseline.counts[i], drift.bin_counts(current[:, i], baseline.edges[i]))
               for i in range(len(baseline.columns)))


# -- the meter -----------------------------------------------------------------------------


class TargetMeter:
    """Scrapes the canary and the stable deployment of one endpoint on its target."""

    def __init__(self, target: Target, endpoint: str, stable: str, canary: str, *, data_dir: Path,
                 baseline: Path | None, drift: bool, since: float):
        self.target, self.endpoint, self.stable, self.canary = target, endpoint, stable, canary
        self.data_dir, self.drift, self.since = data_dir, drift, since
        self.baseline = load_baseline(baseline) if baseline is not None and drift else None

    def _scrape(self) -> dict[str, dict[str, Scrape]]:
        """Every instance of both deployments, read through the target (by instance id)."""
        scraped = {name: {instance: parse_metrics(text) for instance, text in
                          self.target.metrics(self.endpoint, name).items()} for name in (self.stable, self.canary)}
        if not scraped[self.canary]:
            raise TargetError(f"no instance of the canary {self.endpoint}/{self.canary} answered its /metrics on "
                              f"target '{self.target.name}'")
        return scraped

    def mark(self) -> tuple[datetime, dict[str, dict[str, Scrape]]]:
        return datetime.now(UTC), self._scrape()

    def measure(self, mark: tuple[datetime, dict[str, dict[str, Scrape]]]) -> Measurement:
        started, before = mark
        after = self._scrape()
        stats = {name: window(before.get(name, {}), after.get(name, {})) for name in (self.stable, self.canary)}
        prediction = inputs = None
        if self.drift:
            until = datetime.now(UTC)
            canary = list(read_events(self.data_dir, self.endpoint, self.canary, since=started, until=until))
            stable = read_events(self.data_dir, self.endpoint, self.stable,
                                 since=datetime.fromtimestamp(self.since, UTC), until=until)
            prediction = prediction_psi(predictions(stable), predictions(canary))
            inputs = input_psi(self.baseline, canary) if self.baseline is not None else None
        return Measurement(stats[self.canary], stats[self.stable], prediction, inputs)
