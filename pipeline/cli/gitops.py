"""``mlops init`` (scaffold a GitOps repository) and ``mlops comment`` (the sticky plan comment)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from importlib import resources
from pathlib import Path

import click

from pipeline.errors import MlopsError

GITIGNORE_ENTRY = ".mlops/"
# Written beside mlops.yaml, whose first line points the YAML language server at it by a relative
# path: it works offline, matches the mlops that scaffolded the repository, and is versioned with it.
SCHEMA_FILE = "mlops.schema.json"


def _templates():
    return resources.files("pipeline.gitops").joinpath("templates")


def _walk(node, prefix: str = ""):
    for item in node.iterdir():
        if item.is_dir():
            yield from _walk(item, f"{prefix}{item.name}/")
        elif not item.name.endswith((".pyc",)):
            yield f"{prefix}{item.name}", item


VERSION_MARK = b"@MLOPS_VERSION@"


def _pinned(text: bytes) -> bytes:
    """Workflows install exactly the mlops that wrote them: a CI run never upgrades behind a review."""
    from pipeline import __version__

    return text.replace(VERSION_MARK, __version__.encode())


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Scaffold a working repository: mlops.yaml, an example model, an environment, the workflows.

    Existing files are never overwritten; what is skipped is reported.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = [(name, item) for name, item in _walk(_templates() / "repo")]
    files += [(f".github/workflows/{name}", item) for name, item in _walk(_templates() / "workflows")]
    for name, item in sorted(files):
        target = directory / name
        if target.exists():
            click.echo(f"  skipped {name} (exists)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_pinned(item.read_bytes()))
        click.echo(f"  created {name}")
    gitignore = directory / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    if GITIGNORE_ENTRY in lines:
        click.echo("  skipped .gitignore (already ignores .mlops/)")
    else:
        with gitignore.open("a") as handle:
            if lines and not gitignore.read_text().endswith("\n"):
                handle.write("\n")
            handle.write(f"{GITIGNORE_ENTRY}\n")
        click.echo("  updated .gitignore (ignores .mlops/)")
    schema_file = directory / SCHEMA_FILE
    if schema_file.exists():
        click.echo(f"  skipped {SCHEMA_FILE} (exists; refresh it with mlops schema > {SCHEMA_FILE})")
    else:
        from pipeline.spec.schema import schema

        schema_file.write_text(json.dumps(schema(), indent=2) + "\n")  # what `mlops schema` prints
        click.echo(f"  created {SCHEMA_FILE}")
    enter = "" if directory.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(directory))} && "
    click.echo(f"Next: {enter}mlops validate && mlops plan")


def _pull_request_number() -> int | None:
    import json

    event = os.environ.get("GITHUB_EVENT_PATH")
    if event and Path(event).exists():
        number = json.loads(Path(event).read_text()).get("pull_request", {}).get("number")
        return int(number) if number else None
    return None


@click.command()
@click.option("--pr", "number", type=int, help="Pull request number (default: from GITHUB_EVENT_PATH).")
@click.option("--body-file", required=True, type=click.File("r"), help="The comment, or - for standard input.")
@click.option("--repository", envvar="GITHUB_REPOSITORY", help="OWNER/NAME (default: GITHUB_REPOSITORY).")
@click.option("--api-url", envvar="GITHUB_API_URL", default="https://api.github.com", show_default=True)
def comment(number: int | None, body_file, repository: str | None, api_url: str) -> None:
    """Create or update the one plan comment on a pull request (found by a hidden marker)."""
    from pipeline.gitops.github import GitHub

    number = number or _pull_request_number()
    if number is None:
        raise MlopsError("no pull request number: pass --pr N (or run in a pull_request workflow)")
    if not repository:
        raise MlopsError("no repository: pass --repository OWNER/NAME or set GITHUB_REPOSITORY")
    action, url = GitHub(os.environ.get("GITHUB_TOKEN", ""), repository, api_url).upsert_comment(
        number, body_file.read())
    click.echo(f"{action.capitalize()} the plan comment on #{number} {url}", err=True)
    sys.exit(0)


COMMANDS = [init, comment]
