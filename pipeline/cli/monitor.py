"""``mlops monitor ENDPOINT``: traffic, errors, latency and drift from the collected data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import ReferenceNotFound


@click.command()
@click.argument("endpoint")
@click.option("--deployment", help="Only this deployment.")
@click.option("--since", default="24h", show_default=True,
              help="Start of the window: a duration back from now (90m, 36h, 2d, 1w) or an ISO 8601 "
                   "date or time in UTC (2026-11-01, 2026-11-01T12:00).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_app
def monitor(app: App, endpoint: str, deployment: str | None, since: str, fmt: str) -> None:
    """Report requests, error rate, latency percentiles and input drift against the model's baseline."""
    from pipeline.monitor.collected import read_events
    from pipeline.monitor.report import load_baseline, render_text, summarize
    from pipeline.monitor.window import parse_since
    from pipeline.spec.model import ModelRef

    until = datetime.now(UTC)
    start = parse_since(since, until)
    spec = app.spec()
    if endpoint not in spec.endpoints:
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {app.file}")
    models = {ModelRef.parse(str(d.model)).name for d in spec.endpoints[endpoint].deployments.values()}
    baselines = [b for m in sorted(models) if (b := spec.models[m].baseline)]
    baseline = load_baseline(spec.root / baselines[0]) if baselines else None
    where = spec.endpoints[endpoint].target
    if spec.targets[where].kind.remote_collection:  # in the cluster's sink, read through the adapter
        from pipeline.cli.wiring import make_targets

        adapter: Any = make_targets(spec, app.state_dir())[where]
        events = adapter.collected(endpoint, deployment, since=start, until=until)
        if events.truncated:
            click.echo("warning: the collection sink sent only part of the window; narrow it with --since",
                       err=True)
    else:
        events = read_events(app.state_dir() / "data", endpoint, deployment, since=start, until=until)
    reports = summarize(events, baseline)
    if fmt == "json":
        click.echo(json.dumps({"endpoint": endpoint, "since": start.isoformat(), "until": until.isoformat(),
                               "files_read": events.files_read,
                               "deployments": [r.to_dict() for r in reports]}, indent=2))
    else:
        click.echo(render_text(endpoint, reports, start, until, events.files_read))


COMMANDS = [monitor]
