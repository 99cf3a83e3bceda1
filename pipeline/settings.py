"""What a deployment asks of its scoring service: the settings both sides of that contract name.

``pipeline.spec`` reads them from mlops.yaml, ``pipeline.server`` obeys them. A leaf module (no
imports from the package), so a scoring image ships it without the spec package, its loader and
their dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass

FLAVORS = ("sklearn", "onnx", "python", "mlflow")
ROLLING_RATES = ("minute", "hour", "day")


@dataclass(frozen=True)
class RequestSettings:
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 16
    max_queue_wait_ms: int = 500
    max_body_bytes: int = 10 * 1024 * 1024
    # Adaptive batching (pipeline/server/batching.py): rows of concurrent requests scored by one
    # predict call; 1 turns it off. The wait is an upper bound: a lone request is never held.
    max_batch_size: int = 64
    max_batch_wait_ms: int = 5


@dataclass(frozen=True)
class DataCollector:
    enabled: bool = False
    sampling_rate: float = 1.0
    rolling_rate: str = "hour"
