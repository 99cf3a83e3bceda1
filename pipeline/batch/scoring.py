"""Scoring a chunk: in this process, in worker processes, or through a deployed endpoint's ``/score``.

In-process and worker scoring call the runtime the scoring service runs (``load_model``,
``prepare_rows``, ``score``) on the same float64 matrix ``/score`` builds from its JSON, so the
predictions are the service's, bit for bit. A chunk that fails is split in halves down to single
rows, so only the rows at fault are reported (each with its message); a failure that is not the
input's (a crash, a timeout) is retried first.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InvalidInput, MlopsError
from pipeline.runtime import Model, load_model
from pipeline.runtime.jsonio import dumps, loads
from pipeline.runtime.tensors import DTYPES

PREDICTION = "prediction"


class Unavailable(MlopsError):
    """The endpoint did not answer within the retries: the run stops (splitting the chunk would not help)."""


@dataclass(frozen=True)
class ModelInfo:
    """The version to score with, materialized (and verified) by the registry, and its lineage."""

    name: str
    version: int
    digest: str
    flavor: str
    model_dir: str
    baseline: str | None = None
    endpoint: str | None = None
    deployment: str | None = None
    derived_dir: str | None = None  # the registry's folder for files derived from this version

    def load(self) -> Model:
        """The model, from its linear form when the registry keeps one (no scikit-learn import: most of a
        short run's time), else through its flavor (keeping that form for next time)."""
        return load_model(Path(self.model_dir), self.flavor, Path(self.baseline) if self.baseline else None,
                          Path(self.derived_dir) if self.derived_dir else None)


@dataclass
class Scored:
    """A chunk's result: prediction columns for the rows that scored (``rows``: their indexes, None for
    all) and ``(row index, message)`` for those that did not."""

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    rows: np.ndarray | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)


def features_matrix(model: Model, table: pa.Table) -> np.ndarray:
    """The feature columns as the matrix ``/score`` would build: cast to the model's input type."""
    spec = model.inputs[0] if len(model.inputs) == 1 else None
    dtype = DTYPES[spec.datatype] if spec is not None else np.dtype(np.float64)
    if dtype.kind == "O" or not table.num_columns:
        return np.array(table_rows(table), dtype=object)
    target = pa.from_numpy_dtype(dtype)
    # Filled column by column, piece by piece: one copy (concatenating, then stacking, made two).
    matrix = np.empty((table.num_rows, table.num_columns), dtype=dtype)
    for index, column in enumerate(table.columns):
        try:
            pieces = pc.cast(column, target).chunks
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise InvalidInput(f"expected {spec.datatype if spec else 'FP64'} numbers: {error}") from None
        start = 0
        for piece in pieces:
            matrix[start:start + len(piece), index] = _values(piece, dtype)
            start += len(piece)
    return matrix


def _values(piece: pa.Array, dtype: np.dtype) -> np.ndarray:
    """An Arrow array's values: a view of its data buffer when it has no nulls (Arrow's ``to_numpy``
    imports pandas, ~0.1 s of a short run), else converted by Arrow (nulls become NaN)."""
    if piece.null_count == 0 and dtype.kind in "iuf":
        return np.frombuffer(piece.buffers()[1], dtype=dtype, count=len(piece), offset=piece.offset * dtype.itemsize)
    return piece.to_numpy(zero_copy_only=False)


def predict_table(model: Model, table: pa.Table) -> dict[str, np.ndarray]:
    """Prediction columns for a table of feature columns (named as the input names them)."""
    if model.raw_text:  # score.py gets {"data": rows} as text, as on /score
        payload, _, rows = model.prepare_rows(table_rows(table))
        result = model.score(payload)
        if isinstance(result, str | bytes):
            result = loads(result)
        if isinstance(result, dict) and "predictions" in result:
            result = result["predictions"]
        predictions = np.asarray(result)
        if predictions.ndim == 0 or len(predictions) != rows:
            raise InvalidInput(f"score.py returned {predictions.size} value(s) for {rows} rows")
        return {PREDICTION: predictions}
    columns = table.column_names if model.columns is not None else None
    payload, _, _ = model.prepare_rows(features_matrix(model, table), columns)
    result = {PREDICTION: np.asarray(model.score(payload))}
    if any(spec.name == "predict_proba" for spec in model.outputs):
        proba = np.asarray(model.predict(payload, ["predict_proba"])["predict_proba"])
        labels = model.class_labels() or [str(i) for i in range(proba.shape[1])]
        result.update({f"proba_{label}": proba[:, i] for i, label in enumerate(labels)})
    return result


