"""Factories: the concrete targets and builders that mlops.yaml asks for.

The only place that knows the concrete adapters; everything below talks to protocols.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.apply.observe import used_targets
from pipeline.errors import MlopsError
from pipeline.spec.model import Spec
from pipeline.targets.base import Target


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
