"""``mlops score-batch SOURCE``: score a table with a registered model version; options and printing only
(the work is ``pipeline.batch``)."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pipeline.cli.context import App, pass_app
from pipeline.errors import MlopsError


@click.command("score-batch")
@click.argument("source", metavar="SOURCE")
@click.option("--input", "input_", required=True, metavar="PATH|GLOB|DIR|-",
              help="A file, a glob (quote it), a folder of files, or - for standard input.")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="A folder for the parts.")
@click.option("--input-format", type=click.Choice(["csv", "parquet", "jsonl"]),
              help="The inputs' format (default: by extension; required for standard input).")
@click.option("--output-format", type=click.Choice(["parquet", "csv", "jsonl"]), default="parquet",
              show_default=True)
@click.option("--chunk-rows", type=click.IntRange(1), help="Rows per chunk (default: about 64 MB of features).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes scoring chunks, each loading the model once.")
@click.option("--via-endpoint", is_flag=True, help="Send chunks to the deployed endpoint's /score instead.")
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True,
              help="Requests in flight with --via-endpoint.")
@click.option("--id-column", help="An input column copied beside each prediction.")
@click.option("--keep-columns", default="", metavar="A,B", help="Input columns copied beside each prediction.")
@click.option("--keep-all", is_flag=True, help="Copy every input column beside the predictions.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run: skip the chunks already written.")
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True,
              help="Retries of a chunk (or request) that fails for a reason other than its rows.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=300.0, show_default=True,
              help="Seconds a request may take with --via-endpoint, or a chunk in --workers processes (a chunk "
                   "scored in this process is not interrupted).")
@click.option("--max-errors", type=int, default=0, show_default=True,
              help="Rows that may fail before the run fails (-1: any number, like Azure's error_threshold).")
@click.option("--collect", is_flag=True,
              help="Record scored rows as the deployment's collected events (its data_collector sampling).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: a summary on standard output at the end.")
@pass_app
def score_batch(app: App, source: str, input_: str, output: Path, input_format: str | None, output_format: str,
                chunk_rows: int | None, workers: int, via_endpoint: bool, concurrency: int, id_column: str | None,
                keep_columns: str, keep_all: bool, overwrite: bool, resume: bool, retries: int, timeout: float,
                max_errors: int, collect: bool, fmt: str) -> None:
    """Score a table (CSV, Parquet, JSON Lines) into a folder of Parquet parts with lineage.

    SOURCE is ENDPOINT[/DEPLOYMENT] (the version serving there now), NAME:VERSION, models:/NAME/VERSION
    or models:/NAME@ALIAS. Scoring runs the scoring service's runtime in this process (or --workers
    processes), or sends the rows to the endpoint with --via-endpoint.
    """
    from pipeline.batch import reader
    from pipeline.batch.run import Options, run
    from pipeline.batch.scoring import EndpointScorer, LocalScorer
    from pipeline.errors import ModelLoadError

    resolved = _resolve(app, source)
    info = resolved["info"]
    if via_endpoint and collect:
        raise MlopsError("--collect with --via-endpoint would record every row twice: the endpoint already collects "
                         "what it is sent (its data_collector)")
    if (via_endpoint or collect) and info.endpoint is None:
        raise MlopsError(f"--via-endpoint and --collect need SOURCE to be an endpoint of {app.file}, not {source!r}")
    options = Options(sources=reader.expand(input_, input_format), output=output, output_format=output_format,
                      chunk_rows=chunk_rows, id_column=id_column,
                      keep_columns=[c.strip() for c in keep_columns.split(",") if c.strip()], keep_all=keep_all,
                      overwrite=overwrite, resume=resume, max_errors=max_errors,
                      timeout=None if via_endpoint else timeout * max(1, 2 * workers))
    if collect:
        options.collect = _collect_into(app, resolved)
    scorer: Any = None
    try:
        if via_endpoint:
            model = info.load()  # only its column names: the endpoint scores
            describe = _already(model)
        else:
            scorer = LocalScorer(info, workers=workers, retries=retries)  # loading starts; run() waits for it
            describe = scorer.describe
    except ModelLoadError as error:
        raise MlopsError(f"cannot load {info.name}:{info.version}: {error}") from None
    if via_endpoint:
        scorer = EndpointScorer(resolved["url"], resolved["key"], model.columns, info.deployment if resolved["pinned"]
                                else None, concurrency=concurrency, retries=retries, timeout=timeout)
    stdin = None
    if any(s.stdin for s in options.sources):
        stdin = io.BufferedReader(reader.HashingReader(sys.stdin.buffer), buffer_size=1 << 20)
    how = f"via {resolved['url']}" if via_endpoint else f"{workers} worker(s)"
    click.echo(f"Scoring with {info.name}:{info.version} ({info.digest[:19]}, {how}) into {output}", err=True)
    reporter = RichReporter() if sys.stderr.isatty() and fmt == "text" else LineReporter()
    try:
        summary = run(info, describe, scorer, options, reporter, stdin)
    except ModelLoadError as error:
        scorer.close()
        raise MlopsError(f"cannot load {info.name}:{info.version}: {error}") from None
    finally:
        reporter.stop()
    if fmt == "json":
        click.echo(json.dumps(summary.to_json(), indent=2))
        return
    rate = summary.rows_in / summary.seconds if summary.seconds else 0.0
    click.echo(f"Scored {summary.rows_in} rows into {summary.rows_out} predictions in {summary.chunks} chunk(s) "
               f"({summary.chunks_skipped} resumed) in {summary.seconds:.1f} s ({rate:,.0f} rows/s)"
               + (f"; {summary.errors} row(s) failed: {summary.error_file}" if summary.errors else ""))


def _already(model: Any) -> Callable[[], Any]:
    """What run() calls for the model, when it is loaded already."""
    return lambda: model


def _resolve(app: App, source: str) -> dict[str, Any]:
    """The model version SOURCE names, materialized (verified) by the registry, and the endpoint's address."""
    from pipeline.apply.observe import served
    from pipeline.batch.scoring import ModelInfo
    from pipeline.cli.wiring import make_targets
    from pipeline.registry.base import derived_folder
    from pipeline.spec.model import ModelRef

    spec = app.spec()
    registry = app.registry()
    endpoint = deployment = url = key = None
    pinned = False
    head, _, rest = source.partition("/")
    if not source.startswith("models:/") and ":" not in source and head in spec.endpoints:
        target_name = spec.endpoints[head].target
        target = make_targets(spec, app.state_dir())[target_name]
        serving = {k: v for k, v in served(spec, {target_name: target}).items() if k.startswith(f"{head}/")}
        if rest:
            if f"{head}/{rest}" not in serving:
                raise MlopsError(f"no deployment {rest!r} serves on endpoint {head!r} now "
                                 f"(serving: {', '.join(sorted(serving)) or 'none; run mlops apply'})")
            key_name, pinned = f"{head}/{rest}", True
        else:
            if not serving:
                raise MlopsError(f"nothing serves on endpoint {head!r} now; run mlops apply")
            key_name = max(sorted(serving), key=lambda k: serving[k]["traffic"])
        endpoint, deployment = key_name.split("/", 1)
        ref = ModelRef.parse(serving[key_name]["model"])
        url = target.url(endpoint)
        if spec.endpoints[endpoint].auth_mode == "key" and url is not None:  # edge bundles: no URL, no keys here
            key = target.keys(endpoint).get("primary")
        resolved_target: Any = target
    else:
        try:
            ref = ModelRef.parse(source)
        except ValueError as error:
            raise MlopsError(f"{error}, or ENDPOINT[/DEPLOYMENT] of {app.file}") from None
        resolved_target = None
    version_number = ref.version
    if ref.alias:
        aliases = dict(registry.aliases(ref.name))
        if ref.alias not in aliases:
            raise MlopsError(f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {sorted(aliases) or 'none'})")
        version_number = aliases[ref.alias]
    version = registry.get(ref.name, version_number)
    model_dir = registry.materialize(ref.name, version.version)
    info = ModelInfo(ref.name, version.version, version.digest, version.flavor, str(model_dir),
                     _baseline(spec, ref.name, model_dir), endpoint, deployment, str(derived_folder(model_dir)))
    return {"info": info, "url": url, "key": key, "pinned": pinned, "target": resolved_target}


