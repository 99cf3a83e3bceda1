"""The scoring service as an ASGI app: ``create_app(config)``.

The scoring routes — Azure ML's ``POST /score``, OIP v2 ``POST /v2/models/{name}[/versions/{v}]/infer``
and MLflow's ``POST /invocations`` — share auth, limits and collection, and are handled as raw ASGI
before Starlette's routing: no Request/Response objects, one ``dict`` of the headers, orjson both
ways, numpy arrays converted once. Everything else (health, metadata, metrics, OpenAPI) is ordinary Starlette.

Auth (``Authorization: Bearer <key>``) covers every route except ``/v2/health/*`` and ``/metrics``:
probes and Prometheus scrapers carry no keys, and neither route reveals data or the model. A request
refused without a valid key (401), or for an unknown route (404), is collected too: status, route
and error, no payload (``ScoringService.refused``), so that ``mlops monitor`` counts it.

Where ``predict`` runs (``ServerConfig.execution``):

* ``inline`` — on the event loop. Fastest (no thread hand-off), but a running prediction cannot be
  interrupted, so ``request_timeout_ms`` is not enforced for it, and the loop serves nothing else
  meanwhile.
* ``thread`` — in a pool with one thread per concurrency slot. A 504 is answered on time; the
  slot stays taken until the thread really finishes, so a stuck model fills the slots and further
  callers get a fast 429 instead of piling up. The price, measured: a model that holds the GIL
  (most scikit-learn models) fights the event loop for it — 8 % fewer req/s on a 0.1 ms logistic
  regression, 30–50 % fewer on a 2 ms random forest at 16 connections.
* ``auto`` (default) — inline while the measured prediction time (warm-up, then a moving average)
  stays under 10 ms (and 1 % of ``request_timeout_ms``) and the request has at most 64 rows, else
  thread. Such a call delays other requests by less than their own queueing would, and slow
  models, large batches and models without a warm-up example still get timeouts.

Batching (``request_settings.max_batch_size`` > 1, the default, on models whose rows stack: sklearn,
onnx, mlflow with named columns): each request is admitted (a slot, or 429) and its rows validated
on its own, then concurrent requests are scored by one call (``pipeline.server.batching``); the
call runs inline or in a thread by the rules above. A python flavor's ``score.py`` is never
batched: it receives each caller's own request body, as on Azure ML.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline import __version__
from pipeline.errors import InvalidInput, ServeError
from pipeline.runtime import Model, load_model
from pipeline.runtime.jsonio import dumps
from pipeline.server.auth import KeyChecker
from pipeline.server.batching import Batcher, Expired, key_of
from pipeline.server.codecs import (
    decode_invocations,
    decode_request,
    decode_score,
    encode_response,
    encode_score,
    invocations_predictions,
)
from pipeline.server.collector import Collector
from pipeline.server.config import ServerConfig
from pipeline.server.http import HTTPError, error_body, read_body, respond
from pipeline.server.limits import Busy, Limiter
from pipeline.server.metrics import CONTENT_TYPE, Metrics
from pipeline.server.openapi import openapi_document
from pipeline.server.shipper import Shipper

log = logging.getLogger("mlops.server")

SCORE = "/score"
INVOCATIONS = "/invocations"
INFER = "/v2/models/{name}/infer"
OPEN_ROUTES = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
_FIXED_ROUTES = {path: path for path in ("/score", "/invocations", "/v2/health/live", "/v2/health/ready",
                                         "/metrics", "/v2", "/openapi.json")}
INLINE_MAX_SECONDS = 0.010
INLINE_MAX_ROWS = 64
EWMA_WEIGHT = 0.05
SERVER_NAME = "mlops"
EXTENSIONS = ["binary_tensor_data"]

_UNAUTHORIZED = error_body("missing or invalid key: send 'Authorization: Bearer <key>'")
_WWW_AUTHENTICATE = ((b"www-authenticate", b'Bearer realm="mlops"'),)
_BINARY = b"application/octet-stream"


def route_of(path: str) -> str:
    """The route's label for metrics and collection: a small fixed set, never the raw path."""
    label = _FIXED_ROUTES.get(path)
    if label is not None:
        return label
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return INFER
        if path.endswith("/ready"):
            return "/v2/models/{name}/ready"
        return "/v2/models/{name}"
    return "other"


