"""The ``mlops`` command: a click group; each command lives in its own module.

User errors (``MlopsError``) print as one clear message and exit 1; ``--debug`` shows the
traceback instead. Exit codes follow ``terraform plan -detailed-exitcode``: 0 nothing to do,
1 error, 2 changes planned.
"""

from __future__ import annotations

import importlib
import sys

import click

from pipeline import __version__
from pipeline.cli.context import App
from pipeline.errors import MlopsError

# Each command's module, imported only when the command runs (or ``--help`` lists them): ``mlops score-batch``
# then imports what scoring needs and not, say, the spec editor (click's documented lazy-group pattern).
COMMAND_MODULES = {
    "validate": "validate", "schema": "validate", "models": "models", "plan": "deploy", "apply": "deploy",
    "status": "deploy", "destroy": "deploy", "logs": "deploy", "force-unlock": "deploy", "endpoints": "endpoints",
    "score": "endpoints", "serve": "serve", "score-batch": "batch", "monitor": "monitor", "history": "history",
    "rollback": "history", "promote": "promote", "init": "gitops", "comment": "gitops", "images": "images",
    "render": "render", "export": "export", "rollout": "rollout",
}


class Group(click.Group):
    """A click group that loads each command's module when needed, and turns MlopsError into a clean message
    and exit code 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            module = importlib.import_module(f"pipeline.cli.{COMMAND_MODULES[name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return super().get_command(ctx, name)

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


def main() -> None:
    cli(prog_name="mlops")


if __name__ == "__main__":
    main()
