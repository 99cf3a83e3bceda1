"""Factories: the concrete targets and builders that mlops.yaml asks for.

The only place that knows the concrete adapters; everything below talks to protocols.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pipeline.apply.observe import used_targets
from pipeline.errors import MlopsError
from pipeline.spec.model import Spec
from pipeline.spec.target_kinds import TARGET_KINDS, EnvironmentKind, supported
from pipeline.targets.base import Target


def shared_name(spec: Spec) -> str:
    """The name a shared registry knows this repository by: its experiment, lock and aliases."""
    if spec.registry.experiment:
        return spec.registry.experiment
    from pipeline.gitops.lineage import repository_name

    return f"mlops/{repository_name(spec.root)}"


def tracking_uri(spec: Spec) -> str:
    """The tracking server's URL from the environment variable ``registry.tracking_uri`` names."""
    import os

    from pipeline.spec.checks import VAR_REF

    match = VAR_REF.fullmatch(spec.registry.tracking_uri or "")
    value = os.environ.get(match.group(1), "") if match else ""
    if not value:
        name = match.group(1) if match else "MLFLOW_TRACKING_URI"
        raise MlopsError(f"{spec.where('registry.tracking_uri')}: the environment variable {name} is not set; "
                         "set it to the MLflow tracking server's URL (in CI: a repository secret)")
    return value


def make_registry(spec: Spec):
    """The registry ``registry:`` names: the embedded one, or an MLflow tracking server's."""
    if spec.registry.type == "mlflow":
        uri = tracking_uri(spec)
        from pipeline.registry.mlflow import MlflowRegistry

        return MlflowRegistry(uri, spec.registry_path() / "materialized", project=shared_name(spec))
    from pipeline.registry import open_registry

    return open_registry(spec.registry.path, root=spec.root)


def make_state_store(spec: Spec):
    """Where the apply lock and ledger live: beside the registry."""
    from pipeline.apply.state_store import LocalStateStore, MlflowStateStore

    if spec.registry.type == "mlflow":
        return MlflowStateStore(tracking_uri(spec), shared_name(spec))
    return LocalStateStore(spec.state_dir(), spec.registry_path())


def make_targets(spec: Spec, state_dir: Path) -> dict[str, Target]:
    """One adapter per target in the file; SDKs are imported only for the types in use."""
    targets: dict[str, Target] = {}
    in_use = used_targets(spec)
    for name, target in spec.targets.items():
        adapter = target.kind.adapter
        if adapter is None:
            if name in in_use:
                raise MlopsError(f"{spec.where(f'targets.{name}')}: target type '{target.type}' is not "
                                 f"supported by this version of mlops yet (use {' or '.join(supported())})")
            continue
        module, _, cls = adapter.partition(":")
        extra = _model_in_image(spec, state_dir, target) if target.kind.model_dir else {}
        if target.kind.exports:  # bundles are written beside mlops.yaml, by the image builder of this file
            extra = {"spec": spec}
        targets[name] = getattr(importlib.import_module(module), cls)(target, state_dir, project=spec.project_id(),
                                                                      **extra)
    return targets


def _model_in_image(spec: Spec, state_dir: Path, target) -> dict:
    """What a target whose pods pull an image holding the model needs: the hook that builds and pushes
    that image (lazily: no engine is contacted until a deploy), and the annotations of its objects."""
    from pipeline.apply.observe import spec_digest
    from pipeline.builders import ImageBuilder
    from pipeline.builders.model_image import ModelImages, model_layer

    images = ModelImages(ImageBuilder(spec, state_dir), target.image_repository or "", target.host,
                         target.kind.model_dir)

    def model_image(request) -> str:
        if not request.image:
            raise MlopsError(f"deployment {request.deployment.key}: no environment image to put the model on")
        return images.build(request.image, model_layer(request.model))

    path = spec.root / Path(spec.file).name
    digest = spec_digest(spec, path) if path.is_file() else ""
    return {"model_image": model_image, "spec_digest": digest, "commit": _commit(spec.root)}


def _commit(root: Path) -> str:
    """The commit the desired state comes from ('' outside git): cluster objects carry it."""
    from pipeline.errors import GitError
    from pipeline.gitops.lineage import read_lineage

    try:
        return read_lineage(root).commit or ""
    except GitError:
        return ""


class Builders:
    """The environment builders in use, one per kind: venvs for the local target, images for the others."""

    def __init__(self, venvs=None, images=None):
        self.venvs, self.images = venvs, images

    def observe(self, spec: Spec) -> tuple[dict, dict, frozenset]:
        digests: dict = {}
        wanted: dict = {}
        built: frozenset = frozenset()
        for builder in (self.venvs, self.images):
            if builder is not None:
                found, refs, exist = builder.observe(spec)
                digests.update(found)
                wanted.update(refs)
                built |= exist
        return digests, wanted, built

    def build(self, environment: str, data) -> str:
        venv = self.spec_kind(data.target_type) is EnvironmentKind.VENV
        builder = self.venvs if venv else self.images
        if builder is None:
            raise MlopsError(f"no builder for environment '{environment}' on a {data.target_type} target")
        return builder.build(environment, data)

    def collect_garbage(self, spec: Spec, serving: dict[str, dict], keep: int = 2) -> list[str]:
        """Remove built environments and model images nothing serves (images: all but the newest ``keep`` per
        environment and per model)."""
        in_use = {state[key] for state in serving.values() for key in ("image", "pinned_image") if state.get(key)}
        removed = []
        if self.venvs is not None:
            removed += self.venvs.collect_garbage(in_use)
        if self.images is not None:
            from pipeline.builders import collect_garbage

            for host in self.images.hosts():
                removed += collect_garbage(spec, self.images.client_for(host), in_use, keep=keep)
        return removed

    @staticmethod
    def spec_kind(target_type: str | None) -> EnvironmentKind | None:
        kind = TARGET_KINDS.get(target_type or "")
        return kind.environment if kind else None

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
    kinds = {spec.targets[e.target].kind.environment for e in spec.endpoints.values()
             if any(d.environment for d in e.deployments.values())}
    local, images = EnvironmentKind.VENV in kinds, EnvironmentKind.IMAGE in kinds
    if not local and not images:
        return None
    venvs = image_builder = None
    if local:
        from pipeline.builders.venvs import VenvBuilder

        venvs = VenvBuilder(spec, state_dir, progress=progress)
    if images:
        from pipeline.builders import ImageBuilder

        image_builder = ImageBuilder(spec, state_dir)
    return Builders(venvs, image_builder)
