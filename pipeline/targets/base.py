"""The ``Target`` protocol: where deployments run (this machine, a Docker engine, a cluster).

A target observes what runs (read back from its own records or labels, so drift made by hand is
visible), deploys, updates, deletes, routes traffic and reads each instance's metrics. ``deploy`` is a
rolling replacement: start the new instances, wait until they are ready (``HealthCheckFailed`` otherwise, the old ones
still serving), switch the endpoint's router, then stop the old ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.lockinfo import Lock
from pipeline.spec.model import Deployment, Endpoint
from pipeline.state import ObservedDeployment, ObservedEndpoint


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version, materialized and verified on this machine."""

    name: str
    version: int
    digest: str
    flavor: str
    path: Path  # read-only folder with the version's files
    derived_dir: Path | None = None  # the registry's folder for what derives from them (pipeline.runtime.linear)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class DeployRequest:
    """Everything a target needs to start or replace one deployment."""

    endpoint: Endpoint
    deployment: Deployment
    model: ResolvedModel
    environment_variables: Mapping[str, str] = field(default_factory=dict)  # secrets resolved
    image: str | None = None  # built image (or venv) for targets that run one
    settings_digest: str = ""
    interpreter: Path | None = None  # local target: the environment's Python (None: the one running mlops)
    baseline: str | None = None  # the model's baseline CSV, relative to its folder (its header names the columns)


class TargetLock(Lock, Protocol):
    """A lock that lives where the target runs (a cluster's Lease), so applies from other machines and
    other state stores wait too."""

    scope: str  # what it guards (targets sharing a scope share one lock: it is taken once)


class Target(Protocol):
    """One deployment target named in mlops.yaml."""

    name: str

    def lock(self, operation: str, notice: Callable[[str], None] | None = None) -> TargetLock | None:
        """The target's own lock, held (and kept alive) for a whole apply or destroy; None: the state
        lock is enough (the target lives on this machine, or in no place others share)."""
        ...

    def observe(self) -> tuple[list[ObservedEndpoint], list[ObservedDeployment]]:
        """Endpoints and deployments that mlops manages on this target, as they are now."""
        ...

    def ensure_endpoint(self, endpoint: Endpoint) -> ObservedEndpoint:
        """Create the endpoint (its stable URL, router and keys) if it does not exist yet."""
        ...

    def deploy(self, request: DeployRequest) -> ObservedDeployment:
        """Create or replace a deployment; returns once the new instances are ready."""
        ...

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        """Route the endpoint's live traffic by weight and copy mirror percentages to shadows."""
        ...

    def delete(self, endpoint: str, deployment: str) -> None:
        """Stop and remove a deployment's instances (idempotent)."""
        ...

    def metrics(self, endpoint: str, deployment: str) -> dict[str, str]:
        """Each reachable instance's Prometheus ``/metrics`` text, by instance id (a rollout compares
        two readings of the same instances); empty when none answers."""
        ...

    def delete_endpoint(self, endpoint: str) -> None:
        """Remove the endpoint's router and every deployment behind it (idempotent)."""
        ...

    def logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        """The last lines of the deployment's service log."""
        ...

    def url(self, endpoint: str) -> str | None:
        """The endpoint's stable URL, or None when it does not exist on this target."""
        ...

    def keys(self, endpoint: str) -> dict[str, str]:
        """The endpoint's keys (``primary``, ``secondary``); ``TargetError`` when it has none
        (not created yet, or ``auth_mode: none``)."""
        ...

    def rotate_key(self, endpoint: str, which: str) -> dict[str, str]:
        """Replace one key (``primary`` or ``secondary``) and return both; the other stays valid,
        so callers switch without downtime. ``TargetError`` when the endpoint has no keys."""
        ...


def server_config(request: DeployRequest, *, port: int, model_dir: Path, keys_file: Path | None,
                  data_dir: Path | None, host: str = "127.0.0.1", collection_sink: str | None = None,
                  derived_dir: Path | None = None) -> dict:
    """The JSON the scoring service reads (``python -m pipeline.server --config FILE``).

    Targets write it without importing the server package (it sits below them in the layers);
    a contract test checks that the server's ``ServerConfig.from_json`` accepts it. ``collection_sink``
    (kubernetes, for a deployment that collects) makes ``data_dir`` a spool shipped to that URL.
    ``derived_dir`` (a service on this machine, reading the registry's folders): where the model's
    linear form is kept, so a restart need not import scikit-learn.
    """
    deployment = request.deployment
    sink = {"collection_sink": collection_sink} if collection_sink and deployment.data_collector.enabled else {}
    return {
        "model_dir": str(model_dir),
        "flavor": request.model.flavor,
        "model_name": request.model.name,
        "model_version": request.model.version,
        "endpoint": request.endpoint.name,
        "deployment": deployment.name,
        "host": host,
        "port": port,
        "keys_file": str(keys_file) if keys_file and request.endpoint.auth_mode == "key" else None,
        "request_settings": asdict(deployment.request_settings),
        "data_collector": asdict(deployment.data_collector),
        "data_dir": str(data_dir) if data_dir else None,
        "baseline": str(model_dir / request.baseline) if request.baseline else None,
        "log_level": "info",
        **sink,
        **({"derived_dir": str(derived_dir)} if derived_dir else {}),  # absent elsewhere: their configs unchanged
    }