def _baseline(spec, name: str, model_dir: Path) -> str | None:
    """The model's baseline inside its registered folder, as the scoring service is given it (names the columns)."""
    relative = spec.baseline_in_folder(name)
    if relative is None:
        return None
    path = model_dir / relative
    return str(path) if path.is_file() else None


def _collect_into(app: App, resolved: dict[str, Any]):
    from pipeline.batch.run import Collect

    info = resolved["info"]
    deployment = app.spec().endpoints[info.endpoint].deployments.get(info.deployment)
    data_dir = getattr(resolved["target"], "data_dir", None)
    if deployment is None or not deployment.data_collector.enabled:
        raise MlopsError(f"deployment {info.endpoint}/{info.deployment} does not collect (no data_collector in "
                         f"{app.file}); --collect records what its data_collector would")
    if data_dir is None:
        raise MlopsError(f"--collect writes where the local target's services write; endpoint {info.endpoint} "
                         f"runs on another kind of target")
    settings = deployment.data_collector
    return Collect(Path(data_dir), info.endpoint, info.deployment, settings.sampling_rate, settings.rolling_rate)


class LineReporter:
    """Plain progress lines (not a terminal): one per chunk, on standard error."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.rows = self.done = self.failed = 0
        self.total: int | None = None

    def start(self, total_rows: int | None) -> None:
        self.total = total_rows

    def chunk(self, rows_in: int, rows_out: int, errors: int, skipped: bool) -> None:
        self.rows += rows_in
        self.done += 1
        self.failed += 1 if errors else 0
        rate = self.rows / max(time.monotonic() - self.started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        click.echo(f"chunk {self.done}{' (resumed)' if skipped else ''}: {self.rows}{of} rows, {rate:,.0f} rows/s, "
                   f"{self.failed} chunk(s) with errors", err=True)

    def stop(self) -> None:
        pass


class RichReporter:
    """A rich progress bar on a terminal: rows, rows/s, ETA, chunks done and with errors."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]} rows/s"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[chunks]}"),
                                 console=Console(stderr=True), transient=False)
        self.task: Any = None
        self.started = time.monotonic()
        self.rows = self.done = self.failed = 0

    def start(self, total_rows: int | None) -> None:
        self.progress.start()
        self.task = self.progress.add_task("score", total=total_rows, rate="-", chunks="")

    def chunk(self, rows_in: int, rows_out: int, errors: int, skipped: bool) -> None:
        self.rows += rows_in
        self.done += 1
        self.failed += 1 if errors else 0
        rate = self.rows / max(time.monotonic() - self.started, 1e-9)
        self.progress.update(self.task, advance=rows_in, rate=f"{rate:,.0f}",
                             chunks=f"{self.done} chunks, {self.failed} with errors")

    def stop(self) -> None:
        self.progress.stop()


COMMANDS = [score_batch]
