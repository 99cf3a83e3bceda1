"""``mlops history`` and ``mlops rollback``: what served an endpoint, and how to go back — via git.

Rollback never changes live state behind git's back: it prints (or, with ``--write``, makes in
the working tree) the mlops.yaml change that pins the models and traffic of a ledger entry, to be
committed, reviewed and merged like any change. Values are replaced at their exact positions in
the file, so comments and formatting stay as they are.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import ReferenceNotFound

_PLAIN_SCALAR_END = re.compile(r"\s*(#.*)?$|[,}\]]")


def _ledger(app: App):
    from pipeline.apply.ledger import Ledger

    return Ledger(app.spec().registry_path())


@click.command()
@click.argument("endpoint", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def history(app: App, endpoint: str | None, fmt: str) -> None:
    """Every apply: when, from which commit, by whom, and what each deployment served after it."""
    entries = _ledger(app).entries(endpoint)
    if fmt == "json":
        click.echo(json.dumps([e.__dict__ | {"served": dict(e.served)} for e in entries], indent=2, default=dict))
        return
    if not entries:
        click.echo("No applies recorded yet.")
    for entry in entries:
        commit = (entry.commit or "no commit")[:10]
        click.echo(f"#{entry.id}  {entry.time}  {commit}  {entry.author or '?'}  {entry.outcome}  {entry.summary}")
        for key, served in sorted(entry.served.items()):
            if endpoint is None or key.startswith(f"{endpoint}/"):
                mirror = f", mirror {served.get('mirror')}%" if served.get("mirror") else ""
                click.echo(f"    {key:<24} {served.get('model'):<28} traffic {served.get('traffic', 0)}%{mirror}")


def _replace_scalar(lines: list[str], line: int, column: int, value: str) -> None:
    """Replace the YAML scalar that starts at (line, column) — 1-based — keeping the rest of the line."""
    text = lines[line - 1]
    start = column - 1
    if text[start] in "\"'":
        end = text.index(text[start], start + 1) + 1
    else:
        match = _PLAIN_SCALAR_END.search(text, start)
        end = match.start() if match else len(text)
    lines[line - 1] = text[:start] + value + text[end:]


def rollback_text(spec, text: str, entry, endpoint: str) -> tuple[str, list[str]]:
    """The mlops.yaml text that restores ``entry`` for ``endpoint``, and what could not be restored."""
    lines = text.split("\n")
    notes = []
    desired = spec.endpoints[endpoint]
    served = {key.split("/", 1)[1]: value for key, value in entry.served.items() if key.startswith(f"{endpoint}/")}
    edits = []
    for deployment, then in served.items():
        if deployment not in desired.deployments:
            notes.append(f"deployment '{deployment}' served {then['model']} then but is no longer in the file; "
                         "add it back by hand")
            continue
        if str(desired.deployments[deployment].model) != then["model"]:
            edits.append((f"endpoints.{endpoint}.deployments.{deployment}.model", then["model"]))
        if desired.traffic.get(deployment, 0) != then.get("traffic", 0):
            if f"endpoints.{endpoint}.traffic.{deployment}" in spec.value_positions:
                edits.append((f"endpoints.{endpoint}.traffic.{deployment}", str(then.get("traffic", 0))))
            else:
                notes.append(f"set traffic of '{deployment}' to {then.get('traffic', 0)}% by hand")
    for deployment in desired.deployments:
        if deployment not in served:
            notes.append(f"deployment '{deployment}' did not exist then; remove it or set its traffic to 0")
    # right to left within a line, so earlier columns stay valid
    for path, value in sorted(edits, key=lambda e: spec.value_positions[e[0]], reverse=True):
        line, column = spec.value_positions[path]
        _replace_scalar(lines, line, column, value)
    return "\n".join(lines), notes


@click.command()
@click.argument("endpoint")
@click.option("--to", "reference", required=True, metavar="ENTRY|COMMIT",
              help="A ledger entry number (see mlops history) or a commit SHA (prefix).")
@click.option("--write", is_flag=True, help="Apply the change to mlops.yaml in the working tree.")
@pass_app
def rollback(app: App, endpoint: str, reference: str, write: bool) -> None:
    """Show the mlops.yaml change that restores what ENDPOINT served at a ledger entry or commit."""
    spec = app.spec()
    if endpoint not in spec.endpoints:
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {app.file}")
    entry = _ledger(app).find(reference)
    if entry is None or endpoint not in entry.endpoints():
        raise ReferenceNotFound(f"no ledger entry '{reference}' for endpoint '{endpoint}'; "
                                f"see mlops history {endpoint}")
    path = Path(app.file)
    text = path.read_text()
    new_text, notes = rollback_text(spec, text, entry, endpoint)
    diff = "".join(difflib.unified_diff(text.splitlines(True), new_text.splitlines(True),
                                        f"a/{path.name}", f"b/{path.name}"))
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if not diff:
        click.echo(f"{app.file} already matches entry #{entry.id} for endpoint {endpoint}.")
        return
    click.echo(diff, nl=False)
    if write:
        path.write_text(new_text)
        click.echo(f"Wrote {app.file}; commit it and open a pull request to roll back.", err=True)
    else:
        click.echo("Run again with --write to change mlops.yaml, then commit and merge it.", err=True)


COMMANDS = [history, rollback]