def table_rows(table: pa.Table) -> list[list[Any]]:
    """Rows as lists of Python values (what a JSON body holds)."""
    return [list(row) for row in zip(*(column.to_pylist() for column in table.columns), strict=True)]


def _message(error: BaseException) -> str:
    return str(error) if isinstance(error, InvalidInput | MlopsError) else f"{type(error).__name__}: {error}"


def isolate(score: Callable[[pa.Table], dict[str, np.ndarray]], table: pa.Table, retries: int = 0,
            offset: int = 0) -> Scored:
    """Score ``table``; when that fails (after ``retries`` for failures not the input's), score its halves,
    down to single rows, so the result holds every row that can be scored and a message for each that cannot."""
    attempt = 0
    while True:
        try:
            return Scored(score(table))
        except InvalidInput as error:
            failure: BaseException = error
            break
        except Unavailable:
            raise
        except Exception as error:  # the model's own failure, a timeout: perhaps transient
            failure = error
            if attempt >= retries:
                break
            attempt += 1
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
    if table.num_rows == 1:
        return Scored(rows=np.empty(0, dtype=np.int64), errors=[(offset, _message(failure))])
    half = table.num_rows // 2
    return merge([(offset, half, isolate(score, table.slice(0, half), 0, offset)),
                  (offset + half, table.num_rows - half, isolate(score, table.slice(half), 0, offset + half))])


def merge(parts: list[tuple[int, int, Scored]]) -> Scored:
    """One result of consecutive parts, each given as (offset of its first row, its rows, its result)."""
    if all(part.rows is None for _, _, part in parts):
        rows = None
    else:
        rows = np.concatenate([np.arange(offset, offset + size) if part.rows is None else part.rows
                               for offset, size, part in parts])
    names = next((list(part.columns) for _, _, part in parts if part.columns), [])
    columns = {name: np.concatenate([part.columns[name] for _, _, part in parts if part.columns]) for name in names}
    return Scored(columns, rows, [error for _, _, part in parts for error in part.errors])


# -- in this process, or in spawned workers ---------------------------------------------------------
_worker_model: Model | None = None


def _worker(info: ModelInfo) -> Model:
    """The worker's model, loaded by its first task (a load error then reaches the caller as itself)."""
    global _worker_model
    if _worker_model is None:
        _worker_model = info.load()
    return _worker_model


def _describe_in_worker(info: ModelInfo) -> Shape:
    model = _worker(info)
    return Shape(model.columns, model.raw_text)


def _score_in_worker(info: ModelInfo, table: pa.Table, retries: int) -> Scored:
    model = _worker(info)
    return isolate(lambda part: predict_table(model, part), table, retries)


@dataclass(frozen=True)
class Shape:
    """What the run needs to know of a model that its workers load (the parent does not load it)."""

    columns: list[str] | None
    raw_text: bool = False


