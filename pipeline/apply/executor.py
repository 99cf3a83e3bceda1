"""Carry out a plan, step by step, against the registry, the builder and the targets.

Each step is journaled before and after it runs. Transient failures (a busy engine, a dropped
connection) are retried with capped exponential backoff; permanent ones stop the apply at once.
Completed steps are never rolled back silently: a re-run re-plans against what is now true and
resumes. A deployment that never becomes ready raises ``HealthCheckFailed`` from its target,
which has already removed the new instances while the old ones kept serving.

This module talks to its collaborators only through their protocols; the CLI wires them.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.apply.journal import Journal
from pipeline.apply.rollout import Clock, RolloutStore, SystemClock
from pipeline.apply.rollout_run import RolloutRun
from pipeline.errors import MlopsError, ReferenceNotFound, TargetError
from pipeline.plan.model import BuildData, DeployData, RemoveData
from pipeline.registry.base import derived_folder
from pipeline.spec.checks import VAR_REF
from pipeline.spec.model import Spec, settings_digest
from pipeline.state import ObservedDeployment
from pipeline.targets.base import DeployRequest, ResolvedModel, Target

RETRIES = 3
BACKOFF_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0

Progress = Callable[[Any, str, str], None]  # (step, "start" | "done" | "failed" | "retry" | "rollout", detail)


class Builder(Protocol):
    def build(self, environment: str, step_data: BuildData) -> str:
        """Build the image a build step describes; returns the image reference."""
        ...

    def interpreter(self, ref: str) -> Path | None:
        """The Python a built environment runs (a venv), or None for an image."""
        ...


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    registered: dict[str, int] = field(default_factory=dict)  # model name -> version
    failed: str | None = None
    error: MlopsError | None = None


def is_transient(error: BaseException) -> bool:
    if isinstance(error, MlopsError):
        return error.transient
    return isinstance(error, ConnectionError | TimeoutError)


def with_retries(action: Callable[[], Any], on_retry: Callable[[int, BaseException], None]) -> Any:
    """Run ``action``; retry transient failures with capped exponential backoff."""
    for attempt in range(RETRIES + 1):
        try:
            return action()
        except Exception as error:
            if attempt == RETRIES or not is_transient(error):
                raise
            on_retry(attempt + 1, error)
            time.sleep(min(BACKOFF_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS))


def resolve_variables(values: Mapping[str, str], where: str) -> dict[str, str]:
    """Replace ``${VAR}`` references by the environment's values (never printed)."""
    missing = sorted({name for value in values.values() for name in VAR_REF.findall(value)
                      if name not in os.environ})
    if missing:
        raise MlopsError(f"{where}: environment variable(s) {', '.join(missing)} are not set; "
                         "set them where mlops apply runs (for example as CI secrets)")
    return {key: VAR_REF.sub(lambda m: os.environ[m.group(1)], value) for key, value in values.items()}


