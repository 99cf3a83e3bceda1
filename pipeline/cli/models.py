"""``mlops models``: the registry by hand — list, show, register, download, archive, delete."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError


def _ref(text: str, need_version: bool):
    from pipeline.spec.model import ModelRef

    try:
        ref = ModelRef.parse(text)
    except ValueError as error:
        raise MlopsError(str(error)) from None
    if need_version and ref.version is None:
        raise MlopsError(f"'{text}' needs a version, like {ref.name}:1")
    return ref


@click.group()
def models() -> None:
    """Registered models and their versions."""


@models.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def list_models(app: App, fmt: str) -> None:
    """Every registered model with its number of versions and latest version."""
    summaries = app.registry().list_models()
    if fmt == "json":
        click.echo(json.dumps([asdict(s) for s in summaries], indent=2))
        return
    if not summaries:
        click.echo("No models registered yet. Run mlops apply, or mlops models register PATH --name NAME.")
        return
    click.echo(f"{'NAME':<32} {'VERSIONS':>8} {'LATEST':>6}  UPDATED")
    for s in summaries:
        click.echo(f"{s.name:<32} {s.versions:>8} {s.latest or '-':>6}  {s.updated}")


@models.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def show(app: App, ref: str, fmt: str) -> None:
    """A version's metadata, lineage, files, and the deployments that serve it."""
    model = _ref(ref, need_version=False)
    registry = app.registry()
    version = registry.get(model.name, model.version)
    users = registry.users(version.name, version.version)
    if fmt == "json":
        data = asdict(version)
        data["used_by"] = users
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{version.ref}  ({version.flavor}, {version.size} bytes, {len(version.files)} files)"
               + ("  [archived]" if version.archived else ""))
    click.echo(f"  digest:      {version.digest}")
    click.echo(f"  created:     {version.created}")
    if version.description:
        click.echo(f"  description: {version.description}")
    if version.tags:
        click.echo("  tags:        " + ", ".join(f"{k}={v}" for k, v in sorted(version.tags.items())))
    lineage = {k: v for k, v in version.lineage.items() if v is not None}
    for key, value in sorted(lineage.items()):
        click.echo(f"  {key + ':':<12} {value}")
    click.echo("  used by:     " + (", ".join(users) if users else "no deployment"))


@models.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Model name (a DNS-1123 label).")
@click.option("--flavor", type=click.Choice(["sklearn", "onnx", "python", "mlflow"]), required=True)
@click.option("--description", default="")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE")
@click.option("--require-clean", is_flag=True, help="Refuse a git working tree with uncommitted changes.")
@pass_app
def register(app: App, path: Path, name: str, flavor: str, description: str, tags: tuple[str, ...],
             require_clean: bool) -> None:
    """Register a model file or folder by hand (mlops apply does this for the models in mlops.yaml)."""
    from pipeline.gitops.lineage import read_lineage
    from pipeline.gitops.lineage import require_clean as check_clean
    from pipeline.spec.checks import DNS_LABEL

    if not DNS_LABEL.match(name):
        raise MlopsError(f"'{name}' is not a valid model name; use lowercase letters, digits and '-'")
    pairs = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep:
            raise MlopsError(f"tag '{tag}' must look like KEY=VALUE")
        pairs[key] = value
    if require_clean:
        check_clean(path.resolve().parent)
    lineage = read_lineage(path.resolve().parent, [path.resolve()]).to_dict()
    lineage["model_path"] = str(path)
    version, created = app.registry().register(name, path, flavor=flavor, description=description, tags=pairs,
                                               lineage=lineage)
    click.echo(f"{'Registered' if created else 'Already registered as'} {version.ref} ({version.digest[:19]})")


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@pass_app
def download(app: App, ref: str, destination: Path) -> None:
    """Copy a version's files (verified against their digests) into DESTINATION."""
    model = _ref(ref, need_version=True)
    app.registry().download(model.name, model.version, destination)
    click.echo(f"Downloaded {model} to {destination}")


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@pass_app
def archive(app: App, ref: str) -> None:
    """Hide a version from 'latest' (refused while a deployment serves it)."""
    model = _ref(ref, need_version=True)
    app.registry().archive(model.name, model.version)
    click.echo(f"Archived {model}")


@models.command()
@click.argument("ref", metavar="NAME:VERSION")
@pass_app
def delete(app: App, ref: str) -> None:
    """Delete a version and its files no other version shares (refused while a deployment serves it)."""
    model = _ref(ref, need_version=True)
    removed = app.registry().delete(model.name, model.version)
    click.echo(f"Deleted {model} ({len(removed)} file(s) freed)")


COMMANDS = [models]
