"""``mlops history`` and ``mlops rollback``: what served an endpoint, and how to go back — via git.

Rollback never changes live state behind git's back: it prints (or, with ``--write``, makes in
the working tree) the mlops.yaml change that pins the models and traffic of a ledger entry, to be
committed, reviewed and merged like any change. The spec editor changes values at their exact
positions, so comments and formatting stay; the loader checks the result before it is shown.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.apply.ledger import Entry
from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError, ReferenceNotFound, SpecError
from pipeline.spec.editor import Editor


def _ledger(app: App):
    return app.state_store().ledger()


def _promotions(app: App, entries: list[Entry]) -> dict[int, list[str]]:
    """Per entry, the ``Mlops-Promote`` trailers its commit brought (``mlops promote`` writes them): git is
    asked once per applied commit, and only this working copy's git, so a commit it lacks shows none."""
    from pipeline.gitops.promote import promotions_of

    root = Path(app.file).resolve().parent
    by_commit = {commit: promotions_of(root, commit) for commit in {e.commit for e in entries if e.commit}}
    return {e.id: by_commit.get(e.commit, []) if e.commit and e.outcome == "ok" else [] for e in entries}


@click.command()
@click.argument("endpoint", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def history(app: App, endpoint: str | None, fmt: str) -> None:
    """Every apply: when, from which commit, by whom, and what each deployment served after it."""
    entries = _ledger(app).entries(endpoint)
    promotions = _promotions(app, entries)
    if fmt == "json":
        click.echo(json.dumps([e.__dict__ | {"served": dict(e.served), "promotions": promotions[e.id]}
                               for e in entries], indent=2, default=dict))
        return
    if not entries:
        click.echo("No applies recorded yet.")
    for entry in entries:
        commit = (entry.commit or "no commit")[:10]
        click.echo(f"#{entry.id}  {entry.time}  {commit}  {entry.author or '?'}  {entry.outcome}  {entry.summary}")
        for promotion in promotions[entry.id]:
            click.echo(f"    promoted {promotion}")
        for key, served in sorted(entry.served.items()):
            if endpoint is None or key.startswith(f"{endpoint}/"):
                mirror = f", mirror {served.get('mirror')}%" if served.get("mirror") else ""
                click.echo(f"    {key:<24} {served.get('model'):<28} traffic {served.get('traffic', 0)}%{mirror}")


_MIN_SHA = 4  # git's shortest abbreviation; shorter digits are only ever entry numbers


def _git_commit(root: Path) -> Callable[[str], str | None]:
    """A lookup of a SHA prefix in the repository holding ``root`` (None outside git)."""
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        repo = None

    def lookup(reference: str) -> str | None:
        if repo is None:
            return None
        try:
            return repo.git.rev_parse("--verify", "--quiet", f"{reference}^{{commit}}")
        except git.GitCommandError:  # unknown or ambiguous
            return None

    return lookup


def resolve_reference(reference: str, entries: list[Entry], endpoint: str,
                      commit_of: Callable[[str], str | None]) -> Entry:
    """The ledger entry ``reference`` means: ``entry:N``, ``commit:SHA``, or a bare one.

    A bare reference is read as a commit first when it is a SHA prefix of a commit in the ledger or
    the repository; if it is also an entry number it is refused naming both meanings.
    """
    kind, _, value = reference.partition(":") if ":" in reference else ("", "", reference)
    if kind not in ("", "entry", "commit"):
        raise ReferenceNotFound(f"'{reference}' is neither entry:N nor commit:SHA")
    by_id = ({e.id: e for e in entries}.get(int(value)) if value.isdigit() and kind != "commit" else None)
    sha = None
    if kind != "entry" and len(value) >= _MIN_SHA and all(c in "0123456789abcdefABCDEF" for c in value):
        applied = {e.commit for e in entries if e.commit and e.commit.startswith(value.lower())}
        if len(applied) > 1:
            raise ReferenceNotFound(f"commit prefix '{value}' matches {len(applied)} applied commits; give more digits")
        sha = next(iter(applied), None) or commit_of(value)
    if kind == "entry" or (kind == "" and sha is None):
        if by_id is None:
            raise ReferenceNotFound(f"no ledger entry or commit '{reference}'; see mlops history {endpoint}")
        return by_id
    if kind == "" and by_id is not None:
        raise ReferenceNotFound(f"'{reference}' is both ledger entry #{by_id.id} and commit {(sha or '')[:12]}; "
                                f"say --to entry:{value} or --to commit:{value}")
    if sha is None:
        raise ReferenceNotFound(f"no commit '{value}' in the ledger or the repository")
    served = [e for e in entries if e.commit == sha and e.outcome == "ok" and endpoint in e.endpoints()]
    if not served:
        raise ReferenceNotFound(f"commit {sha[:12]} was never applied to endpoint '{endpoint}'; "
                                f"see mlops history {endpoint}")
    return served[-1]


def rollback_edits(spec, entry: Entry, endpoint: str) -> tuple[list[tuple[tuple[str, ...], Any]], list[str]]:
    """The (path, value) edits that make ``endpoint`` serve what ``entry`` recorded, and notes for the user.

    Models are pinned to the versions served then, and traffic and mirror percentages set to what
    they were; deployments that did not exist then get 0 %, so the split still adds up.
    """
    desired = spec.endpoints[endpoint]
    served = {key.split("/", 1)[1]: value for key, value in entry.served.items() if key.startswith(f"{endpoint}/")}
    base = ("endpoints", endpoint)
    edits: list[tuple[tuple[str, ...], Any]] = []
    notes: list[str] = []
    for deployment, then in sorted(served.items()):
        if deployment not in desired.deployments:
            notes.append(f"deployment '{deployment}' served {then['model']} at entry #{entry.id} but is no longer "
                         f"in {spec.file}; add it back by hand")
            continue
        if str(desired.deployments[deployment].model) != then["model"]:
            edits.append((base + ("deployments", deployment, "model"), then["model"]))
    for deployment in sorted(desired.deployments):
        then = served.get(deployment, {})
        if not then and (desired.traffic.get(deployment) or desired.mirror_traffic.get(deployment)):
            notes.append(f"deployment '{deployment}' did not exist at entry #{entry.id}; its traffic is set to 0")
        for field, now, was in (("traffic", desired.traffic, then.get("traffic", 0)),
                                ("mirror_traffic", desired.mirror_traffic, then.get("mirror", 0))):
            if now.get(deployment, 0) != was:
                edits.append((base + (field, deployment), was))
    return edits, notes


@click.command()
@click.argument("endpoint")
@click.option("--to", "reference", required=True, metavar="N|SHA|entry:N|commit:SHA",
              help="A ledger entry number (see mlops history) or a commit SHA (prefix, 4+ digits).")
@click.option("--write", is_flag=True, help="Apply the change to mlops.yaml in the working tree.")
@pass_app
def rollback(app: App, endpoint: str, reference: str, write: bool) -> None:
    """Show the mlops.yaml change that restores what ENDPOINT served at a ledger entry or commit."""
    spec = app.spec()
    if endpoint not in spec.endpoints:
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {app.file}")
    entry = resolve_reference(reference, _ledger(app).entries(), endpoint, _git_commit(spec.root))
    if endpoint not in entry.endpoints():
        raise ReferenceNotFound(f"ledger entry #{entry.id} did not serve endpoint '{endpoint}'; "
                                f"see mlops history {endpoint}")
    path = Path(app.file)
    text = path.read_text()
    edits, notes = rollback_edits(spec, entry, endpoint)
    new_text, diff = edit_checked(path, text, edits, f"rolling back to entry #{entry.id}", notes)
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


def edit_checked(path: Path, text: str, edits: list[tuple[tuple[str, ...], Any]], action: str,
                 notes: list[str] | None = None) -> tuple[str, str]:
    """``text`` with ``edits`` made by the spec editor, and its unified diff; refused when the loader rejects
    the result (mlops never writes an invalid mlops.yaml). Shared by rollback and promote."""
    from pipeline.spec.loader import load

    editor = Editor(text)
    for field, value in edits:
        editor.set(field, value)
    try:
        load(path, text=editor.text, name=f"{path.name} (edited)")
    except SpecError as error:
        why = "".join(f"\n  {problem}" for problem in error.problems)
        hints = "".join(f"\n  note: {note}" for note in notes or [])
        raise MlopsError(f"{action} would make {path.name} invalid; nothing written:{why}{hints}") from None
    diff = "".join(difflib.unified_diff(text.splitlines(True), editor.text.splitlines(True),
                                        f"a/{path.name}", f"b/{path.name}"))
    return editor.text, diff


COMMANDS = [history, rollback]
