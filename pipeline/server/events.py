"""One collected event: what a scoring service was asked and what it answered.

The collector (``pipeline.server.collector``) writes each as one JSON object per line, its fields
in this order; the monitor (``pipeline.monitor``) reads them back as ``Event``::

    {"id": uuid4 hex, "time": ISO-8601 UTC, "endpoint", "deployment", "model", "model_version",
     "route", "status", "latency_ms", "inputs", "outputs", "error"}

``inputs`` are what the model took: rows (``[[...], ...]``), ``{"columns": [...], "data": rows}``
when the model names its features, input arrays by name for the v2 infer route, the JSON (or
text) of a body that could not be parsed, or what a python flavor's ``score.py`` was given.
Reading is lenient with what older collectors (or people) wrote: missing fields take their
defaults, unknown ones are ignored; a line without a ``time`` or with a field of the wrong type
is no event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Event:
    id: str
    time: str  # ISO 8601 with microseconds and +00:00: events of one process sort by it
    endpoint: str | None
    deployment: str | None
    model: str | None
    model_version: int | None
    route: str | None
    status: int
    latency_ms: float | None
    inputs: Any
    outputs: Any
    error: str | None

    @property
    def failed(self) -> bool:
        return self.status >= 400

    @classmethod
    def from_json(cls, data: Any) -> Event | None:
        """The event a decoded JSON line holds, or None when it holds none."""
        if type(data) is not dict:  # decoded JSON: exact types (and 3x faster checks than isinstance)
            return None
        get = data.get
        time, status, latency = get("time"), get("status", 200), get("latency_ms")
        if type(time) is not str or type(status) is not int \
                or not (latency is None or type(latency) is float or type(latency) is int):
            return None
        id_, endpoint, deployment, model, route, error = (
            get("id"), get("endpoint"), get("deployment"), get("model"), get("route"), get("error"))
        for text in (id_, endpoint, deployment, model, route, error):
            if text is not None and type(text) is not str:
                return None
        return cls(id_ or "", time, endpoint, deployment, model, get("model_version"), route, status, latency,
                   get("inputs"), get("outputs"), error)

