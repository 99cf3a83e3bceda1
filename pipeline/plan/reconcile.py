"""Desired (mlops.yaml) against actual (registry + targets) → an ordered plan. Pure: no I/O.

Pairing is by key (model name, image reference, endpoint, ``endpoint/deployment``): a missing
actual side is a create, a missing desired side a delete (only with prune; otherwise "kept"). The
waves are register → build → deploy/update → traffic → delete, so nothing is routed to before it
is ready and nothing is removed while it still receives traffic. Differences made by hand on a
target (a stopped process, a different model) show up as drift in update steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pipeline.errors import ReferenceNotFound
from pipeline.gcpause import collector_paused
from pipeline.plan.model import (
    Action,
    BuildData,
    DeployData,
    EndpointData,
    Plan,
    RegisterData,
    RemoveData,
    Step,
    StepKind,
    changed_fields,
    normalize,
)
from pipeline.spec.model import Deployment, Endpoint, Spec, settings_digest
from pipeline.spec.rollout import canary_name
from pipeline.spec.target_kinds import EnvironmentKind
from pipeline.state import DEGRADED, RUNNING, Actual, ObservedDeployment


@dataclass(frozen=True)
class _Resolved:
    model: str  # "name:version"; the version is predicted for content still to be registered
    name: str
    version: int | None  # None: registered by this plan
    digest: str
    register_step: str | None


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Planner:
    def __init__(self, spec: Spec, actual: Actual, prune: bool):
        self.spec, self.actual, self.prune = spec, actual, prune
        self.steps: list[Step] = []
        self.resolved: dict[str, _Resolved] = {}  # unversioned model name -> resolution
        self.builds: dict[str, Step] = {}

    # -- wave 1 ----------------------------------------------------------------------------

    def register(self) -> None:
        for name, model in sorted(self.spec.models.items()):
            registered = self.actual.models.get(name)
            digest = self.actual.model_contents.get(name, "")
            version = registered.version_of(digest) if registered else None
            if version is not None:
                self.resolved[name] = _Resolved(f"{name}:{version}", name, version, digest, None)
                continue
            known = registered.versions if registered else {}
            predicted = max(known, default=0) + 1
            step = Step(id=f"register:{name}", kind=StepKind.REGISTER, action=Action.CREATE, address=f"model.{name}",
                        reason=f"new content at {model.path} (sha256:{_short(digest)}) → version {predicted}",
                        before={"latest": f"{name}:{max(known)}"} if known else None,
                        after={"version": f"{name}:{predicted}", "digest": digest, "flavor": model.flavor},
                        data=RegisterData(name, digest))
            self.steps.append(step)
            self.resolved[name] = _Resolved(f"{name}:{predicted}", name, None, digest, step.id)

    def resolve(self, endpoint: Endpoint, deployment: Deployment) -> _Resolved:
        ref = deployment.model
        where = self.spec.where(f"endpoints.{endpoint.name}.deployments.{deployment.name}.model")
        version = ref.version
        if ref.alias is not None:
            aliases = self.actual.aliases.get(ref.name, {})
            version = aliases.get(ref.alias)
            if version is None:
                known = ", ".join(f"@{a} → {ref.name}:{v}" for a, v in sorted(aliases.items())) or "none"
                raise ReferenceNotFound(f"{where}: the registry has no alias '{ref.alias}' of model {ref.name} "
                                        f"(its aliases: {known})")
        elif version is None:
            return self.resolved[ref.name]
        registered = self.actual.models.get(ref.name)
        if registered is None or version not in registered.versions:
            available = ", ".join(f"{ref.name}:{v}" for v in sorted(registered.versions)) if registered else ""
            hint = "" if ref.registry_only else f"; use '{ref.name}' to deploy the content at its path"
            raise ReferenceNotFound(f"{where}: model version {ref.name}:{version} is not registered (registered: "
                                    f"{available or 'none'}){hint}")
        return _Resolved(f"{ref.name}:{version}", ref.name, version, registered.versions[version], None)

    # -- wave 2 ----------------------------------------------------------------------------

    def image(self, endpoint: Endpoint, deployment: Deployment) -> tuple[str | None, str | None]:
        """(image reference, id of the build step that makes it) for targets that run images."""
        target = self.spec.targets[endpoint.target]
        if deployment.environment is None:
            return None, None
        venv = target.kind.environment is EnvironmentKind.VENV
        digest = self.actual.environment_digests.get(target.type, {}).get(deployment.environment, "")
        ref = self.actual.environment_refs.get(target.name, {}).get(deployment.environment)
        if ref is None or ref in self.actual.images:
            return ref, None
        step_id = f"build:{ref}"
        if step_id not in self.builds:
            self.builds[step_id] = Step(
                id=step_id, kind=StepKind.BUILD, action=Action.CREATE,
                address=f"{'environment' if venv else 'image'}.{ref}",
                reason=f"environment {deployment.environment} (digest {_short(digest)}) has no "
                       f"{'virtual environment' if venv else 'image'} yet",
                after={"image": ref},
                data=BuildData(deployment.environment, ref, digest, target.type, target.environment_repository,
                               target.base_image))
        return ref, step_id

    # -- wave 3 ----------------------------------------------------------------------------

    def endpoint(self, endpoint: Endpoint) -> str | None:
        observed = self.actual.endpoints.get(endpoint.name)
        address = f"endpoint.{endpoint.name}"
        data = EndpointData(endpoint.name, endpoint.target)
        if observed is None or observed.target != endpoint.target:
            self.steps.append(Step(id=f"endpoint:{endpoint.name}", kind=StepKind.ENDPOINT, action=Action.CREATE,
                                   address=address,
                                   reason=f"new endpoint on target {endpoint.target}",
                                   after={"target": endpoint.target, "auth_mode": endpoint.auth_mode}, data=data))
            return f"endpoint:{endpoint.name}"
        changes = {}
        if normalize("auth_mode", observed.auth_mode) != normalize("auth_mode", endpoint.auth_mode):
            changes["auth_mode"] = (observed.auth_mode, endpoint.auth_mode)
        if observed.status != RUNNING:
            changes["status"] = (observed.status, RUNNING)
        if observed.drift:
            changes["drift"] = ("; ".join(observed.drift), "none")
        if changes:
            reason = ("drift: the endpoint's router is not running (changed outside mlops)" if "status" in changes
                      else f"drift: {'; '.join(observed.drift)} (an interrupted apply or a change outside mlops)"
                      if "drift" in changes else "auth_mode changed")
            self.steps.append(Step(id=f"endpoint:{endpoint.name}", kind=StepKind.ENDPOINT, action=Action.UPDATE,
                                   address=address,
                                   reason=reason, before={k: v[0] for k, v in changes.items()},
                                   after={k: v[1] for k, v in changes.items()}, data=data))
            return f"endpoint:{endpoint.name}"
        return None

    def deployment(self, endpoint: Endpoint, deployment: Deployment, endpoint_step: str | None) -> None:
        resolved = self.resolve(endpoint, deployment)
        image, build_step = self.image(endpoint, deployment)
        wanted = {"model": resolved.model, "image": image, "instance_count": deployment.instance_count,
                  "settings": settings_digest(endpoint, deployment)}
        if image is None:
            del wanted["image"]
        depends = tuple(s for s in (resolved.register_step, build_step, endpoint_step) if s)
        data = DeployData(endpoint.name, deployment.name, endpoint.target, resolved.name, resolved.version,
                          resolved.digest, image)
        key = deployment.key
        observed = self.actual.deployments.get(key)
        if self.spec.targets[endpoint.target].kind.exports:
            self._export(endpoint, deployment, resolved, image, data, depends, observed)
            return
        if observed is None or observed.target != endpoint.target:
            self.steps.append(Step(id=f"deploy:{key}", kind=StepKind.DEPLOY, action=Action.CREATE,
                                   address=f"deployment.{key}",
                                   reason=f"new deployment of {resolved.model}"
                                   + self._runtime_note(endpoint, deployment) + self._layer_note(endpoint, image),
                                   after=wanted, data=data,
                                   depends_on=depends))
            return
        have = {"model": observed.model, "image": observed.image, "instance_count": observed.instance_count,
                "settings": observed.settings_digest}
        changed = [field for field in wanted if normalize(field, have[field]) != normalize(field, wanted[field])]
        drift = self._drift(observed)
        if not changed and not drift:
            return
        reasons = [f"{field} {have[field]} → {wanted[field]}" for field in changed if field != "settings"]
        if "model" in changed and deployment.model.alias:
            reasons[0] += f" ({deployment.model} moved)"
        if "settings" in changed:
            reasons.append("settings changed")
        if {"model", "image"} & set(changed):
            reasons[-1] += self._layer_note(endpoint, image)
        if drift:
            reasons.append(drift)
            changed.append("status")
            have["status"], wanted["status"] = observed.status, RUNNING
        elif deployment.rollout.progressive and endpoint.traffic.get(deployment.name, 0) > 0:
            # a healthy stable version serves live traffic: the new one is judged against it before it replaces it
            reasons.append(f"{deployment.rollout.strategy} rollout")
            data = replace(data, rollout=deployment.rollout.describe())
        self.steps.append(Step(id=f"update:{key}", kind=StepKind.UPDATE, action=Action.REPLACE,
                               address=f"deployment.{key}",
                               reason="; ".join(reasons), before={f: have[f] for f in changed},
                               after={f: wanted[f] for f in changed}, data=data, depends_on=depends))

    def _export(self, endpoint: Endpoint, deployment: Deployment, resolved: _Resolved, image: str | None,
                data: DeployData, depends: tuple[str, ...], observed: ObservedDeployment | None) -> None:
        """edge: a bundle written into the target's output folder, rewritten only when what it holds changed:
        the model version, the environment image, the tarball's format (an edge target's observed
        ``settings_digest``; request settings, instances and collection are not part of a bundle)."""
        target = self.spec.targets[endpoint.target]
        folder = target.bundle_folder(endpoint.name, deployment.name)
        wanted = {"model": resolved.model, "image": image, "format": target.format}
        if observed is None or observed.target != endpoint.target:
            self.steps.append(Step(id=f"export:{deployment.key}", kind=StepKind.EXPORT, action=Action.CREATE,
                                   address=f"deployment.{deployment.key}",
                                   reason=f"new bundle of {resolved.model} → {folder}", after=wanted, data=data,
                                   depends_on=depends))
            return
        have = {"model": observed.model, "image": observed.image, "format": observed.settings_digest}
        changed = [field for field in wanted if have[field] != wanted[field]]
        what = [f"{field} {have[field]} → {wanted[field]}" for field in changed]
        if observed.status != RUNNING:
            changed.append("status")
            have["status"], wanted["status"] = observed.status, RUNNING
            what.append("drift: " + ("its image is not in the image repository yet" if observed.status == DEGRADED
                                     else "its files are missing or changed outside mlops"))
        if not changed:
            return
        self.steps.append(Step(id=f"export:{deployment.key}", kind=StepKind.EXPORT, action=Action.REPLACE,
                               address=f"deployment.{deployment.key}", reason=f"rewrite {folder}: {'; '.join(what)}",
                               before={f: have[f] for f in changed}, after={f: wanted[f] for f in changed},
                               data=data, depends_on=depends))

    def _runtime_note(self, endpoint: Endpoint, deployment: Deployment) -> str:
        """Say where a local deployment without an environment runs: beside mlops, in its Python."""
        if deployment.environment is None and not self.spec.targets[endpoint.target].kind.needs_environment:
            return " (no environment: it runs in the Python that runs mlops)"
        return ""

    def _layer_note(self, endpoint: Endpoint, image: str | None) -> str:
        """Say where the model goes on targets whose pods pull it inside their image: a thin layer, built
        by the deploy step, so a model-only change builds no environment."""
        model_dir = self.spec.targets[endpoint.target].kind.model_dir
        if model_dir is None or image is None:
            return ""
        return f" (the model goes into a thin layer at {model_dir} on {image}, built and pushed by this step)"

    @staticmethod
    def _drift(observed: ObservedDeployment) -> str:
        if observed.status == RUNNING:
            return ""
        return (f"drift: {observed.ready_instances} of {observed.instance_count} instances ready "
                f"({observed.status} outside mlops)")

    # -- wave 4 ----------------------------------------------------------------------------

    def traffic(self, endpoint: Endpoint, created: bool) -> None:
        observed = self.actual.endpoints.get(endpoint.name)
        want = {"traffic": normalize("traffic", endpoint.traffic),
                "mirror_traffic": normalize("mirror_traffic", endpoint.mirror_traffic)}
        have = ({"traffic": normalize("traffic", observed.traffic),
                 "mirror_traffic": normalize("mirror_traffic", observed.mirror_traffic)}
                if observed is not None and not created else None)
        if have is not None and not changed_fields(have, want):
            return
        split = ", ".join(f"{d} {p}%" for d, p in want["traffic"].items()) or "no live traffic"
        self.steps.append(Step(
            id=f"traffic:{endpoint.name}", kind=StepKind.TRAFFIC, action=Action.UPDATE,
            address=f"endpoint.{endpoint.name}",
            reason=f"route {split}" + "".join(f"; mirror {p}% to {d}" for d, p in want["mirror_traffic"].items()),
            before=have, after=want, data=EndpointData(endpoint.name, endpoint.target),
            depends_on=tuple(s.id for s in self.steps if s.kind in ("deploy", "update", "endpoint")
                             and getattr(s.data, "endpoint", None) == endpoint.name)))

    # -- wave 5 ----------------------------------------------------------------------------

    def removals(self) -> None:
        desired = {d.key: d for d in self.spec.deployments()}
        canaries = {f"{d.endpoint}/{canary_name(d.name)}": d for d in desired.values() if d.rollout.progressive}
        rolling = {s.id for s in self.steps if isinstance(s.data, DeployData) and s.data.rollout}
        for key, observed in sorted(self.actual.deployments.items()):
            wanted = desired.get(key)
            stable = canaries.get(key)
            if wanted is None and stable is not None:
                if f"update:{stable.key}" not in rolling:  # its rollout ended or stopped: nothing judges it
                    self.steps.append(Step(
                        id=f"delete:{key}", kind=StepKind.DELETE, action=Action.DELETE, address=f"deployment.{key}",
                        reason=f"the canary of {stable.key} outlived its rollout (an interrupted apply)",
                        before={"model": observed.model, "status": observed.status},
                        data=RemoveData(observed.target, observed.endpoint, observed.name)))
                continue  # the update step's rollout resumes with it
            moved = wanted is not None and self.spec.endpoints[wanted.endpoint].target != observed.target
            if wanted is not None and not moved:
                continue
            self._remove(f"deployment.{key}", observed.target, observed.endpoint, observed.name, moved,
                         {"model": observed.model, "status": observed.status})
        for name, seen in sorted(self.actual.endpoints.items()):
            declared = self.spec.endpoints.get(name)
            moved = declared is not None and declared.target != seen.target
            if declared is None or moved:
                self._remove(f"endpoint.{name}", seen.target, name, None, moved, {"url": seen.url})

    def _remove(self, address, target, endpoint, deployment, moved, before) -> None:
        key = f"{endpoint}/{deployment}" if deployment else endpoint
        data = RemoveData(target, endpoint, deployment)
        if moved or self.prune:
            reason = f"moved to another target; removed from {target}" if moved else f"no longer in {self.spec.file}"
            self.steps.append(Step(id=f"delete:{key}", kind=StepKind.DELETE, action=Action.DELETE, address=address,
                                   reason=reason, before=before, data=data))
        else:
            self.steps.append(Step(id=f"keep:{key}", kind=StepKind.KEEP, action=Action.NOOP, address=address,
                                   reason="not managed any more, kept; use prune: true or --prune to delete it",
                                   before=before, data=data))


def _selected(step: Step, targets: set[str]) -> bool:
    endpoint, deployment = getattr(step.data, "endpoint", None), getattr(step.data, "deployment", None)
    return endpoint in targets or (deployment is not None and f"{endpoint}/{deployment}" in targets) or (
        step.kind in ("traffic", "endpoint") and any(t.split("/", 1)[0] == endpoint for t in targets))


def reconcile(spec: Spec, actual: Actual, *, prune: bool | None = None, targets: set[str] | None = None,
              spec_digest: str = "", created: str | None = None) -> Plan:
    """The ordered steps that make ``actual`` match ``spec``."""
    with collector_paused():
        return _reconcile(spec, actual, prune, targets, spec_digest, created)


def _reconcile(spec: Spec, actual: Actual, prune: bool | None, targets: set[str] | None, spec_digest: str,
               created: str | None) -> Plan:
    planner = _Planner(spec, actual, spec.prune if prune is None else prune)
    planner.register()
    deploy_steps_start = len(planner.steps)
    created_endpoints = set()
    for name, endpoint in sorted(spec.endpoints.items()):
        exports = spec.targets[endpoint.target].kind.exports  # bundles: no endpoint to create, no traffic
        step = None if exports else planner.endpoint(endpoint)
        if step and planner.steps[-1].action == "create":
            created_endpoints.add(name)
        for _, deployment in sorted(endpoint.deployments.items()):
            planner.deployment(endpoint, deployment, step)
    for name, endpoint in sorted(spec.endpoints.items()):
        if not spec.targets[endpoint.target].kind.exports:
            planner.traffic(endpoint, name in created_endpoints)
    planner.removals()
    steps = planner.steps[:deploy_steps_start] + list(planner.builds.values()) + planner.steps[deploy_steps_start:]
    if targets:
        chosen = [s for s in steps if s.kind not in ("register", "build") and _selected(s, targets)]
        needed = {d for s in chosen for d in s.depends_on}
        steps = [s for s in steps if s in chosen or s.id in needed]
    steps.sort(key=lambda s: s.wave)  # stable: keeps the order within each wave
    return Plan(steps=tuple(steps), spec_digest=spec_digest, state_digest=actual.digest(),
                created=created or datetime.now(UTC).isoformat(timespec="seconds"), prune=planner.prune,
                target_filter=tuple(sorted(targets or ())))
