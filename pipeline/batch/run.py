"""A batch run: inputs → chunks → scorer → parts, the manifest after each, errors and collection.

Chunks are scored ahead (``workers + 1`` in flight) but written in order, so part ``n`` is always
the same rows and errors come out in input order; the manifest is saved after each part and a crash
point follows it (``MLOPS_CRASH_AT``, ``pipeline.faults``), which the resume tests kill at.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import pyarrow as pa

from pipeline.batch import reader
from pipeline.batch.manifest import ERRORS, ERRORS_DIR, MANIFEST, Manifest
from pipeline.batch.scoring import PREDICTION, ModelInfo, Scored, Shape, table_rows
from pipeline.batch.writer import part_name, remove_leftovers, write_atomic, write_part
from pipeline.errors import MlopsError
from pipeline.faults import crash_point
from pipeline.runtime import Model
from pipeline.runtime.jsonio import dumps

EVENT_ROWS = 100  # rows per collected event: what one /score request of a batch client would carry
READ_AHEAD = 1  # chunks decoded ahead by the reading thread (each one more in memory: ~17 MB at 20 features)


class Scorer(Protocol):
    def submit(self, table: pa.Table) -> Any: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def start(self, total_rows: int | None) -> None: ...

    def chunk(self, rows_in: int, rows_out: int, errors: int, skipped: bool) -> None: ...


@dataclass
class Collect:
    """Where and how to record scored rows as a deployment's collected events."""

    data_dir: Path
    endpoint: str
    deployment: str
    sampling_rate: float = 1.0
    rolling_rate: str = "hour"


@dataclass
class Options:
    sources: list[reader.Source]
    output: Path
    output_format: str = "parquet"
    chunk_rows: int | None = None
    id_column: str | None = None
    keep_columns: list[str] = field(default_factory=list)
    keep_all: bool = False
    overwrite: bool = False
    resume: bool = False
    max_errors: int = 0
    timeout: float | None = None
    collect: Collect | None = None


@dataclass
class Summary:
    model: str
    output: str
    rows_in: int = 0
    rows_out: int = 0
    errors: int = 0
    chunks: int = 0
    chunks_skipped: int = 0
    seconds: float = 0.0
    error_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        rate = self.rows_in / self.seconds if self.seconds > 0 else 0.0
        return {"model": self.model, "output": self.output, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "errors": self.errors, "chunks": self.chunks, "chunks_skipped": self.chunks_skipped,
                "seconds": round(self.seconds, 3), "rows_per_second": round(rate, 1), "error_file": self.error_file}


class TooManyErrors(MlopsError):
    pass


def plan_columns(model_columns: list[str] | None, names: list[str], options: Options, where: str
                 ) -> tuple[list[str], list[str]]:
    """(feature columns in the input's order, columns kept beside the predictions); one MlopsError naming
    the file and every missing or extra column."""
    extras = ([options.id_column] if options.id_column else []) + list(options.keep_columns)
    absent = [name for name in extras if name not in names]
    if model_columns is not None:
        missing = [name for name in model_columns if name not in names] + absent
        extra = [] if options.keep_all else [n for n in names if n not in model_columns and n not in extras]
        features = [name for name in names if name in model_columns]
    else:
        missing, extra = absent, []
        features = [name for name in names if name not in extras]
    if missing or extra:
        problems = [f"{label} {found}" for label, found in (("missing", missing), ("extra", extra)) if found]
        hint = " (keep extra columns with --keep-columns, --id-column or --keep-all)" if extra else ""
        expected = f"the model's {model_columns}" if model_columns is not None else "the columns asked for"
        raise MlopsError(f"{where}: columns do not match {expected}: {'; '.join(problems)}{hint}")
    kept = list(names) if options.keep_all else extras
    return features, kept


def prepare_output(options: Options) -> Manifest | None:
    """The manifest to resume from, after refusing to overwrite without --overwrite."""
    folder = options.output
    if folder.exists() and not folder.is_dir():
        raise MlopsError(f"--output {folder} is a file; name a folder for the parts")
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)
    previous = Manifest.load(folder)
    ours = [p for p in folder.iterdir() if p.name.startswith("part-") or p.name in (MANIFEST, ERRORS, ERRORS_DIR)]
    if options.resume and previous is not None:
        return previous
    if ours and not options.overwrite:
        raise MlopsError(f"{folder} already holds a batch output; pass --overwrite to replace it "
                         f"or --resume to finish it")
    for path in ours:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return None


def _input_digests(sources: list[reader.Source]) -> dict[str, str | None]:
    return {s.path: (None if s.stdin else reader.sha256(s.path)) for s in sources}


