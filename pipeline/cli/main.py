"""The ``mlops`` command: a click group; each command lives in its own module.

User errors (``MlopsError``) print as one clear message and exit 1; ``--debug`` shows the
traceback instead. Exit codes follow ``terraform plan -detailed-exitcode``: 0 nothing to do,
1 error, 2 changes planned.
"""

from __future__ import annotations

import sys

import click

from pipeline import __version__
from pipeline.cli.context import App
from pipeline.errors import MlopsError


class Group(click.Group):
    """A click group that turns MlopsError into a clean message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MlopsError as error:
            app = ctx.find_object(App)
            if app is not None and app.debug:
                raise
            click.secho(f"Error: {error}", err=True, fg="red")
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-f", "--file", "file", default="mlops.yaml", envvar="MLOPS_FILE", show_default=True,
              help="The mlops.yaml to read.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(__version__, prog_name="mlops")
@click.pass_context
def cli(ctx: click.Context, file: str, debug: bool) -> None:
    """mlops: declarative GitOps for machine-learning models.

    mlops.yaml holds the desired state (models, environments, targets, endpoints);
    `mlops plan` shows what would change, `mlops apply` makes it so.
    """
    ctx.obj = App(file=file, debug=debug)


def _register_commands() -> None:
    from pipeline.cli import (
        batch,
        deploy,
        endpoints,
        export,
        gitops,
        history,
        images,
        models,
        monitor,
        promote,
        render,
        rollout,
        serve,
        validate,
    )

    for module in (validate, models, deploy, endpoints, serve, batch, monitor, history, promote, gitops, images,
                   render, export, rollout):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main() -> None:
    cli(prog_name="mlops")


if __name__ == "__main__":
    main()
