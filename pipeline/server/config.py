"""What one scoring-service process serves and how: the contract between targets and the server.

A target writes this as JSON (``python -m pipeline.server --config FILE``) without importing the
server package, so the JSON form is plain: paths as strings, settings as nested objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.settings import FLAVORS, ROLLING_RATES, DataCollector, RequestSettings

EXECUTION_MODES = ("auto", "inline", "thread")


@dataclass(frozen=True)
class ServerConfig:
    """One deployment instance: the model folder (already verified by the registry) and settings.

    ``keys_file`` None turns key auth off. ``execution`` picks where ``predict`` runs: ``inline``
    on the event loop (fastest for sub-millisecond models, but a timeout cannot interrupt it),
    ``thread`` in a pool sized to the concurrency limit (timeouts answered on time), or ``auto``
    (inline for small batches when the warm-up showed a fast model, else thread).
    """

    model_dir: Path
    flavor: str
    model_name: str
    model_version: int
    port: int
    endpoint: str = "default"
    deployment: str = "default"
    host: str = "127.0.0.1"
    keys_file: Path | None = None
    request_settings: RequestSettings = field(default_factory=RequestSettings)
    data_collector: DataCollector = field(default_factory=DataCollector)
    data_dir: Path | None = None
    baseline: Path | None = None  # the model's baseline CSV: its header names the columns when the model cannot
    derived_dir: Path | None = None  # the registry's folder for what derives from the model (its linear form)
    log_level: str = "info"
    log_file: Path | None = None  # rotated by size; None: stderr (a container's log)
    access_log: bool = False  # a line per request (also on at log_level debug): off, it costs throughput
    execution: str = "auto"
    # Kubernetes: the endpoint's collection sink (pipeline.server.sink); data_dir is then only a spool
    collection_sink: str | None = None
    collection_grace_seconds: float = 20.0  # at SIGTERM, how long to keep shipping what is spooled

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, not {self.flavor!r}")
        if self.execution not in EXECUTION_MODES:
            raise ValueError(f"execution must be one of {', '.join(EXECUTION_MODES)}")
        if self.data_collector.rolling_rate not in ROLLING_RATES:
            raise ValueError(f"rolling_rate must be one of {', '.join(ROLLING_RATES)}")
        if not 0.0 <= self.data_collector.sampling_rate <= 1.0:
            raise ValueError("sampling_rate must be between 0 and 1")
        if self.data_collector.enabled and self.data_dir is None:
            raise ValueError("data_collector is enabled but no data_dir is given")
        if self.collection_sink is not None and not self.collection_sink.startswith("http://"):
            raise ValueError("collection_sink must be an http:// URL")

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("model_dir", "keys_file", "data_dir", "baseline", "derived_dir", "log_file"):
            data[key] = str(data[key]) if data[key] is not None else None
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown server config field(s): {', '.join(unknown)}")
        values = dict(data)
        values["model_dir"] = Path(values["model_dir"])
        for key in ("keys_file", "data_dir", "baseline", "derived_dir", "log_file"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        values["request_settings"] = RequestSettings(**values.get("request_settings") or {})
        values["data_collector"] = DataCollector(**values.get("data_collector") or {})
        values["model_version"] = int(values["model_version"])
        values["port"] = int(values["port"])
        if values.get("collection_grace_seconds") is not None:
            values["collection_grace_seconds"] = float(values["collection_grace_seconds"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        return cls.from_dict(json.loads(text))