def _lineage(info: ModelInfo, inputs: dict[str, str | None], scored_at: str) -> dict[str, Any]:
    return {"model": info.name, "version": info.version, "digest": info.digest, "flavor": info.flavor,
            "endpoint": f"{info.endpoint}/{info.deployment}" if info.endpoint else None, "scored_at": scored_at,
            "inputs": inputs}


def run(info: ModelInfo, describe: Callable[[], Model | Shape], scorer: Scorer, options: Options,
        reporter: Reporter, stdin: IO[bytes] | None = None) -> Summary:
    """Score every input into ``options.output``; TooManyErrors past ``max_errors`` (the parts so far are kept).

    ``describe`` returns the model (or its Shape), waiting for it to load; meanwhile the inputs are hashed
    and the first Parquet input is read ahead, in threads (ModelLoadError, if it does not load, before
    anything in ``options.output`` is touched)."""
    started = time.monotonic()
    window = getattr(scorer, "workers", 1) + 1  # chunks in flight: each worker busy, one read ahead
    hashing = ThreadPoolExecutor(1, thread_name_prefix="mlops-batch-hash")
    digests = hashing.submit(_input_digests, options.sources)
    hashing.shutdown(wait=False)
    first = options.sources[0]
    first_names = reader.schema_names(first)
    resumed = Manifest.load(options.output) if options.resume else None
    early = None
    if first.format == "parquet" and not first.stdin:  # its chunks need nothing from the model: read them now
        early_rows = options.chunk_rows or (resumed.chunk_rows if resumed else None) \
            or reader.default_chunk_rows(len(first_names) or 20)
        early = (early_rows, reader.read_ahead(reader.chunks(first, early_rows, []), READ_AHEAD))
    model = describe()
    previous = prepare_output(options)
    scored_at = previous.lineage["scored_at"] if previous else datetime.now(UTC).isoformat(timespec="seconds")
    lineage = _lineage(info, digests.result(), scored_at)
    chunk_rows = options.chunk_rows or (previous.chunk_rows if previous else None) \
        or reader.default_chunk_rows(len(first_names) or len(model.columns or []) or 20)
    if previous is not None:
        previous.check_resumable(lineage, chunk_rows, options.output_format, options.output)
    manifest = previous or Manifest(lineage, chunk_rows, options.output_format)
    summary = Summary(f"{info.name}:{info.version}", str(options.output))
    reporter.start(_total_rows(options.sources))
    collector = _collector(info, options.collect)
    errors_dir = options.output / ERRORS_DIR
    pending: deque[tuple[str, int, int, pa.Table | None, list[str], list[str], Any]] = deque()
    number = 0

    def finish_one() -> None:
        chunk, index, part_number, table, features, kept, future = pending.popleft()
        if table is None:  # done in the run being resumed
            entry = manifest.chunks[chunk]
            summary.chunks_skipped += 1
            summary.rows_in += entry["rows_in"]
            summary.rows_out += entry["rows_out"]
            summary.errors += entry["errors"]
            reporter.chunk(entry["rows_in"], entry["rows_out"], entry["errors"], True)
        else:
            try:
                scored: Scored = future.result(timeout=options.timeout)
            except TimeoutError:
                raise MlopsError(f"{chunk}: not scored within --timeout {options.timeout} s") from None
            except BrokenExecutor as error:
                raise MlopsError(f"a worker process died while scoring {chunk} ({error}); what is written is kept: "
                                 "run again with --resume") from None
            name = part_name(part_number, options.output_format)
            out = _output_table(table, scored, kept)
            if scored.errors:
                errors_dir.mkdir(exist_ok=True)
                source = chunk.rsplit("#", 1)[0]
                lines = [dumps({"file": source, "row": index * chunk_rows + row + 1, "chunk": chunk,
                                "message": message}) + b"\n" for row, message in scored.errors]
                write_atomic(errors_dir / f"{name}.jsonl", b"".join(lines))
            if out.num_rows:  # a chunk whose every row failed has no part (an empty one would have no types)
                write_part(options.output / name, out, options.output_format, lineage)
            manifest.chunks[chunk] = {"part": name if out.num_rows else None, "rows_in": table.num_rows,
                                      "rows_out": out.num_rows, "errors": len(scored.errors), "state": "done"}
            manifest.save(options.output)
            crash_point("batch.part")
            if collector is not None:
                _collect(collector, table.select(features), scored, model)
            summary.rows_in += table.num_rows
            summary.rows_out += out.num_rows
            summary.errors += len(scored.errors)
            reporter.chunk(table.num_rows, out.num_rows, len(scored.errors), False)
        summary.chunks += 1
        if 0 <= options.max_errors < summary.errors:
            _write_errors(options.output)
            raise TooManyErrors(f"{summary.errors} row(s) failed, more than --max-errors {options.max_errors}; "
                                f"see {options.output / ERRORS} (the {summary.chunks} chunk(s) scored so far are "
                                f"written; fix the rows and run again with --overwrite)")

    try:
        for source in options.sources:
            names = reader.schema_names(source)
            text = list(model.columns or names) if source.format == "csv" else []
            plan: tuple[list[str], list[str]] | None = None
            if early is not None and source is first and early[0] == chunk_rows:
                tables = early[1]
            else:
                tables = reader.read_ahead(reader.chunks(source, chunk_rows, text, stdin), READ_AHEAD)
            for index, table in tables:
                chunk = Manifest.chunk_id(source.path, index)
                if plan is None:
                    plan = plan_columns(model.columns, table.column_names, options, source.path)
                features, kept = plan
                if manifest.done(chunk):
                    pending.append((chunk, index, number, None, features, kept, None))
                else:
                    pending.append((chunk, index, number, table, features, kept,
                                    scorer.submit(table.select(features))))
                number += 1
                while len(pending) >= window:
                    finish_one()
        while pending:
            finish_one()
    finally:
        scorer.close()
        if collector is not None:
            collector.close()
    raw = getattr(stdin, "raw", stdin)  # the hashing reader, under a buffered one
    if isinstance(raw, reader.HashingReader):
        manifest.lineage["inputs"][reader.STDIN] = "sha256:" + raw.digest.hexdigest()
    summary.error_file = _write_errors(options.output)
    manifest.finished = True
    manifest.save(options.output)
    summary.seconds = time.monotonic() - started
    return summary


