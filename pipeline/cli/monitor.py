"""``mlops monitor ENDPOINT``: traffic, errors, latency and drift from the collected data."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from pipeline.cli.context import App, pass_app
from pipeline.cli.deploy import parse_duration
from pipeline.errors import ReferenceNotFound


@click.command()
@click.argument("endpoint")
@click.option("--deployment", help="Only this deployment.")
@click.option("--since", default="24h", show_default=True, help="How far back to look, like 15m, 24h.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def monitor(app: App, endpoint: str, deployment: str | None, since: str, fmt: str) -> None:
    """Report requests, error rate, latency percentiles and input drift against the model's baseline."""
    from pipeline.monitor.collected import read_events
    from pipeline.monitor.report import load_baseline, render_text, summarize
    from pipeline.spec.model import ModelRef

    spec = app.spec()
    if endpoint not in spec.endpoints:
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {app.file}")
    models = {ModelRef.parse(str(d.model)).name for d in spec.endpoints[endpoint].deployments.values()}
    baselines = [spec.models[m].baseline for m in sorted(models) if spec.models[m].baseline]
    baseline = load_baseline(spec.root / baselines[0]) if baselines else None
    start = datetime.now(UTC).timestamp() - parse_duration(since)
    events = read_events(app.state_dir() / "data", endpoint, deployment,
                         since=datetime.fromtimestamp(start, UTC))
    reports = summarize(events, baseline)
    if fmt == "json":
        click.echo(json.dumps({"endpoint": endpoint, "deployments": [r.to_dict() for r in reports]}, indent=2))
    else:
        click.echo(render_text(endpoint, reports))


COMMANDS = [monitor]
