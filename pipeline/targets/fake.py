"""``FakeTarget``: the whole ``Target`` protocol in memory, for tests of what sits above targets.

Shipped with the package (as httpx ships ``MockTransport``) so the planner, the executor and the
CLI can be tested without processes or an engine, and so it passes the same contract suite as the
real targets (``tests/targets/contract.py``). It keeps the semantics callers rely on:

* ``deploy`` is a rolling replacement: new instances are started and checked aside, then swapped in
  at once; a failing health check raises ``HealthCheckFailed`` and leaves the old ones serving.
  ``observe`` therefore never sees a deployment missing or half replaced.
* ``delete`` and ``delete_endpoint`` are idempotent; ``set_traffic`` on an unknown endpoint fails.
* keys exist for endpoints with ``auth_mode: key``, are read and rotated one at a time.

Tests steer it with ``fail_health_check`` (the next deploys of a deployment never get ready),
``stop`` (its instances die, as if killed by hand), ``deploy_seconds`` (how long starting new
instances takes, so a concurrent observer can watch a replace) and read ``calls`` (what was asked).
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from pipeline.errors import HealthCheckFailed, TargetError
from pipeline.keys import KEY_NAMES
from pipeline.spec.model import Endpoint
from pipeline.state import DEGRADED, RUNNING, STOPPED, ObservedDeployment, ObservedEndpoint
from pipeline.targets.base import DeployRequest, TargetLock


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class FakeTarget:
    """A target that keeps endpoints and deployments in memory (thread-safe)."""

    def __init__(self, name: str = "fake", *, builds_images: bool = False, deploy_seconds: float = 0.0,
                 host: str = "fake.invalid"):
        self.name = name
        self.builds_images = builds_images
        self.deploy_seconds = deploy_seconds
        self.host = host
        self.calls: list[tuple] = []
        self._endpoints: dict[str, dict] = {}
        self._deployments: dict[tuple[str, str], dict] = {}
        self._failing: dict[tuple[str, str], str] = {}
        self._logs: dict[tuple[str, str], list[str]] = {}
        self.metric_texts: dict[tuple[str, str], dict[str, str]] = {}  # what metrics() answers, set by tests
        self._lock = threading.RLock()

    def lock(self, operation: str, notice: Callable[[str], None] | None = None) -> TargetLock | None:
        """None: memory needs no lock of its own (tests give a subclass a Lease to test one)."""
        return None

    # -- steering (tests) ------------------------------------------------------------------

    def fail_health_check(self, endpoint: str, deployment: str, why: str | None = "readiness probe answered 503"
                          ) -> None:
        """Make the next deploys of ``endpoint/deployment`` fail their health check (``why=None``: stop)."""
        with self._lock:
            if why is None:
                self._failing.pop((endpoint, deployment), None)
            else:
                self._failing[(endpoint, deployment)] = why

    def stop(self, endpoint: str, deployment: str) -> None:
        """Its instances die (as if stopped outside mlops): observed as stopped until deployed again."""
        with self._lock:
            state = self._deployments.get((endpoint, deployment))
            if state is None:
                raise TargetError(f"no deployment {endpoint}/{deployment} on target '{self.name}'")
            for instance in state["instances"]:
                instance["ready"] = False
            self._log(endpoint, deployment, "instances stopped outside mlops")

    # -- observe ---------------------------------------------------------------------------

    def observe(self) -> tuple[list[ObservedEndpoint], list[ObservedDeployment]]:
        with self._lock:
            endpoints = [self._observe_endpoint(name) for name in sorted(self._endpoints)]
            deployments = [self._observe_deployment(endpoint, name, state)
                           for (endpoint, name), state in sorted(self._deployments.items())]
            return endpoints, deployments

    def _observe_endpoint(self, name: str) -> ObservedEndpoint:
        record = self._endpoints[name]
        return ObservedEndpoint(name=name, target=self.name, url=self.url(name), auth_mode=record["auth_mode"],
                                traffic=dict(record["traffic"]), mirror_traffic=dict(record["mirror"]))

    def _observe_deployment(self, endpoint: str, name: str, state: dict) -> ObservedDeployment:
        instances = state["instances"]
        ready = sum(1 for instance in instances if instance["ready"])
        status = RUNNING if instances and ready == len(instances) else DEGRADED if ready else STOPPED
        return ObservedDeployment(
            endpoint=endpoint, name=name, target=self.name, model=state["model"], environment=state["environment"],
            image=state["image"], instance_count=len(instances), ready_instances=ready,
            settings_digest=state["settings_digest"], status=status,
            detail={"instances": [i["id"] for i in instances], "started": state["updated"],
                    "generation": state["generation"]})

    # -- endpoints -------------------------------------------------------------------------

    def ensure_endpoint(self, endpoint: Endpoint) -> ObservedEndpoint:
        with self._lock:
            self.calls.append(("ensure_endpoint", endpoint.name))
            record = self._endpoints.setdefault(endpoint.name, {"traffic": {}, "mirror": {}, "keys": None,
                                                                "created": _now()})
            record["auth_mode"] = endpoint.auth_mode
            if endpoint.auth_mode == "key" and record["keys"] is None:
                record["keys"] = {which: secrets.token_urlsafe(32) for which in KEY_NAMES}
            return self._observe_endpoint(endpoint.name)

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        with self._lock:
            self.calls.append(("set_traffic", endpoint, dict(traffic), dict(mirror)))
            record = self._endpoints.get(endpoint)
            if record is None:
                raise TargetError(f"endpoint '{endpoint}' does not exist on target '{self.name}'")
            record["traffic"], record["mirror"] = dict(traffic), dict(mirror)

    def metrics(self, endpoint: str, deployment: str) -> dict[str, str]:
        """What a test put in ``metric_texts[(endpoint, deployment)]`` (instance id → /metrics text)."""
        with self._lock:
            if (endpoint, deployment) not in self._deployments:
                return {}
            return dict(self.metric_texts.get((endpoint, deployment), {}))

    def delete_endpoint(self, endpoint: str) -> None:
        with self._lock:
            self.calls.append(("delete_endpoint", endpoint))
            for key in [key for key in self._deployments if key[0] == endpoint]:
                del self._deployments[key]
            self._endpoints.pop(endpoint, None)

    def url(self, endpoint: str) -> str | None:
        with self._lock:
            return f"http://{self.host}/{self.name}/{endpoint}" if endpoint in self._endpoints else None

    def keys(self, endpoint: str) -> dict[str, str]:
        with self._lock:
            record = self._endpoints.get(endpoint)
            if record is None or record["keys"] is None:
                raise TargetError(f"endpoint '{endpoint}' has no keys yet on target '{self.name}'; "
                                  "run mlops apply first")
            return dict(record["keys"])

    def rotate_key(self, endpoint: str, which: str) -> dict[str, str]:
        if which not in KEY_NAMES:
            raise TargetError(f"no key '{which}': an endpoint's keys are {' and '.join(KEY_NAMES)}")
        with self._lock:
            self.keys(endpoint)
            self.calls.append(("rotate_key", endpoint, which))
            self._endpoints[endpoint]["keys"][which] = secrets.token_urlsafe(32)
            return self.keys(endpoint)

    # -- deployments -----------------------------------------------------------------------

    def deploy(self, request: DeployRequest) -> ObservedDeployment:
        """Start new instances aside, check them, then swap them in at once (old ones stop after)."""
        endpoint, deployment = request.endpoint.name, request.deployment
        key = (endpoint, deployment.name)
        if self.builds_images and request.image is None:
            raise TargetError(f"deployment {deployment.key} on target '{self.name}' has no image")
        self.ensure_endpoint(request.endpoint)
        with self._lock:
            self.calls.append(("deploy", endpoint, deployment.name, request.model.ref))
            failing = self._failing.get(key)
            had_old = key in self._deployments
        new = [{"id": f"{endpoint}-{deployment.name}-{uuid.uuid4().hex[:8]}", "ready": True}
               for _ in range(deployment.instance_count)]
        if self.deploy_seconds:
            time.sleep(self.deploy_seconds)  # starting: the old instances keep serving meanwhile
        with self._lock:
            if failing is not None:
                self._log(endpoint, deployment.name, f"{request.model.ref}: {failing}")
                raise HealthCheckFailed(
                    f"deployment {endpoint}/{deployment.name} did not become ready: {failing}; "
                    f"{'the previous version keeps serving' if had_old else 'nothing was deployed'}.")
            previous = self._deployments.get(key, {})
            state = {"model": request.model.ref, "model_digest": request.model.digest, "image": request.image,
                     "environment": deployment.environment, "settings_digest": request.settings_digest,
                     "instances": new, "updated": _now(), "generation": previous.get("generation", 0) + 1,
                     "environment_variables": dict(request.environment_variables)}
            self._deployments[key] = state
            self._log(endpoint, deployment.name, f"{request.model.ref} ready on {len(new)} instance(s)")
            return self._observe_deployment(endpoint, deployment.name, state)

    def delete(self, endpoint: str, deployment: str) -> None:
        with self._lock:
            self.calls.append(("delete", endpoint, deployment))
            self._deployments.pop((endpoint, deployment), None)

    def logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        with self._lock:
            if (endpoint, deployment) not in self._deployments:
                raise TargetError(f"no deployment {endpoint}/{deployment} on target '{self.name}'")
            return "\n".join(self._logs.get((endpoint, deployment), [])[-lines:])

    def _log(self, endpoint: str, deployment: str, line: str) -> None:
        self._logs.setdefault((endpoint, deployment), []).append(f"{_now()} {line}")

    def snapshot(self) -> dict:
        """A deep copy of everything it holds (for assertions)."""
        with self._lock:
            return copy.deepcopy({"endpoints": self._endpoints, "deployments": self._deployments})
