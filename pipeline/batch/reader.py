"""Inputs: which files, in which format, read as a stream of fixed-size chunks.

Chunking is deterministic — chunk ``i`` of a file always holds rows ``[i·n, (i+1)·n)`` whatever
the reader's own block sizes — so a chunk id (file + index) names the same rows in every run and
``--resume`` can skip the finished ones. Nothing reads a whole file: CSV and JSON Lines stream by
blocks, Parquet by row group (``iter_batches``).

CSV feature columns are read as text and cast per chunk, so one row of the wrong type fails only
that row (a typed CSV reader would stop the whole stream at it).
"""

from __future__ import annotations

import glob
import hashlib
import io
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa

from pipeline.errors import MlopsError

FORMATS = ("csv", "parquet", "jsonl")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
             ".ndjson": "jsonl", ".json": "jsonl"}
STDIN = "-"
CHUNK_BYTES = 64 * 1024 * 1024
_HASH_BLOCK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """One input: a file path, or ``-`` for standard input."""

    path: str
    format: str

    @property
    def stdin(self) -> bool:
        return self.path == STDIN


def expand(pattern: str, fmt: str | None) -> list[Source]:
    """The inputs ``--input`` names (a file, a glob, a folder of files, or ``-``), sorted, with their format."""
    if pattern == STDIN:
        if fmt is None:
            raise MlopsError("reading standard input needs --input-format (csv, parquet or jsonl)")
        return [Source(STDIN, fmt)]
    path = Path(pattern)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and (fmt or p.suffix.lower() in _SUFFIXES)
                       and not p.name.startswith((".", "_")))
    elif path.is_file():
        paths = [path]
    else:
        paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise MlopsError(f"no input files match {pattern!r}")
    return [Source(str(p), fmt or _format_of(p)) for p in paths]


def _format_of(path: Path) -> str:
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise MlopsError(f"{path}: cannot tell the format from the extension; pass --input-format csv|parquet|jsonl")
    return found


def sha256(path: str) -> str:
    """The digest of an input file, recorded as lineage (and checked by --resume)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


class HashingReader(io.RawIOBase):
    """Standard input passed through while hashed: its digest is known once it is read to the end."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        self.digest.update(data)
        buffer[:len(data)] = data
        return len(data)


def schema_names(source: Source) -> list[str]:
    """The column names of an input without reading its rows (standard input: not known until read)."""
    if source.stdin:
        return []
    if source.format == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(source.path).schema_arrow.names)
    if source.format == "csv":
        import csv

        with open(source.path, newline="") as handle:
            return next(csv.reader(handle), [])
    with open(source.path, "rb") as handle:
        first = handle.readline()
    from pipeline.runtime.jsonio import loads

    row = loads(first) if first.strip() else {}
    return list(row) if isinstance(row, dict) else []