class Executor:
    def __init__(self, spec: Spec, registry, targets: Mapping[str, Target], builder: Builder | None,
                 journal: Journal, progress: Progress, lineage: Mapping[str, Any] | None = None,
                 clock: Clock | None = None):
        self.spec = spec
        self.clock = clock or SystemClock()  # rollouts bake by it
        self.registry = registry
        self.targets = targets
        self.builder = builder
        self.journal = journal
        self.progress = progress
        self.lineage = dict(lineage or {})
        self.images: dict[str, str] = {}

    def run(self, steps) -> Outcome:
        outcome = Outcome()
        for step in steps:
            if step.kind == "keep":
                continue
            self.journal.record("start", step=step.id)
            self.progress(step, "start", "")
            try:
                result = with_retries(functools.partial(self._run, step, outcome), self._retry_notice(step))
            except MlopsError as error:
                self.journal.record("failed", step=step.id, error=str(error))
                self.progress(step, "failed", str(error))
                outcome.failed, outcome.error = step.id, error
                return outcome
            self.journal.record("done", step=step.id, result=result)
            self.progress(step, "done", result or "")
            outcome.done.append(step.id)
        return outcome

    def _retry_notice(self, step) -> Callable[[int, BaseException], None]:
        def notice(attempt: int, error: BaseException) -> None:
            self.journal.record("retry", step=step.id, attempt=attempt, error=str(error))
            self.progress(step, "retry", f"attempt {attempt} failed ({error}); retrying")
        return notice

    def _run(self, step, outcome: Outcome) -> str:
        handler = getattr(self, f"_{step.kind}", None)
        if handler is None:
            raise MlopsError(f"this mlops cannot apply steps of kind '{step.kind}' (a newer plan format?)")
        return handler(step, outcome)

    # -- step kinds ------------------------------------------------------------------------

    def _register(self, step, outcome: Outcome) -> str:
        model = self.spec.models[step.data.model]
        version, created = self.registry.register(
            model.name, self.spec.root / model.path, flavor=model.flavor, description=model.description,
            tags=dict(model.tags), lineage={**self.lineage, "model_path": model.path})
        outcome.registered[model.name] = version.version
        return f"{model.name}:{version.version}" + ("" if created else " (already registered)")

    def _build(self, step, outcome: Outcome) -> str:
        if self.builder is None:
            raise MlopsError("this plan needs an image build, but no builder is available")
        image = self.builder.build(step.data.environment, step.data)
        self.images[step.data.image] = image
        return image

    def _endpoint(self, step, outcome: Outcome) -> str:
        endpoint = self.spec.endpoints[step.data.endpoint]
        observed = self.targets[endpoint.target].ensure_endpoint(endpoint)
        return observed.url or ""

    def _deploy(self, step, outcome: Outcome) -> str:
        observed = self._start(step.data)
        return f"{observed.model} ready ({observed.ready_instances}/{observed.instance_count} instances)"

    def _update(self, step, outcome: Outcome) -> str:
        if not step.data.rollout:
            return self._deploy(step, outcome)
        request = self._request(step.data)
        return RolloutRun(request, self.targets[request.endpoint.target], self.registry, self.spec,
                          self.journal, lambda message: self.progress(step, "rollout", message), self.clock).run()

    def _export(self, step, outcome: Outcome) -> str:
        observed = self._start(step.data)
        detail = observed.detail
        return f"{observed.model} in {detail.get('folder')} ({(detail.get('tarball_size') or 0) / 1e6:.1f} MB)"

    def _start(self, data: DeployData) -> ObservedDeployment:
        """Deploy (or export) what a deploy, update or export step names; the target's observed result."""
        request = self._request(data)
        target = self.targets[request.endpoint.target]
        target.ensure_endpoint(request.endpoint)
        # protected before it serves: a crash from here on leaves it undeletable, never unprotected
        self.registry.add_usage(f"{request.deployment.key} (being deployed)", request.model.name,
                                request.model.version)
        return target.deploy(request)

    def _request(self, data: DeployData) -> DeployRequest:
        endpoint = self.spec.endpoints[data.endpoint]
        deployment = endpoint.deployments[data.deployment]
        model = self._resolve_model(data)
        where = self.spec.where(f"endpoints.{endpoint.name}.deployments.{deployment.name}")
        return DeployRequest(
            endpoint=endpoint, deployment=deployment, model=model,
            environment_variables=resolve_variables(deployment.environment_variables, where),
            image=data.image, settings_digest=settings_digest(endpoint, deployment),
            baseline=self.spec.baseline_in_folder(model.name),
            interpreter=self.builder.interpreter(data.image) if self.builder and data.image
            else None)

    def _traffic(self, step, outcome: Outcome) -> str:
        endpoint = self.spec.endpoints[step.data.endpoint]
        target = self.targets[endpoint.target]
        target.ensure_endpoint(endpoint)
        target.set_traffic(endpoint.name, endpoint.traffic, endpoint.mirror_traffic)
        return ", ".join(f"{d} {p}%" for d, p in endpoint.traffic.items())

    def _delete(self, step, outcome: Outcome) -> str:
        data: RemoveData = step.data
        target = self.targets.get(data.target)
        if target is None:
            raise TargetError(f"target '{data.target}' is no longer in {self.spec.file}; "
                              "cannot delete what runs there")
        if data.deployment:
            target.delete(data.endpoint, data.deployment)
            self._abandon_rollout(data.endpoint, data.deployment)
        else:
            target.delete_endpoint(data.endpoint)
        return "deleted"

    def _abandon_rollout(self, endpoint: str, deleted: str) -> None:
        """A canary removed by a plan (its rollout was interrupted, and mlops.yaml no longer rolls that
        version out) ends its rollout: saved as abandoned, so no status shows it in progress."""
        store = RolloutStore.under(self.spec.state_dir())
        for state in store.all(endpoint):
            if state.canary == deleted and state.active:
                state.reason = (f"its canary was removed at {state.weight}%: mlops.yaml no longer rolls out "
                                f"{state.model} (the apply that drove it had stopped)")
                state.phase, state.weight, state.updated = "abandoned", 0, self.clock.now()
                store.save(state)

    # -- helpers ---------------------------------------------------------------------------

    def _resolve_model(self, data: DeployData) -> ResolvedModel:
        """The version a deploy step means: pinned, or the one registered for the planned digest."""
        name, version = data.model_name, data.model_version
        if version is None:
            found = self.registry.find(name, data.model_digest)
            if found is None:
                raise ReferenceNotFound(f"model {name} with content {data.model_digest} is not "
                                        "registered; re-run mlops apply to plan again")
            version = found.version
        record = self.registry.get(name, version)
        path = self.registry.materialize(name, version)
        return ResolvedModel(name, version, record.digest, record.flavor, path, derived_folder(path))
