"""``mlops images base`` and ``mlops images gc``: the local base image and old environment images."""

from __future__ import annotations

import click

from pipeline.cli.context import App, pass_app


@click.group()
def images() -> None:
    """The images mlops builds: the local base, environment images and their cleanup."""


@images.command()
@click.option("--host", envvar="DOCKER_HOST", help="The Docker engine (default DOCKER_HOST).")
def base(host: str | None) -> None:
    """Make the local Debian base image exist on the engine (no image registry needed).

    Imported from the cache (~/.cache/mlops/base) when it is there, else built once with
    debootstrap from this machine's apt mirror (needs root and debootstrap), then cached.
    Prints its tag, the default base of environments that name no base_image.
    """
    from pipeline.builders import connect
    from pipeline.builders.base import ensure_base

    click.echo(ensure_base(connect(host), progress=lambda line: click.echo(line, err=True)))


@images.command()
@click.option("--keep", default=2, show_default=True, type=click.IntRange(min=0),
              help="How many of the newest images to keep per environment and per model, served or not.")
@pass_app
def gc(app: App, keep: int) -> None:
    """Remove this project's environment and model images that no deployment serves (older than the newest --keep
    per environment and per model)."""
    from pipeline.apply.observe import served
    from pipeline.builders import ImageBuilder, collect_garbage
    from pipeline.cli.wiring import make_targets

    spec = app.spec()
    builder = ImageBuilder(spec, app.state_dir())
    serving = [state[key] for state in served(spec, make_targets(spec, app.state_dir())).values()
               for key in ("image", "pinned_image") if state.get(key)]
    removed = []
    for host in builder.hosts():
        removed += collect_garbage(spec, builder.client_for(host), serving, keep)
    for ref in removed:
        click.echo(f"  - removed {ref}")
    click.echo(f"Removed {len(removed)} image(s).")


COMMANDS = [images]
