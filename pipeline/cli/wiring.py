"""Wire the adapters together: targets from the spec, and the observed ``Actual`` state.

The only place (with the command modules) that knows the concrete registry, targets and builder;
everything below talks to protocols.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.errors import MlopsError
from pipeline.spec.model import ModelRef, Spec
from pipeline.state import Actual, RegisteredModel
from pipeline.targets.base import Target


def spec_digest(spec: Spec, path: Path) -> str:
    """Fingerprint of mlops.yaml as written (a saved plan is refused once the file changes)."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def used_targets(spec: Spec) -> set[str]:
    return {endpoint.target for endpoint in spec.endpoints.values()}


def make_targets(spec: Spec, state_dir: Path) -> dict[str, Target]:
    """One adapter per target in the file; SDKs are imported only for the types in use."""
    targets: dict[str, Target] = {}
    in_use = used_targets(spec)
    for name, target in spec.targets.items():
        if target.type == "local":
            from pipeline.targets.local import LocalTarget

            targets[name] = LocalTarget(target, state_dir)
        elif target.type == "docker":
            from pipeline.targets.docker import DockerTarget

            targets[name] = DockerTarget(target.name, target, state_dir, project=spec.project_id())
        elif name in in_use:
            raise MlopsError(f"{spec.where(f'targets.{name}')}: target type '{target.type}' is not "
                             "supported by this version of mlops yet (use local or docker)")
    return targets


def observe(spec: Spec, registry, targets: dict[str, Target], builder=None) -> Actual:
    """Read the registry, the model files in the working tree and every target in use."""
    models, contents = {}, {}
    for model in spec.models.values():
        versions = registry.list_versions(model.name, include_archived=True)
        models[model.name] = RegisteredModel(model.name, {v.version: v.digest for v in versions},
                                             model.flavor)
        contents[model.name] = registry.digest(spec.root / model.path).digest
    endpoints, deployments = {}, {}
    for name in sorted(used_targets(spec) & set(targets)):
        seen_endpoints, seen_deployments = targets[name].observe()
        endpoints.update({e.name: e for e in seen_endpoints})
        deployments.update({d.key: d for d in seen_deployments})
    environment_digests, images = {}, frozenset()
    if builder is not None:
        environment_digests, images = builder.observe(spec)
    return Actual(models=models, model_contents=contents, environment_digests=environment_digests,
                  images=images, endpoints=endpoints, deployments=deployments)


class Builders:
    """The environment builders in use, one per kind: venvs for the local target, images for the others."""

    def __init__(self, venvs=None, images=None):
        self.venvs, self.images = venvs, images

    def observe(self, spec: Spec) -> tuple[dict, frozenset]:
        digests, built = {}, frozenset()
        for builder in (self.venvs, self.images):
            if builder is not None:
                found, refs = builder.observe(spec)
                digests.update(found)
                built |= refs
        return digests, built

    def build(self, environment: str, data) -> str:
        builder = self.venvs if data.get("target_type") == "local" else self.images
        if builder is None:
            raise MlopsError(f"no builder for environment '{environment}' on a {data.get('target_type')} target")
        return builder.build(environment, data)

    def collect_garbage(self, spec: Spec, serving: dict[str, dict], keep: int = 2) -> list[str]:
        """Remove built environments nothing serves (images: all but the newest ``keep`` per environment)."""
        in_use = {state["image"] for state in serving.values() if state.get("image")}
        removed = []
        if self.venvs is not None:
            removed += self.venvs.collect_garbage(in_use)
        if self.images is not None:
            from pipeline.build import collect_garbage

            for host in self.images.hosts():
                removed += collect_garbage(spec, self.images.client_for(host), in_use, keep=keep)
        return removed

    def interpreter(self, ref: str) -> Path | None:
        """The Python of a built venv; None for an image reference."""
        if self.venvs is None:
            return None
        try:
            return self.venvs.python(ref)
        except ValueError:
            return None


def make_builder(spec: Spec, state_dir: Path, progress=None):
    """The builders the file needs: venvs when a local deployment names an environment, images when
    some endpoint runs on a target that needs them (none at all: None)."""
    local = any(spec.targets[e.target].type == "local" and any(d.environment for d in e.deployments.values())
                for e in spec.endpoints.values())
    images = any(spec.targets[e.target].type != "local" for e in spec.endpoints.values())
    if not local and not images:
        return None
    venvs = image_builder = None
    if local:
        from pipeline.build.venvs import VenvBuilder

        venvs = VenvBuilder(spec, state_dir, progress=progress)
    if images:
        from pipeline.build import ImageBuilder

        image_builder = ImageBuilder(spec, state_dir)
    return Builders(venvs, image_builder)


def served(spec: Spec, targets: dict[str, Target]) -> dict[str, dict]:
    """What each deployment serves now: model version, image, traffic and mirror percentages."""
    result = {}
    for name in sorted(used_targets(spec) & set(targets)):
        endpoints, deployments = targets[name].observe()
        traffic = {e.name: (e.traffic, e.mirror_traffic) for e in endpoints}
        for deployment in deployments:
            live, mirror = traffic.get(deployment.endpoint, ({}, {}))
            result[deployment.key] = {"target": name, "model": deployment.model, "image": deployment.image,
                                      "status": deployment.status, "traffic": live.get(deployment.name, 0),
                                      "mirror": mirror.get(deployment.name, 0)}
    return result


def record_usage(registry, serving: dict[str, dict]) -> None:
    """Tell the registry which versions live deployments use (they cannot be deleted)."""
    usage = {}
    for key, state in serving.items():
        ref = ModelRef.parse(state["model"])
        usage[key] = (ref.name, ref.version)
    registry.set_usage(usage)
