"""The actual state, as observed from the registry, the working tree and the targets.

Plain frozen values: observers (registry, targets, builder) produce them, the pure planner
consumes them. ``Actual.digest()`` fingerprints what a plan was made against, so that a saved
plan applied later can be refused when the world has moved on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.plain import as_plain


class Health(StrEnum):
    """Deployment and endpoint states a target reports."""

    RUNNING = "running"  # every instance alive and ready
    DEGRADED = "degraded"  # some instances down or not ready
    STOPPED = "stopped"  # known to mlops, but no instance runs


RUNNING, DEGRADED, STOPPED = Health.RUNNING, Health.DEGRADED, Health.STOPPED


@dataclass(frozen=True)
class RegisteredModel:
    """What the registry holds for one model name: version numbers by content digest."""

    name: str
    versions: Mapping[int, str] = field(default_factory=dict)  # version -> digest (not archived)
    flavor: str | None = None

    def version_of(self, digest: str) -> int | None:
        return next((v for v, d in self.versions.items() if d == digest), None)


@dataclass(frozen=True)
class ObservedDeployment:
    """A deployment as a target sees it, read back from the target's own records or labels."""

    endpoint: str
    name: str
    target: str
    model: str  # "name:version"
    environment: str | None = None
    image: str | None = None  # image reference (docker, kubernetes) or None (local)
    instance_count: int = 1
    ready_instances: int = 0
    settings_digest: str = ""  # fingerprint of the settings it was started with
    status: Health = RUNNING
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False)  # pids, urls: not compared

    @property
    def key(self) -> str:
        return f"{self.endpoint}/{self.name}"


@dataclass(frozen=True)
class ObservedEndpoint:
    name: str
    target: str
    url: str | None = None
    auth_mode: str = "key"
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)
    status: Health = RUNNING
    # how what runs differs from the target's records (stale routes, instances no record names)
    drift: tuple[str, ...] = ()


@dataclass(frozen=True)
class Actual:
    """Everything the planner needs to know about the world outside mlops.yaml."""

    models: Mapping[str, RegisteredModel] = field(default_factory=dict)
    # digest of the files now at each declared model's path (the content a plain NAME reference means)
    model_contents: Mapping[str, str] = field(default_factory=dict)
    # build digest of each environment, per target type that builds images ({"docker": {"sklearn": d}})
    environment_digests: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # the image or venv reference each target wants for each environment ({"box": {"sklearn": ref}}),
    # named by the builder: the planner never computes image names
    environment_refs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    images: frozenset[str] = frozenset()  # image references that already exist where they are needed
    # the registry's aliases of models referenced as models:/NAME@ALIAS ({"fraud": {"champion": 7}})
    aliases: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    endpoints: Mapping[str, ObservedEndpoint] = field(default_factory=dict)
    deployments: Mapping[str, ObservedDeployment] = field(default_factory=dict)  # by "endpoint/name"

    def digest(self) -> str:
        """A fingerprint of the compared facts (``detail`` such as pids is left out)."""
        data = as_plain(self)
        for deployment in data["deployments"].values():
            deployment.pop("detail", None)
        del data["environment_refs"]  # named from the digests, which are fingerprinted already
        if not data["aliases"]:
            del data["aliases"]  # fingerprints as before aliases were observed
        for endpoint in data["endpoints"].values():
            if not endpoint["drift"]:
                del endpoint["drift"]  # no drift fingerprints as it did before drift was observed
        data["images"] = sorted(self.images)
        text = json.dumps(data, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
