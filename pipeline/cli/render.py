"""``mlops render TARGET``: the Kubernetes objects ``mlops apply`` would send, for Argo CD or Flux.

Works without a cluster: models come from the registry (or the working tree, when not registered
yet), images from the builder's naming. Secret values are never rendered: the Secrets come out
empty and say where their values come from.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError

SECRET_NOTE = ("# Secret values are not rendered. Endpoint keys: `mlops apply` generates them (read them with "
               "`mlops endpoints keys`);\n# ${VAR} environment variables: their values from where mlops apply runs. "
               "With GitOps, create this Secret's data\n# out of band (kubectl, Sealed Secrets, External Secrets); "
               "the keys it needs are those the Deployment references.\n")


def _model(app: App, deployment, notes: list[str]):
    """The version a deployment means, as apply would resolve it (version 0: not registered yet)."""
    from pipeline.registry.hashing import working_tree_digest
    from pipeline.targets.base import ResolvedModel

    spec, registry, ref = app.spec(), app.registry(), deployment.model
    version = ref.version or (registry.aliases(ref.name).get(ref.alias) if ref.alias else None)
    if version is None:
        model = spec.models[ref.name]
        digest = working_tree_digest(spec.root / model.path, spec.registry_path()).digest
        found = registry.find(ref.name, digest)
        if found is None:
            notes.append(f"model {ref.name}: its content is not registered yet; rendered as version 0 "
                         f"(apply registers it)")
            return ResolvedModel(ref.name, 0, digest, model.flavor, spec.root / model.path)
        version = found.version
    record = registry.get(ref.name, version)
    return ResolvedModel(ref.name, version, record.digest, record.flavor, Path("/var/lib/mlops/model"))


def _pinned(ref: str, target, notes: list[str]) -> str:
    """The image by digest: from the engine when it holds the pushed image, else a placeholder digest."""
    try:
        from pipeline.builders import connect

        digests = connect(target.host).images.get(ref).attrs.get("RepoDigests") or []
        repository = ref.rsplit(":", 1)[0]
        found = next((d for d in digests if d.startswith(repository + "@")), None)
        if found:
            return found
    except Exception:  # no engine, or the image is not built: say so below
        pass
    notes.append(f"image {ref} is not built and pushed yet: rendered with a placeholder digest (sha256:0…); "
                 "mlops apply builds and pushes it and pins the real digest")
    return f"{ref}@sha256:{'0' * 64}"


def target_objects(app: App, name: str, notes: list[str]) -> list[dict]:

    from pipeline.apply.executor import Executor
    from pipeline.builders import ImageBuilder, image_ref
    from pipeline.spec.model import settings_digest
    from pipeline.targets.base import DeployRequest
    from pipeline.targets.kubernetes import adapter, manifests

    spec = app.spec()
    target = spec.targets.get(name)
    if target is None or target.type != "kubernetes":
        raise MlopsError(f"{spec.file}: no kubernetes target named '{name}'")
    builder = ImageBuilder(spec, app.state_dir())
    meta = manifests.Meta(spec.project_id(), target.namespace or "default", target.routing, target.gateway, "", "")
    baselines = Executor(spec, None, {}, None, None, lambda *a: None)  # type: ignore[arg-type]
    objects: list[dict] = []
    images: dict[str, str] = {}
    for endpoint in (e for e in spec.endpoints.values() if e.target == name):
        router_image = None
        for deployment in endpoint.deployments.values():
            environment = deployment.environment or ""
            ref = image_ref(environment, builder.context(environment, target.base_image).digest(),
                            target.image_repository)
            if ref not in images:
                images[ref] = _pinned(ref, target, notes)
            request = DeployRequest(endpoint, deployment, _model(app, deployment, notes), image=ref,
                                    settings_digest=settings_digest(endpoint, deployment),
                                    baseline=baselines._baseline_in_model(deployment.model.name))
            objects += adapter.target_objects(request, meta, images[ref])
            router_image = router_image or images[ref]
        if target.routing == "router" and router_image is None:
            router_image = f"mlops-router@sha256:{'0' * 64}"
        # traffic as declared: a repository rendered for GitOps is the desired state
        objects += manifests.endpoint_manifests(endpoint, meta, None, router_image)
    return sorted(objects, key=lambda o: (manifests.KIND_ORDER.index(o["kind"]), o["metadata"]["name"]))


def _file_name(obj: dict) -> str:
    return f"{obj['kind'].lower()}-{re.sub(r'[^a-z0-9.-]', '-', obj['metadata']['name'])}.yaml"


def _text(obj: dict) -> str:
    import yaml

    text = yaml.safe_dump(obj, sort_keys=False)
    return SECRET_NOTE + text if obj["kind"] == "Secret" else text


@click.command()
@click.argument("target")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write one YAML file per object and a kustomization.yaml here (default: one stream to stdout).")
@pass_app
def render(app: App, target: str, out: Path | None) -> None:
    """Print the Kubernetes objects mlops apply would send to TARGET (no cluster needed)."""
    import yaml

    notes: list[str] = []
    objects = target_objects(app, target, notes)
    for note in dict.fromkeys(notes):
        click.echo(f"Note: {note}", err=True)
    if out is None:
        sys.stdout.write("---\n".join(_text(o) for o in objects))
        return
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for obj in objects:
        names.append(_file_name(obj))
        (out / names[-1]).write_text(_text(obj))
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": names}
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    click.echo(f"Wrote {len(names)} object(s) and kustomization.yaml to {out}", err=True)


COMMANDS = [render]
