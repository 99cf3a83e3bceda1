"""``mlops render TARGET``: the Kubernetes objects ``mlops apply`` would send, for Argo CD or Flux.

Works without a cluster: models come from the registry (or the working tree, when not registered
yet); images are pinned by the digests the image repository holds for the environment image and
the model image (``ModelImages.find``: asked, never built), else by a placeholder digest with a note.
Secret values are never rendered: the Secrets come out empty and say where their values come from.
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


PLACEHOLDER = "@sha256:" + "0" * 64


def _images(images, env_ref: str, model, notes: list[str]) -> tuple[str, str]:
    """(the pods' image: the model image, the router's: the environment image), by their real digests when
    the image repository holds them (asked, never built or pulled), else placeholders and a note."""
    from pipeline.builders.model_image import model_image_ref, model_layer, repository_of

    try:
        environment, pinned = images.find(env_ref, model_layer(model) if model.version else None)
    except Exception as error:  # no engine, or the repository cannot be asked: say so below
        environment = pinned = None
        notes.append(f"cannot ask the image repository about {env_ref} ({error})")
    placeholder = repository_of(model_image_ref(images.repository, model.name, model.version, model.digest, "")) \
        + PLACEHOLDER
    if environment is None:
        notes.append(f"image {env_ref} is not built and pushed yet: rendered with a placeholder digest (sha256:0…); "
                     "mlops apply builds and pushes it and pins the real digest")
        return placeholder, env_ref + PLACEHOLDER
    if pinned is None:
        notes.append(f"the model image of {model.name}:{model.version} on {env_ref} is not built and pushed yet: "
                     "rendered with a placeholder digest (sha256:0…); mlops apply builds it and pins the real digest")
        return placeholder, environment
    return pinned, environment


def target_objects(app: App, name: str, notes: list[str]) -> list[dict]:
    """Every object apply would send to the target, in apply order."""
    from pipeline.builders import ImageBuilder, image_ref
    from pipeline.builders.model_image import ModelImages
    from pipeline.spec.model import settings_digest
    from pipeline.targets.base import DeployRequest
    from pipeline.targets.kubernetes import adapter, manifests

    spec = app.spec()
    target = spec.targets.get(name)
    if target is None or target.type != "kubernetes":
        raise MlopsError(f"{spec.file}: no kubernetes target named '{name}'")
    builder = ImageBuilder(spec, app.state_dir())
    images = ModelImages(builder, target.image_repository or "", target.host, target.kind.model_dir or "")
    meta = manifests.Meta(spec.project_id(), target.namespace or "default", target.routing, target.gateway, "", "")
    objects: list[dict] = []
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    for endpoint in (e for e in spec.endpoints.values() if e.target == name):
        router_image = None
        for deployment in endpoint.deployments.values():
            environment = deployment.environment or ""
            ref = image_ref(environment, builder.context(environment, target.base_image).digest(),
                            target.image_repository)
            model = _model(app, deployment, notes)
            key = (ref, model.ref, model.digest)
            if key not in found:
                found[key] = _images(images, ref, model, notes)
            pinned, router = found[key]
            request = DeployRequest(endpoint, deployment, model, image=ref,
                                    settings_digest=settings_digest(endpoint, deployment),
                                    baseline=spec.baseline_in_folder(deployment.model.name))
            objects += adapter.target_objects(request, meta, pinned)
            router_image = router_image or router
        if target.routing == "router" and router_image is None:
            router_image = "mlops-router" + PLACEHOLDER
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
