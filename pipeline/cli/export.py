"""``mlops export``: a model version as one offline image tarball plus runner manifests (parse and print only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError


def _environment(app: App, info, given: str | None) -> str:
    """The environment: given, the deployment's, the one deployments of the model use, or the only one."""
    spec = app.spec()
    if given:
        if given not in spec.environments:
            raise MlopsError(f"no environment {given!r} in {app.file} (environments: {', '.join(spec.environments)})")
        return given
    if info.endpoint is not None:
        found = spec.endpoints[info.endpoint].deployments.get(info.deployment)
        if found is not None and found.environment:
            return found.environment
    used = {d.environment for e in spec.endpoints.values() for d in e.deployments.values()
            if d.environment and d.model.name == info.name}
    candidates = used if len(used) == 1 else set(spec.environments) if len(spec.environments) == 1 else set()
    if not candidates:
        raise MlopsError(f"which environment runs {info.name}? Name one with --environment")
    return candidates.pop()


@click.command("export")
@click.argument("source")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The bundle's folder (created).")
@click.option("--format", "fmt", type=click.Choice(["oci-archive", "docker-archive"]), default="oci-archive",
              show_default=True, help="The tarball: an OCI layout (docker load, podman, skopeo) or docker save's.")
@click.option("--environment", help="The environment image to run on (default: the deployment's).")
@click.option("--base-image", help="The environment image's base (default: the environment's, or the local base).")
@click.option("--overwrite", is_flag=True, help="Replace another bundle in the folder.")
@click.option("--json", "as_json", is_flag=True, help="Print bundle.json's content on standard output.")
@pass_app
def export_command(app: App, source: str, output: Path, fmt: str, environment: str | None, base_image: str | None,
                   overwrite: bool, as_json: bool) -> None:
    """Export a model version as one image tarball that runs with no network, for edge devices.

    SOURCE is ENDPOINT[/DEPLOYMENT] (the version serving there now), NAME:VERSION, models:/NAME/VERSION
    or models:/NAME@ALIAS. The folder gets the tarball, bundle.json, docker-compose.yaml,
    iotedge.deployment.json, greengrass.recipe.yaml and SHA256SUMS.
    """
    from pipeline.builders import ImageBuilder
    from pipeline.builders.export import ExportRequest, export
    from pipeline.builders.model_image import ModelLayer
    from pipeline.cli.batch import _baseline, _resolve
    from pipeline.errors import ModelLoadError

    spec = app.spec()
    info = _resolve(app, source)["info"]
    try:
        signature = info.load().describe()
    except ModelLoadError as error:
        raise MlopsError(f"cannot load {info.name}:{info.version}: {error}") from None
    baseline = _baseline(spec, info.name, Path(info.model_dir))
    request = ExportRequest(
        model=ModelLayer(info.name, info.version, info.digest, Path(info.model_dir), info.flavor),
        environment=_environment(app, info, environment), output=output, format=fmt, base_image=base_image,
        signature=signature, baseline=Path(baseline).relative_to(info.model_dir).as_posix() if baseline else None,
        overwrite=overwrite)
    result = export(ImageBuilder(spec, app.state_dir()), request, progress=lambda line: click.echo(line, err=True))
    bundle = result.bundle
    if as_json:
        click.echo(json.dumps(bundle, indent=2))
    elif not result.exported:
        click.echo(f"{output} already holds {info.name}:{info.version} ({bundle['content_digest'][:19]}): "
                   "nothing exported")
    else:
        click.echo(f"Exported {info.name}:{info.version} to {result.tarball} ({bundle['format']}, "
                   f"{bundle['tarball_size'] / 1e6:.1f} MB; image {bundle['image_size'] / 1e6:.1f} MB) "
                   f"in {result.seconds:.1f} s")


COMMANDS = [export_command]
