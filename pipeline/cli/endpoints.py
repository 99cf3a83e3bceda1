"""``mlops endpoints keys`` and ``mlops score``: call and secure what is deployed."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError, ReferenceNotFound


def _unknown(kind: str, name: str, known, where: str) -> ReferenceNotFound:
    """'no endpoint 'irs' in mlops.yaml; did you mean 'iris'?' (difflib), or the names there are."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"{kind}s: {', '.join(sorted(known)) or 'none'}"
    return ReferenceNotFound(f"no {kind} '{name}' in {where}; {hint}")


def _endpoint_target(app: App, name: str):
    from pipeline.cli.wiring import make_targets

    spec = app.spec()
    if name not in spec.endpoints:
        raise _unknown("endpoint", name, spec.endpoints, app.file)
    return make_targets(spec, app.state_dir())[spec.endpoints[name].target]


@click.group()
def endpoints() -> None:
    """Endpoint keys."""


@endpoints.command()
@click.argument("name")
@click.option("--regenerate", type=click.Choice(["primary", "secondary"]),
              help="Replace one key; the other stays valid, so callers switch without downtime.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def keys(app: App, name: str, regenerate: str | None, fmt: str) -> None:
    """Show (or rotate) the two keys callers send as `Authorization: Bearer <key>`."""
    target = _endpoint_target(app, name)
    if app.spec().endpoints[name].auth_mode != "key":
        raise MlopsError(f"endpoint '{name}' has auth_mode: none; it has no keys")
    values = target.rotate_key(name, regenerate) if regenerate else target.keys(name)
    if fmt == "json":
        click.echo(json.dumps(values, indent=2))
    else:
        for which, value in values.items():
            click.echo(f"{which:<10} {value}")
        if regenerate:
            click.echo(f"Regenerated the {regenerate} key; running services accept it within a second.", err=True)


@click.command()
@click.argument("name")
@click.option("--data", help='The request body, like \'{"data": [[5.1, 3.5, 1.4, 0.2]]}\'.')
@click.option("--file", "body_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file holding the request body.")
@click.option("--deployment", help="Send to this deployment, whatever the traffic split.")
@click.option("--route", default="/score", show_default=True, help="Path to call, like /v2/models/NAME/infer.")
@pass_app
def score(app: App, name: str, data: str | None, body_file: Path | None, deployment: str | None, route: str) -> None:
    """Send one scoring request to an endpoint (with its key) and print the answer."""
    import httpx

    if (data is None) == (body_file is None):
        raise MlopsError("give the request body with exactly one of --data or --file")
    body = data if data is not None else Path(str(body_file)).read_text()
    target = _endpoint_target(app, name)
    if deployment and deployment not in app.spec().endpoints[name].deployments:  # the router would say only '?'
        raise _unknown("deployment", deployment, app.spec().endpoints[name].deployments, f"endpoint '{name}'")
    url = target.url(name)
    if url is None:
        raise MlopsError(f"endpoint '{name}' is not deployed; run mlops apply")
    headers = {"content-type": "application/json"}
    if app.spec().endpoints[name].auth_mode == "key":
        headers["authorization"] = f"Bearer {target.keys(name)['primary']}"
    if deployment:
        headers["x-mlops-deployment"] = deployment
    try:
        response = httpx.post(url + route, content=body.encode(), headers=headers, timeout=30)
    except httpx.HTTPError as error:
        raise MlopsError(f"endpoint '{name}' at {url} did not answer: {error}") from None
    served_by = response.headers.get("x-mlops-deployment", "?")
    click.echo(response.text)
    click.echo(f"HTTP {response.status_code} from deployment {served_by}", err=True)
    if response.status_code >= 400:
        raise SystemExit(1)


COMMANDS = [endpoints, score]