def default_chunk_rows(width: int) -> int:
    """About 64 MB per chunk once it is numbers in memory (8 bytes a value, and room for copies)."""
    return max(1_000, min(1_000_000, CHUNK_BYTES // (max(width, 1) * 8 * 4)))


def batches(source: Source, text_columns: list[str], stdin: IO[bytes] | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of one input, in the reader's own sizes."""
    stream: Any = stdin if source.stdin else source.path
    if source.format == "parquet":
        import pyarrow.parquet as pq

        if source.stdin:  # Parquet needs seeking: standard input is spooled to a temporary file first
            import tempfile

            spool = tempfile.TemporaryFile()
            while block := stream.read(_HASH_BLOCK):
                spool.write(block)
            spool.seek(0)
            stream = spool
        # without pre-buffering a row group is read column by column: half the peak memory, as fast
        yield from pq.ParquetFile(stream, pre_buffer=False, buffer_size=1 << 20).iter_batches(batch_size=16_384)
    elif source.format == "csv":
        import pyarrow.csv as pcsv

        delimiter = "\t" if source.path.endswith(".tsv") else ","
        convert = pcsv.ConvertOptions(column_types={name: pa.string() for name in text_columns})
        try:
            reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=8 << 20),
                                   parse_options=pcsv.ParseOptions(delimiter=delimiter), convert_options=convert)
            yield from reader
        except pa.ArrowInvalid as error:
            raise MlopsError(f"{source.path}: not a readable CSV file: {error}") from None
    else:
        yield from _jsonl_batches(source, stream)


def _jsonl_batches(source: Source, stream: Any, lines_per_block: int = 50_000) -> Iterator[pa.RecordBatch]:
    """JSON Lines by blocks of lines; a block pyarrow cannot type (mixed types) is read value by value as text."""
    import pyarrow.json as pjson

    handle = open(stream, "rb") if isinstance(stream, str) else stream
    try:
        while True:
            lines = [line for line in (handle.readline() for _ in range(lines_per_block)) if line.strip()]
            if not lines:
                return
            try:
                table = pjson.read_json(io.BytesIO(b"".join(lines)))
            except pa.ArrowInvalid:
                table = _jsonl_as_text(source, lines)
            yield from table.to_batches()
            if len(lines) < lines_per_block:
                return
    finally:
        if isinstance(stream, str):
            handle.close()


def _jsonl_as_text(source: Source, lines: list[bytes]) -> pa.Table:
    from pipeline.runtime.jsonio import loads

    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = loads(line)
        except ValueError as error:
            raise MlopsError(f"{source.path}: line {number} of a block is not JSON: {error}") from None
        rows.append(row if isinstance(row, dict) else {})
    names = list(dict.fromkeys(name for row in rows for name in row))
    return pa.table({name: pa.array([None if row.get(name) is None else str(row[name]) for row in rows],
                                    pa.string()) for name in names})


def chunks(source: Source, chunk_rows: int, text_columns: list[str],
           stdin: IO[bytes] | None = None) -> Iterator[tuple[int, pa.Table]]:
    """(index, table of exactly ``chunk_rows`` rows — fewer for the last) of one input, in order."""
    pending: list[pa.RecordBatch] = []
    held = 0
    index = 0
    for batch in batches(source, text_columns, stdin):
        while batch.num_rows:
            take = min(chunk_rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == chunk_rows:
                yield index, _combine(pending)
                index += 1
                pending, held = [], 0
    if held:
        yield index, _combine(pending)


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced by a thread up to ``depth`` ahead: reading and decoding (which release the GIL)
    overlap the caller's scoring and writing. The producer's exception is raised here, in order."""
    ahead: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def hand(item: tuple[bool, Any]) -> bool:
        """Queue ``item``; False once the consumer has gone."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand((True, item)):
                    return
            hand((False, None))
        except BaseException as error:  # handed to the consumer, which raises it
            hand((False, error))

    def consume() -> Iterator[T]:
        try:
            while True:
                more, item = ahead.get()
                if not more:
                    if item is not None:
                        raise item
                    return
                yield item
        finally:
            stop.set()

    threading.Thread(target=produce, name="mlops-batch-read", daemon=True).start()  # now, not at the first next()
    return consume()


def _combine(pending: list[pa.RecordBatch]) -> pa.Table:
    """One table of the batches; columns whose type differs between them (JSON Lines read as text) become text."""
    first = pending[0].schema
    if all(batch.schema == first for batch in pending):
        return pa.Table.from_batches(pending)
    tables = [pa.Table.from_batches([batch]) for batch in pending]
    names = list(dict.fromkeys(name for table in tables for name in table.column_names))
    types = {name: {str(t.schema.field(name).type) for t in tables if name in t.column_names} for name in names}
    mixed = {name for name, found in types.items() if len(found) > 1}
    tables = [t.select([n for n in names if n in t.column_names]) for t in tables]
    tables = [pa.table({n: (t[n].cast(pa.string()) if n in mixed else t[n]) for n in t.column_names}) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def stdin_bytes() -> IO[bytes]:
    return sys.stdin.buffer