class LocalScorer:
    """The runtime in this process (``workers`` 1) or in ``workers`` spawned processes, each loading the model
    once; with workers, this process never loads it (half the memory, and its CPU left to the workers)."""

    def __init__(self, info: ModelInfo, workers: int = 1, retries: int = 2):
        self.info = info
        self.retries = retries
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self.loading: Future[Model] | None = None
        if workers > 1:
            self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        else:
            # Loaded in a thread: importing scikit-learn (most of the startup) holds the GIL, but hashing
            # and reading the input meanwhile mostly do not, so they run beside it on another core.
            loader = ThreadPoolExecutor(1, thread_name_prefix="mlops-batch-load")
            self.loading = loader.submit(info.load)
            loader.shutdown(wait=False)

    @property
    def model(self) -> Model | None:
        """The model loaded in this process (waiting for it), None with workers."""
        return self.loading.result() if self.loading is not None else None

    def describe(self) -> Model | Shape:
        """The model's columns: loaded here, or as the workers see it (every worker loads it meanwhile);
        ModelLoadError when it cannot be loaded."""
        if self.model is not None:
            return self.model
        assert self.pool is not None
        futures = [self.pool.submit(_describe_in_worker, self.info) for _ in range(self.workers)]
        return [future.result() for future in futures][0]

    def submit(self, table: pa.Table) -> Any:
        """A future of the chunk's ``Scored`` (already done when scoring in this process)."""
        if self.pool is not None:
            return self.pool.submit(_score_in_worker, self.info, table, self.retries)
        model = self.model
        assert model is not None
        future: Future[Scored] = Future()
        future.set_result(isolate(lambda part: predict_table(model, part), table, self.retries))
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# -- through the endpoint ---------------------------------------------------------------------------
class EndpointScorer:
    """Chunks sent to a deployed endpoint's ``/score`` in requests of ``request_rows``, ``concurrency`` at a
    time, with its key; 429 waits for Retry-After, 5xx and connection errors back off and retry."""

    def __init__(self, url: str, key: str | None, columns: Sequence[str] | None, deployment: str | None = None,
                 concurrency: int = 4, retries: int = 3, timeout: float = 60.0, request_rows: int = 2_000):
        import httpx

        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        if deployment:
            headers["x-mlops-deployment"] = deployment
        self.client = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.named = columns is not None
        self.retries = retries
        self.request_rows = request_rows
        self.threads = ThreadPoolExecutor(concurrency, thread_name_prefix="mlops-batch-http")
        self._lock = threading.Lock()
        self.requests = 0

    def post(self, table: pa.Table) -> dict[str, np.ndarray]:
        """One request's predictions; InvalidInput for a 400 (the rows' fault), MlopsError once retries are spent."""
        import httpx

        rows = table_rows(table)
        body = dumps({"input_data": {"columns": table.column_names, "data": rows}} if self.named else {"data": rows})
        failures = 0
        while True:
            try:
                response = self.client.post("/score", content=body)
            except httpx.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            else:
                with self._lock:
                    self.requests += 1
                if response.status_code == 200:
                    return {PREDICTION: np.asarray(loads(response.content)["predictions"])}
                if response.status_code == 400:
                    raise InvalidInput(_detail(response))
                if response.status_code == 429:
                    time.sleep(_retry_after(response.headers.get("retry-after")))
                    continue  # the endpoint asked us to wait: not a failure
                failure = f"HTTP {response.status_code}: {_detail(response)}"
                if response.status_code < 500 and response.status_code != 408:
                    raise MlopsError(failure)
            failures += 1
            if failures > self.retries:
                raise Unavailable(f"{failure} (after {self.retries} retries)")
            time.sleep(min(0.25 * 2 ** failures, 10.0) * (0.5 + random.random()))

    def score(self, table: pa.Table) -> Scored:
        starts = range(0, table.num_rows, self.request_rows)
        results = self.threads.map(lambda start: isolate(self.post, table.slice(start, self.request_rows), 0, start),
                                   starts)
        return merge([(start, min(self.request_rows, table.num_rows - start), result)
                      for start, result in zip(starts, results, strict=True)])

    def submit(self, table: pa.Table) -> Any:
        future: Future[Scored] = Future()
        try:
            future.set_result(self.score(table))
        except Exception as error:
            future.set_exception(error)
        return future

    def close(self) -> None:
        self.threads.shutdown()
        self.client.close()


def _detail(response: Any) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    return str(data.get("error") or data.get("detail") or data)[:300] if isinstance(data, dict) else str(data)[:300]


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.0), 60.0)
    except ValueError:
        return 1.0