class ScoringService:
    """The state behind the routes: model, limits, auth, metrics, collector."""

    def __init__(self, config: ServerConfig):
        self.config = config
        settings = config.request_settings
        self.model: Model | None = None
        self.load_error: str | None = None
        self.on_load_failure: Callable[[str], None] | None = None  # __main__ stops the server
        self.keys = KeyChecker(config.keys_file) if config.keys_file is not None else None
        self.version = str(config.model_version)
        self.max_body = settings.max_body_bytes
        self.timeout = settings.request_timeout_ms / 1000
        self.queue_wait = settings.max_queue_wait_ms / 1000
        slots = settings.max_concurrent_requests_per_instance
        self.limiter = Limiter(slots, queue=slots)
        self.pool = ThreadPoolExecutor(max_workers=self.limiter.slots, thread_name_prefix="predict")
        self.inline = config.execution == "inline"
        self.inline_limit = min(INLINE_MAX_SECONDS, self.timeout / 100)
        self.cost = 0.0  # moving average of seconds per prediction
        self.batcher: Batcher | None = None  # made when the model is loaded and its rows stack
        self.in_flight = 0
        collect = config.data_collector
        self.collector = None
        if collect.enabled and config.data_dir is not None:
            shipper = Shipper(config.collection_sink, config.data_dir / config.endpoint,
                              config.keys_file) if config.collection_sink else None
            self.collector = Collector(
                config.data_dir, endpoint=config.endpoint, deployment=config.deployment, model=config.model_name,
                model_version=config.model_version, sampling_rate=collect.sampling_rate,
                rolling_rate=collect.rolling_rate, shipper=shipper, ship_grace=config.collection_grace_seconds)
        collector = self.collector
        self.metrics = Metrics(in_flight=lambda: self.in_flight,
                               queue_depth=lambda: collector.depth if collector else 0,
                               dropped=lambda: collector.dropped if collector else 0,
                               unserializable=lambda: collector.unserializable if collector else 0)

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self.collector is not None:
            self.collector.start()
        threading.Thread(target=self.load, name="mlops-load", daemon=True).start()

    def load(self) -> None:
        """Load and warm up the model (in a thread: liveness answers meanwhile, readiness waits)."""
        began = time.perf_counter()
        try:
            model = load_model(self.config.model_dir, self.config.flavor, self.config.baseline, self.config.derived_dir)
            cost = model.warm_up()
        except Exception as error:
            self.load_error = str(error) if isinstance(error, ServeError) else f"{type(error).__name__}: {error}"
            log.error("cannot serve %s:%s: %s", self.config.model_name, self.version, self.load_error,
                      exc_info=not isinstance(error, ServeError))
            if self.on_load_failure is not None:
                self.on_load_failure(self.load_error)
            return
        if self.config.execution == "auto":
            self.cost = cost if cost is not None else self.inline_limit  # unknown: threads until measured
            self.inline = self.cost < self.inline_limit
        seconds = time.perf_counter() - began
        self.metrics.model_load_seconds.set(seconds)
        # Everything alive now (libraries, the model) lives until exit: take it out of the cyclic
        # garbage collector's view, or each full collection walks it (20 ms pauses, measured).
        gc.collect()
        gc.freeze()
        self.batcher = self._batcher(model)
        self.model = model
        where = "inline" if self.inline else "in threads"
        batching = f"batches of up to {self.batcher.max_rows} rows" if self.batcher else "no batching"
        what = ", ".join(filter(None, (model.flavor, model.form)))
        log.info("ready: %s:%s (%s) loaded in %.2f s; predict %s runs %s, %s", self.config.model_name,
                 self.version, what, seconds, f"≈{cost * 1000:.2f} ms" if cost else "(not measured)",
                 where, batching)

    def _batcher(self, model: Model) -> Batcher | None:
        settings = self.config.request_settings
        if settings.max_batch_size <= 1 or not model.stacks_rows:
            return None
        return Batcher(max_rows=settings.max_batch_size, max_wait=settings.max_batch_wait_ms / 1000,
                       pool=self.pool, runs_inline=lambda rows: self.inline and rows <= INLINE_MAX_ROWS,
                       cost=lambda: self.cost, learn=self._learn, release=self._release,
                       observe=self.metrics.batch_requests.observe)

    def _release(self, slots: int) -> None:
        for _ in range(slots):
            self.limiter.release()

    def stop(self) -> None:
        """After uvicorn finished in-flight requests: write every collected event, stop threads.

        Blocks the loop for the last write, which is fine: nothing else is served any more.
        """
        if self.collector is not None:
            self.collector.close()
            log.info("data collector flushed: %d events written, %d dropped", self.collector.written,
                     self.collector.dropped)
            if self.collector.shipper is not None:
                log.info("collection sink: %d events shipped", self.collector.shipper.shipped)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- execution -------------------------------------------------------------------------------
    def _learn(self, seconds: float) -> None:
        self.cost += EWMA_WEIGHT * (seconds - self.cost)
        if self.config.execution == "auto":
            self.inline = self.cost < self.inline_limit

    async def execute(self, fn: Callable[[Any], Any], payload: Any, rows: int, start: float,
                      kind: str | None = None) -> Any:
        """Run ``fn(payload)`` under the concurrency limit and the request timeout; batched with other
        requests of the same ``kind`` (and input shapes) when the service batches."""
        limiter = self.limiter
        batcher = self.batcher
        if kind is not None and batcher is not None and rows < batcher.max_rows:
            key = key_of(kind, payload, rows)
            if key is not None:
                return await self._execute_batched(batcher, key, fn, payload, rows, start)
        if self.inline and rows <= INLINE_MAX_ROWS and limiter.try_acquire():
            began = time.perf_counter()
            try:
                return fn(payload)
            finally:
                limiter.release()
                self._learn(time.perf_counter() - began)
        deadline = start + self.timeout
        await self._admit(deadline)
        loop = asyncio.get_running_loop()
        began = time.perf_counter()

        def finished(_: object) -> None:  # in the worker thread: the slot is freed only now
            loop.call_soon_threadsafe(self._finished, time.perf_counter() - began)

        future = self.pool.submit(fn, payload)
        future.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), deadline - time.perf_counter())
        except TimeoutError:
            raise self._timed_out() from None

    async def _execute_batched(self, batcher: Batcher, key: Any, fn: Callable[[Any], Any], payload: Any,
                               rows: int, start: float) -> Any:
        deadline = start + self.timeout
        if not self.limiter.try_acquire():
            await self._admit(deadline)
        try:
            return await batcher.score(key, fn, payload, rows, deadline)
        except Expired:
            raise self._timed_out() from None

    async def _admit(self, deadline: float) -> None:
        """Take a concurrency slot, waiting at most max_queue_wait_ms; 429 when none comes."""
        try:
            await self.limiter.acquire(min(self.queue_wait, deadline - time.perf_counter()))
        except Busy as busy:
            raise HTTPError(429, f"too many requests: {busy}", ((b"retry-after", b"1"),)) from None

    def _timed_out(self) -> HTTPError:
        return HTTPError(504, f"scoring took longer than request_timeout_ms="
                              f"{self.config.request_settings.request_timeout_ms}")

    def _finished(self, seconds: float) -> None:
        self.limiter.release()
        self._learn(seconds)

    # -- the two scoring routes ------------------------------------------------------------------
    def _check_model(self, path: str) -> None:
        parts = path.split("/")  # '', 'v2', 'models', name, ['versions', v,] 'infer'
        name = parts[3]
        if name != self.config.model_name:
            raise HTTPError(404, f"unknown model {name!r}; this server serves {self.config.model_name!r}")
        if len(parts) == 7 and parts[4] == "versions":
            if parts[5] != self.version:
                raise HTTPError(404, f"model {name!r} has no version {parts[5]!r}; it serves version {self.version}")
        elif len(parts) != 5:
            raise HTTPError(404, f"no route {path}")

    async def score(self, route: str, scope: dict, receive: Any, send: Any, headers: dict[bytes, bytes],
                    start: float) -> int:
        status, inputs, outputs, error, body = 200, None, None, None, None
        content_type, extra = b"application/json", tuple[tuple[bytes, bytes], ...]()
        try:
            if scope["method"] != "POST":
                raise HTTPError(405, f"use POST for {scope['path']}", ((b"allow", b"POST"),))
            model = self.model
            if route == INFER:
                self._check_model(scope["path"])
            if model is None:
                raise HTTPError(503, "the model is not loaded yet" if self.load_error is None else self.load_error)
            body = await read_body(receive, self.max_body, headers.get(b"content-length"))
            if route == SCORE:
                payload, inputs, rows = decode_score(model, body)
                outputs = await self.execute(model.score, payload, rows, start, "score")
                data = encode_score(model, outputs)
            elif route == INVOCATIONS:  # MLflow's scoring-server formats, answered as MLflow does
                payload, inputs, rows = decode_invocations(model, body, headers.get(b"content-type"))
                outputs = invocations_predictions(model, await self.execute(model.score, payload, rows, start,
                                                                            "score"))
                data = dumps({"predictions": outputs})
            else:
                request = decode_request(body, headers.get(b"inference-header-content-length"))
                arrays, rows = model.prepare_tensors(request.inputs, request.outputs)
                inputs = request.inputs
                outputs = await self.execute(partial(model.infer, outputs=request.outputs), arrays, rows, start,
                                             f"infer:{request.outputs}")
                data, header_length = encode_response(self.config.model_name, self.version, request, outputs)
                if header_length is not None:
                    content_type, extra = _BINARY, ((b"inference-header-content-length", header_length),)
        except HTTPError as failure:
            status, error, extra = failure.status, failure.message, failure.headers
            data = error_body(error)
        except InvalidInput as failure:  # the runtime's (and the codecs') word for a caller's mistake
            status, error = 400, str(failure)
            data = error_body(error)
        except Exception as failure:
            status, error = 500, f"the model failed: {type(failure).__name__}: {failure}"
            # One line per failure; the traceback only at log_level debug (a caller could repeat it).
            log.error("%s %s: %s", scope["method"], scope["path"], error, exc_info=log.isEnabledFor(logging.DEBUG))
            data = error_body(error)
        await respond(send, status, data, content_type, extra)
        collector = self.collector
        if collector is not None and collector.sampled():
            if inputs is None:
                inputs = body  # a request that failed to parse is recorded as it came
            collector.record(route, status, (time.perf_counter() - start) * 1000, inputs, outputs, error)
        return status


    def refused(self, route: str, status: int, error: str, start: float) -> None:
        """Collect a request refused before scoring (401 without a valid key, 404 for an unknown route):
        status, route and error, no payload, so that the monitor counts what callers were refused."""
        collector = self.collector
        if collector is not None and collector.sampled():
            collector.record(route, status, (time.perf_counter() - start) * 1000, None, None, error)


