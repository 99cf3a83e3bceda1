"""``mlops validate`` and ``mlops schema``: check mlops.yaml, print the JSON Schema editors use."""

from __future__ import annotations

import json

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import SpecError


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def validate(app: App, fmt: str) -> None:
    """Check mlops.yaml: syntax, schema, references, traffic, paths and secrets.

    Exit code 0 when valid, 1 with every problem listed (file:line:column) when not.
    """
    try:
        spec = app.spec()
    except SpecError as error:
        if fmt == "json":
            click.echo(json.dumps({"valid": False, "problems": [
                {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
                for p in error.problems]}, indent=2))
        else:
            for problem in error.problems:
                click.secho(str(problem), err=True, fg="red")
            click.echo(f"{app.file}: {len(error.problems)} problem(s)", err=True)
        raise SystemExit(1) from None
    summary = {"models": len(spec.models), "environments": len(spec.environments),
               "targets": len(spec.targets), "endpoints": len(spec.endpoints),
               "deployments": len(spec.deployments())}
    if fmt == "json":
        click.echo(json.dumps({"valid": True, **summary}, indent=2))
    else:
        counts = ", ".join(f"{n} {k}" for k, n in summary.items())
        click.echo(f"{app.file} is valid: {counts}")


@click.command()
def schema() -> None:
    """Print the JSON Schema of mlops.yaml (draft 2020-12), for editors and other tools."""
    from pipeline.spec.schema import schema as load_schema

    click.echo(json.dumps(load_schema(), indent=2))


COMMANDS = [validate, schema]
