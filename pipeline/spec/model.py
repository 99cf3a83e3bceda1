"""The desired state read from mlops.yaml, as frozen dataclasses with every default applied.

These are plain values: the planner compares them, the targets receive them. Secrets stay as
``${VAR}`` references here; they are resolved only when a deployment is applied.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.plain import as_plain
from pipeline.settings import DataCollector, RequestSettings  # shared with the scoring service
from pipeline.spec.rollout import Rollout
from pipeline.spec.target_kinds import TARGET_KINDS, TargetKind

TARGET_TYPES = tuple(TARGET_KINDS)
AUTH_MODES = ("key", "none")
ROUTING_MODES = ("router", "gateway")
SCALE_TYPES = ("default", "target_utilization")

_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(:(?P<version>[1-9][0-9]*))?$")
# MLflow's URI forms: models:/NAME/VERSION and models:/NAME@ALIAS
_REGISTRY_REF = re.compile(r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)"
                           r"(/(?P<version>[1-9][0-9]*)|@(?P<alias>[A-Za-z0-9_-]+))$")


@dataclass(frozen=True, order=True)
class ModelRef:
    """Which model version a deployment serves.

    ``name`` is the content at the model's path in this commit, ``name:3`` a pinned version of a
    model of this file; ``models:/name/3`` and ``models:/name@alias`` name a version the registry
    holds whether or not this file declares the model (as MLflow writes them), the alias resolved
    when planning, so a moved alias shows as a change.
    """

    name: str
    version: int | None = None
    alias: str | None = None
    registry_only: bool = False  # the models:/ form: the model need not be declared in this file

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = _REGISTRY_REF.match(text)
        if match:
            version = match.group("version")
            return cls(match.group("name"), int(version) if version else None, match.group("alias"), True)
        match = _REF.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a model reference; expected NAME, NAME:VERSION, "
                             "models:/NAME/VERSION or models:/NAME@ALIAS")
        version = match.group("version")
        return cls(match.group("name"), int(version) if version else None)

    def __str__(self) -> str:
        if self.registry_only:
            return f"models:/{self.name}" + (f"@{self.alias}" if self.alias else f"/{self.version}")
        return self.name if self.version is None else f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Model:
    name: str
    path: str  # relative to the repository root
    flavor: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    baseline: str | None = None  # reference data (CSV or JSON lines) for drift
    drift: Mapping[str, Any] = field(default_factory=dict)  # how drift is judged (monitor.drift.DriftPolicy)

    def baseline_in_folder(self) -> str | None:
        """The baseline's path inside the model's folder (a loaded model reads its header for the column
        names), or None when it has none there."""
        from pathlib import PurePosixPath

        if not self.baseline:
            return None
        try:
            return str(PurePosixPath(self.baseline).relative_to(PurePosixPath(self.path)))
        except ValueError:
            return None


@dataclass(frozen=True)
class Environment:
    name: str
    python: str = "3.11"
    requirements: str | None = None
    conda_file: str | None = None
    dockerfile: str | None = None
    base_image: str | None = None  # None: the target's default (an official slim Python image)


@dataclass(frozen=True)
class CollectionStorage:
    """kubernetes: the volume of each endpoint's collection sink (what its scoring pods collected)."""

    size: str = "1Gi"
    storage_class: str | None = None  # None: the cluster's default StorageClass


@dataclass(frozen=True)
class GatewayRef:
    """kubernetes: the Gateway API ``Gateway`` an endpoint's ``HTTPRoute`` attaches to."""

    name: str
    namespace: str | None = None  # None: the target's namespace