# -- Starlette routes ----------------------------------------------------------------------------
def _service(request: Request) -> ScoringService:
    return request.app.service


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    service = _service(request)
    if service.model is not None:
        return JSONResponse({"ready": True})
    body: dict[str, Any] = {"ready": False}
    if service.load_error:
        body["error"] = service.load_error
    return JSONResponse(body, status_code=503)


async def server_metadata(request: Request) -> Response:
    return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})


def _known_model(request: Request) -> ScoringService:
    service = _service(request)
    try:
        service._check_model(request.url.path.removesuffix("/ready") + "/infer")
    except HTTPError as error:
        raise HTTPException(error.status, error.message) from None
    return service


async def model_metadata(request: Request) -> Response:
    service = _known_model(request)
    model = service.model
    if model is None:
        return _error(503, "the model is not loaded yet")
    return JSONResponse({"name": service.config.model_name, "versions": [service.version], **model.describe()})


async def model_ready(request: Request) -> Response:
    service = _known_model(request)
    ok = service.model is not None
    return JSONResponse({"name": service.config.model_name, "ready": ok}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.render(), media_type=CONTENT_TYPE.decode())


async def openapi(request: Request) -> Response:
    service = _service(request)
    return JSONResponse(openapi_document(service.config, service.model, auth=service.keys is not None))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)


