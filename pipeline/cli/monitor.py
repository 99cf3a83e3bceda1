"""``mlops monitor ENDPOINT``: traffic, errors, latency, predictions and drift from the collected data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError, ReferenceNotFound


@click.command()
@click.argument("endpoint")
@click.option("--deployment", help="Only this deployment (one of the endpoint's).")
@click.option("--since", default="24h", show_default=True,
              help="Start of the window: a duration back from now (90m, 36h, 2d, 1w) or an ISO 8601 "
                   "date or time in UTC (2026-11-01, 2026-11-01T12:00).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True,
              help="html: one self-contained file with plots (needs the 'html' extra: matplotlib).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where --format html writes [default: monitor-ENDPOINT.html].")
@click.option("--fail-on", "fail_on",
              help="Exit 1 when a threshold is crossed, e.g. 'drift>0.2,error_rate>1%,p99>250ms' "
                   "(drift: the largest PSI of a judged feature).")
@pass_app
def monitor(app: App, endpoint: str, deployment: str | None, since: str, fmt: str, out: Path | None,
            fail_on: str | None) -> None:
    """Report requests, errors (4xx/5xx), latency percentiles, predictions per version and input drift
    of each version against the baseline of the model it serves."""
    from pipeline.monitor.collected import read_events
    from pipeline.monitor.drift import DriftPolicy
    from pipeline.monitor.gate import crossed, parse_fail_on, unmeasured
    from pipeline.monitor.report import load_baseline, render_text, summarize
    from pipeline.monitor.window import parse_since
    from pipeline.spec.model import ModelRef

    thresholds = parse_fail_on(fail_on) if fail_on is not None else []
    until = datetime.now(UTC)
    start = parse_since(since, until)
    spec = app.spec()
    if endpoint not in spec.endpoints:
        raise ReferenceNotFound(f"no endpoint '{endpoint}' in {app.file}")
    declared = spec.endpoints[endpoint].deployments
    if deployment is not None and deployment not in declared:
        raise ReferenceNotFound(f"--deployment '{deployment}': endpoint '{endpoint}' has "
                                f"{', '.join(sorted(declared)) or 'no deployments'}")
    baselines = {}
    for name in sorted({ModelRef.parse(str(d.model)).name for d in declared.values()}):
        model = spec.models.get(name)
        if model is not None and model.baseline:
            try:
                policy = DriftPolicy(**model.drift)
            except TypeError as error:
                raise MlopsError(f"{spec.where(f'models.{name}.drift')}: {error}") from None
            baselines[name] = load_baseline(spec.root / model.baseline, policy, model.baseline)
    where = spec.endpoints[endpoint].target
    events: Any
    if spec.targets[where].kind.remote_collection:  # in the cluster's sink, read through the adapter
        from pipeline.cli.wiring import make_targets

        adapter: Any = make_targets(spec, app.state_dir())[where]
        events = adapter.collected(endpoint, deployment, since=start, until=until)
        if events.truncated:
            click.echo("warning: the collection sink sent only part of the window; narrow it with --since",
                       err=True)
    else:
        events = read_events(app.state_dir() / "data", endpoint, deployment, since=start, until=until,
                             ordered=False)  # the report does not depend on the order
    reports = summarize(events, baselines)
    summary = {"endpoint": endpoint, "since": start.isoformat(timespec="seconds"),
               "until": until.isoformat(timespec="seconds"),
               "files_read": events.files_read, "skipped_lines": events.skipped}
    if fmt == "json":
        click.echo(json.dumps({**summary, "deployments": [r.to_dict() for r in reports]}, indent=2))
    elif fmt == "html":
        from pipeline.monitor.html import render_html

        path = out or Path(f"monitor-{endpoint}.html")
        try:
            path.write_text(render_html(endpoint, reports, summary), encoding="utf-8")
        except OSError as error:
            raise MlopsError(f"--out {path}: {error.strerror}") from None
        click.echo(f"wrote {path}")
    else:
        click.echo(render_text(endpoint, reports, start, until, events.files_read, events.skipped))
    for warning in unmeasured(reports, thresholds):
        click.echo(f"warning: {warning}", err=True)
    failures = crossed(reports, thresholds)
    if failures:
        raise MlopsError("; ".join(failures))


COMMANDS = [monitor]