@dataclass(frozen=True)
class Target:
    name: str
    type: str
    host: str | None = None  # docker: engine URL (default DOCKER_HOST)
    context: str | None = None  # kubernetes: kubeconfig context
    namespace: str | None = None  # kubernetes
    image_repository: str | None = None  # where built images are pushed
    base_image: str | None = None  # default base image for environments built for this target
    port: int | None = None  # local, docker: the first port its endpoints' routers take on 127.0.0.1
    settings: Mapping[str, str] = field(default_factory=dict)  # may hold ${VAR} secrets
    routing: str = "router"  # kubernetes: "router" (the mlops router in the cluster) or "gateway" (an HTTPRoute)
    gateway: GatewayRef | None = None  # kubernetes, routing: gateway
    collection: CollectionStorage = field(default_factory=CollectionStorage)  # kubernetes
    output: str | None = None  # edge: the folder (relative to mlops.yaml) holding one bundle per deployment
    format: str = "oci-archive"  # edge: the bundle's tarball, oci-archive or docker-archive

    @property
    def environment_repository(self) -> str | None:
        """Where environment images are pushed: an edge target's ``image_repository`` receives only its
        bundles' images (the environment image stays on this machine, inside each bundle)."""
        return None if self.kind.exports else self.image_repository

    def bundle_folder(self, endpoint: str, deployment: str) -> str:
        """edge: a deployment's bundle folder, relative to mlops.yaml (the planner names it, the adapter writes it)."""
        return f"{(self.output or '.').rstrip('/')}/{endpoint}-{deployment}"

    @property
    def kind(self) -> TargetKind:
        """What this type of target needs (the table in ``target_kinds``)."""
        return TARGET_KINDS[self.type]


@dataclass(frozen=True)
class Probe:
    """Azure ML probe settings, in seconds."""

    initial_delay: float = 0.0
    period: float = 1.0
    timeout: float = 2.0
    success_threshold: int = 1
    failure_threshold: int = 30


@dataclass(frozen=True)
class ResourceAmounts:
    """CPU and memory, as Kubernetes ``requests`` or ``limits`` give them."""

    cpu: float | str | None = None  # cores (0.5) or millicores ("500m")
    memory: str | None = None  # e.g. "512Mi", "1Gi"


def cpu_cores(value: float | str) -> float:
    """Cores from a number (0.5) or Kubernetes millicores ("500m"), as the schema admits them."""
    if isinstance(value, str):
        return int(value[:-1]) / 1000 if value.endswith("m") else float(value)
    return float(value)


@dataclass(frozen=True)
class Resources:
    """Per instance. The simple form (``cpu``, ``memory``) is both the request and the limit;
    ``requests`` and ``limits`` say them apart (Kubernetes)."""

    cpu: float | None = None  # cores
    memory: str | None = None  # e.g. "512Mi", "1Gi"
    requests: ResourceAmounts = ResourceAmounts()
    limits: ResourceAmounts = ResourceAmounts()

    @property
    def effective_requests(self) -> ResourceAmounts:
        return ResourceAmounts(self.requests.cpu if self.requests.cpu is not None else self.cpu,
                               self.requests.memory or self.memory)

    @property
    def effective_limits(self) -> ResourceAmounts:
        return ResourceAmounts(self.limits.cpu if self.limits.cpu is not None else self.cpu,
                               self.limits.memory or self.memory)


@dataclass(frozen=True)
class ScaleSettings:
    """Azure ML's scale settings: a fixed ``instance_count`` (default) or autoscaling on CPU."""

    type: str = "default"  # default | target_utilization
    min_instances: int = 1
    max_instances: int = 1
    target_utilization_percentage: int = 70

    @property
    def autoscaled(self) -> bool:
        return self.type == "target_utilization"


@dataclass(frozen=True)
class Deployment:
    name: str
    endpoint: str
    model: ModelRef
    environment: str | None = None
    instance_count: int = 1
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    request_settings: RequestSettings = RequestSettings()
    data_collector: DataCollector = DataCollector()
    liveness_probe: Probe = Probe()
    readiness_probe: Probe = Probe()
    resources: Resources = Resources()
    scale_settings: ScaleSettings = ScaleSettings()
    rollout: Rollout = Rollout()  # how an update reaches live traffic (not a setting of the service)

    @property
    def key(self) -> str:
        return f"{self.endpoint}/{self.name}"


