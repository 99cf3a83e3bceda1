"""Prometheus metrics of one scoring service, in a registry of its own (several apps per process
in tests must not collide).

Cost, measured: a labelled counter child ``inc`` is ~0.3 µs and a histogram ``observe`` ~0.6 µs
when the children are cached (``labels()`` itself is ~1 µs, so it is called once per route and
status); values the service already keeps (in-flight requests, the collector's queue) are read at
scrape time instead of being updated per request. Together well under 1 % of a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


class _CountedByCollector:
    """Exposes a count the collector keeps as a plain int as a counter, read at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]):
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation)
        family.add_metric([], self.read())
        yield family


class Metrics:
    def __init__(self, in_flight: Callable[[], int], queue_depth: Callable[[], int],
                 dropped: Callable[[], int], unserializable: Callable[[], int] = lambda: 0):
        self.registry = registry = CollectorRegistry()
        self._requests = Counter("mlops_requests", "HTTP requests by route and status",
                                 ["route", "status"], registry=registry)
        self._latency = Histogram("mlops_request_duration_seconds", "Time from request to response",
                                  ["route"], buckets=LATENCY_BUCKETS, registry=registry)
        Gauge("mlops_requests_in_flight", "Requests being handled", registry=registry).set_function(in_flight)
        Gauge("mlops_collector_queue_depth", "Events waiting for the collector's writer",
              registry=registry).set_function(queue_depth)
        registry.register(_CountedByCollector("mlops_collector_dropped_events",
                                              "Sampled events dropped: queue full", dropped))
        registry.register(_CountedByCollector("mlops_collector_unserializable_events",
                                              "Sampled events dropped: they could not be serialized",
                                              unserializable))
        self.model_load_seconds = Gauge("mlops_model_load_seconds", "Time to load and warm up the model",
                                        registry=registry)
        self.batch_requests = Histogram("mlops_batch_requests", "Requests scored by one batched predict call",
                                        buckets=BATCH_BUCKETS, registry=registry)
        ProcessCollector(registry=registry)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = (self._requests.labels(route, str(status)), self._latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