ROUTES = [
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2", server_metadata),
    Route("/v2/models/{name}", model_metadata),
    Route("/v2/models/{name}/versions/{version}", model_metadata),
    Route("/v2/models/{name}/ready", model_ready),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready),
    Route("/metrics", metrics),
    Route("/openapi.json", openapi),
]


class ScoringApp(Starlette):
    """Starlette for the plain routes, with auth, metrics and the scoring routes in front of it."""

    def __init__(self, service: ScoringService):
        @asynccontextmanager
        async def lifespan(app: Starlette):
            service.start()
            yield
            service.stop()  # on the loop: nothing is in flight any more, and the collector wants it

        super().__init__(routes=ROUTES, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        start = time.perf_counter()
        service = self.service
        route = route_of(scope["path"])
        headers = dict(scope["headers"])
        status = 500
        service.in_flight += 1
        try:
            if service.keys is not None and route not in OPEN_ROUTES \
                    and not service.keys.allows(headers.get(b"authorization")):
                status = 401
                await respond(send, 401, _UNAUTHORIZED, headers=_WWW_AUTHENTICATE)
                service.refused(route, 401, "missing or invalid key", start)
            elif route == SCORE or route == INFER or route == INVOCATIONS:
                status = await service.score(route, scope, receive, send, headers, start)
            else:
                status = await self._starlette(scope, receive, send)
                if status == 404 and route == "other":
                    service.refused(route, 404, "unknown route", start)
        finally:
            service.in_flight -= 1
            service.metrics.observe(route, status, time.perf_counter() - start)

    async def _starlette(self, scope: dict, receive: Any, send: Any) -> int:
        status = 500

        async def capture(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await super().__call__(scope, receive, capture)
        return status


def create_app(config: ServerConfig) -> ScoringApp:
    """The service for ``config``; the model loads when the app starts (ASGI lifespan)."""
    return ScoringApp(ScoringService(config))