@dataclass(frozen=True)
class Endpoint:
    name: str
    target: str
    auth_mode: str = "key"
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)
    deployments: Mapping[str, Deployment] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class RegistryConfig:
    """Where model versions, the apply ledger and the apply lock live (``registry:``)."""

    type: str = "local"  # "local": the embedded registry; "mlflow": a shared MLflow tracking server
    path: str = ".mlops/registry"  # local: its folder, relative to mlops.yaml
    tracking_uri: str | None = None  # mlflow: a ${VAR} reference, resolved when the registry is opened
    experiment: str | None = None  # mlflow: records the applies; None: mlops/<repository>

    @property
    def shared(self) -> bool:
        """Whether every clone and CI runner sees the same state (not this machine's folder)."""
        return self.type != "local"


@dataclass(frozen=True)
class Spec:
    """The whole desired state of one repository."""

    root: Path  # the folder that holds mlops.yaml; every path is relative to it
    file: str  # the file name as the user gave it (for messages)
    version: int
    registry: RegistryConfig
    prune: bool
    models: Mapping[str, Model]
    environments: Mapping[str, Environment]
    targets: Mapping[str, Target]
    endpoints: Mapping[str, Endpoint]
    # dotted location ("endpoints.iris.deployments.blue") -> (line, column) of its key, for messages
    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)
    # the same locations -> (line, column) where their values start, for edits that keep the file's layout
    value_positions: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)

    def where(self, path: str) -> str:
        """``mlops.yaml:12:5`` for a location in the file, or just the file name."""
        line, column = self.positions.get(path, (0, 0))
        return f"{self.file}:{line}:{column}" if line else self.file

    def deployments(self) -> list[Deployment]:
        return [d for e in self.endpoints.values() for d in e.deployments.values()]

    def baseline_in_folder(self, model_name: str) -> str | None:
        """Model ``model_name``'s baseline as a path inside its folder (``Model.baseline_in_folder``), or
        None, also for a model the file does not declare (a ``models:/…`` reference)."""
        model = self.models.get(model_name)
        return model.baseline_in_folder() if model is not None else None

    def registry_path(self) -> Path:
        """The registry's folder on this machine: the embedded registry itself, or the local cache of
        a shared one (verified downloads, file hashes) inside ``.mlops/``."""
        if self.registry.shared:
            return (self.root / ".mlops" / f"{self.registry.type}-cache").resolve()
        return (self.root / self.registry.path).resolve()

    def state_dir(self) -> Path:
        """This machine's state: targets' records, journals, built environments, collected data."""
        return self.registry_path().parent

    def project_id(self) -> str:
        """Who owns what a target creates: the repository folder and registry location, hashed.

        Every object mlops creates outside its own folder (containers, images, cluster objects)
        carries it as a label, and every cleanup matches it, so two projects with identically
        named targets on one engine never touch each other's objects.
        """
        identity = f"{self.root.resolve()}\0{self.registry_path()}"
        if self.registry.shared:
            identity += f"\0{self.registry.tracking_uri}"
        return hashlib.sha256(identity.encode()).hexdigest()[:16]


# what a deployment's settings are: every field but its identity, its model and how it rolls out
_SETTINGS_FIELDS = tuple(f.name for f in fields(Deployment)
                         if f.name not in ("name", "endpoint", "model", "environment", "rollout"))


def settings_digest(endpoint: Endpoint, deployment: Deployment) -> str:
    """Fingerprint of the settings that require restarting a deployment when they change.

    Secrets are fingerprinted as their ``${VAR}`` references, never their values.
    """
    data = {name: as_plain(getattr(deployment, name)) for name in _SETTINGS_FIELDS}
    # fields added later count only when set, so an unchanged file keeps its digest (no restart on upgrade)
    if deployment.scale_settings == ScaleSettings():
        data.pop("scale_settings")
    for key in ("requests", "limits"):
        if getattr(deployment.resources, key) == ResourceAmounts():
            data["resources"].pop(key)
    defaults = RequestSettings()
    for key in ("max_batch_size", "max_batch_wait_ms"):
        if getattr(deployment.request_settings, key) == getattr(defaults, key):
            data["request_settings"].pop(key)
    data["auth_mode"] = endpoint.auth_mode
    text = json.dumps(data, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