def _output_table(table: pa.Table, scored: Scored, kept: list[str]) -> pa.Table:
    rows = scored.rows
    base = table.select(kept)
    if rows is not None:
        base = base.take(pa.array(rows, pa.int64()))
    columns: dict[str, Any] = {name: base[name] for name in kept}
    for name, values in scored.columns.items():
        if name in columns:
            raise MlopsError(f"the input has a column {name!r}, which the predictions are named; rename it")
        columns[name] = _arrow(values)
    if not scored.columns:  # no row scored (the part is not written)
        columns[PREDICTION] = pa.nulls(base.num_rows)
    return pa.table(columns)


def _arrow(values: np.ndarray) -> pa.Array:
    """An Arrow array of predictions; numbers are wrapped as they are, because ``pa.array`` imports pandas to
    check its argument (0.3 s and ~90 MB in a parent process whose workers score)."""
    if values.ndim == 1 and values.dtype.kind in "iuf":
        values = np.ascontiguousarray(values)
        return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])
    return pa.array(values.tolist()) if values.ndim > 1 else pa.array(values)


def _write_errors(folder: Path) -> str | None:
    """_errors.jsonl: the chunks' error files in part order (each written with its part, so resume keeps it exact)."""
    parts = sorted((folder / ERRORS_DIR).glob("part-*.jsonl")) if (folder / ERRORS_DIR).is_dir() else []
    if not parts:
        (folder / ERRORS).unlink(missing_ok=True)
        return None
    write_atomic(folder / ERRORS, b"".join(path.read_bytes() for path in parts))
    return str(folder / ERRORS)


def _total_rows(sources: list[reader.Source]) -> int | None:
    if any(s.format != "parquet" or s.stdin for s in sources):
        return None
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(s.path).metadata.num_rows for s in sources)


def _collector(info: ModelInfo, collect: Collect | None):
    if collect is None:
        return None
    from pipeline.server.collector import Collector

    collector = Collector(collect.data_dir, endpoint=collect.endpoint, deployment=collect.deployment,
                          model=info.name, model_version=info.version, sampling_rate=collect.sampling_rate,
                          rolling_rate=collect.rolling_rate)
    collector.start()
    return collector


def _collect(collector: Any, features: pa.Table, scored: Scored, model: Model | Shape,
             sleep: Callable[[float], None] = time.sleep) -> None:
    """Scored rows as events of up to EVENT_ROWS rows each, sampled as the deployment samples requests."""
    if scored.rows is not None:
        features = features.take(pa.array(scored.rows, pa.int64()))
    predictions = scored.columns.get(PREDICTION)
    if predictions is None:
        return
    for start in range(0, features.num_rows, EVENT_ROWS):
        if not collector.sampled():
            continue
        part = features.slice(start, EVENT_ROWS)
        rows = table_rows(part)
        inputs = {"columns": model.columns, "data": rows} if model.columns else rows
        outputs = np.asarray(predictions[start:start + EVENT_ROWS]).tolist()
        collector.record("batch", 200, 0.0, inputs, outputs, None)
        while collector.depth > collector.max_queue // 2:  # let the writer catch up rather than drop
            collector.hand_over()
            sleep(0.01)
    collector.hand_over()
