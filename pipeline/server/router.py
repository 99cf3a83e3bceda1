"""The endpoint router: one stable URL that splits requests between an endpoint's deployments.

Run as ``python -m pipeline.server.router --config router.json``. The config names the backends
of each deployment, the live ``traffic`` weights and the ``mirror`` percentages::

    {"endpoint": "iris", "host": "127.0.0.1", "port": 8080,
     "backends": {"blue": ["http://127.0.0.1:8001"]},
     "traffic": {"blue": 100}, "mirror": {"green": 10}}

Targets switch traffic by replacing that file atomically (``os.replace``); the router notices
within 50 ms and reports the new ``generation`` (a digest of the file) at ``/-/router/ready``, so
the caller knows when old instances stop receiving requests. A request may pin a deployment with
the ``x-mlops-deployment`` (or Azure's ``azureml-model-deployment``) header, also one with 0 %
traffic, for testing it before it goes live. Mirrored copies are fire-and-forget: their responses
are discarded and their failures never reach the caller. A request whose connection to a backend
fails before any response is retried once on another instance (scoring is side-effect free), so
that an instance shutting down during an update never fails a caller.

Hostile input is refused before a body is read: for ``"keys_file"`` endpoints (``auth_mode: key``)
the key is checked with the scoring service's own ``KeyChecker``, and a declared Content-Length
above ``"max_body_bytes"`` is answered 413 at once (both with ``connection: close``, so the rest of
an upload is never read). Bodies are streamed to the instance, never buffered whole; the limit is
enforced while streaming (also for chunked bodies), and the instance's status and body are passed
through (its own 413 stays a 413). A client that stops sending for ``BODY_IDLE_SECONDS`` gets 408.

Design for mirrors and retries: while a body streams, a copy is kept only up to ``REPLAY_MAX_BYTES``
(a tee with a cap). A body that fit is mirrored after the live request and can be replayed on the
retry; a larger body is neither mirrored nor retried after it began to stream. Memory per request
is thus bounded by that cap, whatever the body's size.

Collection: with ``"data_dir"`` (set when a deployment of the endpoint collects), what the router
answers itself — 401 without a valid key, 400/413 for a bad size, 404 for an unknown pinned
deployment, 503 with no live traffic, 408/502/504 while forwarding — is collected as events with a
status, an error and no payload, in the deployment folder ``ROUTER_FOLDER`` (not a DNS label, so no
deployment's), so that ``mlops monitor`` counts the requests no scoring service saw.

Logging: ``"log": {"file": ..., "max_bytes": ..., "backups": ...}`` rotates the router's log by
size; ``"access_log": true`` logs every proxied request (off by default).

HTTP is served by uvicorn (uvloop + httptools) and forwarded with httpx's pooled async client.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.errors import MlopsError
from pipeline.server import logs
from pipeline.server.auth import KeyChecker
from pipeline.server.collector import Collector
from pipeline.server.eventfiles import ROUTER_FOLDER

log = logging.getLogger("mlops.router")

READY_PATH = "/-/router/ready"
PIN_HEADERS = (b"x-mlops-deployment", b"azureml-model-deployment")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host",
                "proxy-connection", "content-length"}
_REQUEST_HOP_HEADERS = _HOP_HEADERS - {"content-length"}  # the instance checks the declared size too
_CLOSE = [(b"connection", b"close")]
REPLAY_MAX_BYTES = 256 * 1024
BODY_IDLE_SECONDS = 30.0
MAX_CONCURRENT_REQUESTS = 512
MAX_MIRRORS_IN_FLIGHT = 64
RELOAD_SECONDS = 0.05


@dataclass(frozen=True)
class Routes:
    """One generation of the router's configuration, swapped whole when the file changes."""

    generation: str
    backends: dict[str, list[str]]
    traffic: dict[str, int]
    mirror: dict[str, int]
    keys_file: str | None = None
    max_body_bytes: int | None = None
    access_log: bool = False
    endpoint: str = ""
    data_dir: str | None = None

    @classmethod
    def from_text(cls, text: str) -> Routes:
        data = json.loads(text)
        backends = {d: list(urls) for d, urls in data.get("backends", {}).items() if urls}
        return cls(
            generation=hashlib.sha256(text.encode()).hexdigest()[:16],
            backends=backends,
            traffic={d: w for d, w in data.get("traffic", {}).items() if w > 0 and d in backends},
            mirror={d: p for d, p in data.get("mirror", {}).items() if p > 0 and d in backends},
            keys_file=data.get("keys_file"),
            max_body_bytes=data.get("max_body_bytes"),
            access_log=bool(data.get("access_log", False)),
            endpoint=str(data.get("endpoint", "")),
            data_dir=data.get("data_dir"),
        )

    def pick(self) -> str | None:
        if not self.traffic:
            return None
        names = list(self.traffic)
        return random.choices(names, weights=[self.traffic[n] for n in names])[0]


class Router:
    """A raw ASGI app (no framework: the router adds as little as possible to each request)."""

    def __init__(self, config: Path):
        self.config = config
        self.routes = Routes("", {}, {}, {})
        self._mtime = 0
        self._counters: dict[str, itertools.count] = {}
        self._mirrors: set[asyncio.Task] = set()
        self._keys: KeyChecker | None = None
        self.collector: Collector | None = None  # made at startup, on the loop (it needs one)
        self.client: httpx.AsyncClient = None  # type: ignore[assignment]  # made at startup, in the loop
        self.reload()

    def reload(self) -> bool:
        """Load the config if it changed; a broken file keeps the previous routes (and is logged)."""
        try:
            mtime = self.config.stat().st_mtime_ns
            if mtime == self._mtime:
                return False
            text = self.config.read_text()
            routes = Routes.from_text(text)
            if routes.keys_file is None:
                self._keys = None
            elif self._keys is None or str(self._keys.path) != routes.keys_file:
                self._keys = KeyChecker(Path(routes.keys_file))
            self.routes = routes
            self._mtime = mtime
            log.info("routes %s: traffic %s mirror %s", self.routes.generation, self.routes.traffic,
                     self.routes.mirror)
            return True
        except (OSError, ValueError, AttributeError, TypeError, MlopsError) as error:
            log.error("cannot read %s, keeping the previous routes: %s", self.config, error)
            return False

    def _instance(self, deployment: str, skip: str | None = None) -> str:
        urls = self.routes.backends[deployment]
        counter = self._counters.setdefault(deployment, itertools.count())
        url = urls[next(counter) % len(urls)]
        if url == skip and len(urls) > 1:
            url = urls[next(counter) % len(urls)]
        return url

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == READY_PATH:
            await self._ready(send)
            return
        start = time.perf_counter()
        status, error = await self._handle(scope, receive, send)
        if error is not None and self.collector is not None:
            self.collector.record("router", status, (time.perf_counter() - start) * 1000, None, None, error)

    async def _handle(self, scope, receive, send) -> tuple[int, str | None]:
        """Answer one request: (status, the router's own error message or None when forwarded)."""
        routes, keys = self.routes, self._keys
        headers_in = dict(scope["headers"])
        if keys is not None and not keys.allows(headers_in.get(b"authorization")):
            return await _refuse(send, 401, "missing or invalid key: send 'Authorization: Bearer <key>'", _CLOSE)
        limit = routes.max_body_bytes
        declared = headers_in.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _refuse(send, 400, "Content-Length is not a number", _CLOSE)
            if limit is not None and int(declared) > limit:
                return await _refuse(send, 413, f"request body of {int(declared)} bytes exceeds the limit "
                                                f"of {limit} bytes", _CLOSE)
        pinned = next((v.decode() for k, v in scope["headers"] if k in PIN_HEADERS), None)
        if pinned is not None and pinned not in routes.backends:
            return await _refuse(send, 404, f"deployment '{pinned}' is not part of this endpoint")
        deployment = pinned or routes.pick()
        if deployment is None:
            return await _refuse(send, 503, "the endpoint has no live traffic (all weights are 0)")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.decode("latin-1").lower() not in _REQUEST_HOP_HEADERS]
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        body = _Body(receive, limit)
        start = time.perf_counter()
        status, error = await self._forward(send, deployment, scope["method"], target, headers, body)
        if routes.access_log:
            log.info("%s %s -> %s %d %.1f ms", scope["method"], target, deployment, status,
                     (time.perf_counter() - start) * 1000)
        if pinned is None and body.complete is not None:
            self._mirror(routes, scope["method"], target, headers, body.complete)
        return status, error

    async def _forward(self, send, deployment, method, target, headers, body: _Body) -> tuple[int, str | None]:
        failed_url = None
        for attempt in range(2):
            url = self._instance(deployment, skip=failed_url)
            try:
                response = await self.client.request(method, url + target, headers=headers, content=body.content())
            except BodyTooLarge as error:
                return await _refuse(send, 413, str(error), _CLOSE)
            except ClientStalled as error:
                return await _refuse(send, 408, str(error), _CLOSE)
            except ClientGone:
                return 499, "the client disconnected mid-body"
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
                failed_url = url
                log.warning("backend %s of %s failed (%s), attempt %d", url, deployment, error, attempt + 1)
                if not body.replayable:
                    break
                deployment = self._fallback(deployment)
                continue
            except httpx.TimeoutException:
                return await _refuse(send, 504, f"deployment '{deployment}' did not answer in time")
            out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                   if k.lower() not in _HOP_HEADERS]
            out.append((b"x-mlops-deployment", deployment.encode()))
            out.append((b"content-length", str(len(response.content)).encode()))
            if not body.finished:  # the instance answered before the whole body: never read the rest
                out.extend(_CLOSE)
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            await send({"type": "http.response.body", "body": response.content})
            return response.status_code, None
        return await _refuse(send, 502, f"deployment '{deployment}' is unreachable", _CLOSE)

    def _fallback(self, deployment: str) -> str:
        """After a failed attempt: the same deployment if it is still routed, else a fresh pick."""
        routes = self.routes
        if deployment in routes.backends:
            return deployment
        return routes.pick() or deployment

    def _mirror(self, routes: Routes, method, target, headers, body) -> None:
        for deployment, percent in routes.mirror.items():
            if random.random() * 100 >= percent or len(self._mirrors) >= MAX_MIRRORS_IN_FLIGHT:
                continue
            task = asyncio.create_task(self._shadow(deployment, method, target, headers, body))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)

    async def _shadow(self, deployment, method, target, headers, body) -> None:
        try:
            await self.client.request(method, self._instance(deployment) + target, headers=headers,
                                      content=body)
        except Exception as error:  # a mirror never affects the caller
            log.debug("mirror to %s failed: %s", deployment, error)

    async def _ready(self, send) -> None:
        routes = self.routes
        status = 200 if routes.traffic or routes.backends else 503
        await _respond(send, status, {"generation": routes.generation, "traffic": routes.traffic,
                                      "mirror": routes.mirror, "backends": routes.backends})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = httpx.AsyncClient(
                    timeout=httpx.Timeout(300.0, connect=2.0),
                    limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
                self._watcher = asyncio.create_task(self._watch())
                self._collect()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._watcher.cancel()
                await self.client.aclose()
                if self.collector is not None:
                    self.collector.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            if self.reload():
                self._collect()

    def _collect(self) -> None:
        """Start collecting refusals once the routes name a data folder (on the loop: the collector's
        timer needs it); an endpoint's first deployment may come after its router started."""
        routes = self.routes
        if self.collector is None and routes.data_dir and routes.endpoint:
            self.collector = Collector(Path(routes.data_dir), endpoint=routes.endpoint,
                                       deployment=ROUTER_FOLDER, model=None, model_version=None)
            self.collector.start()


class BodyTooLarge(Exception):
    """The streamed body went past the endpoint's limit (answered 413)."""


class ClientStalled(Exception):
    """The client stopped sending its body (answered 408)."""


class ClientGone(Exception):
    """The client disconnected mid-body (nobody to answer)."""


class _Body:
    """A request body streamed from the ASGI ``receive``, counted against ``limit``, with a copy kept
    while it stays under ``REPLAY_MAX_BYTES`` (for the retry and the mirrors)."""

    def __init__(self, receive, limit: int | None):
        self.receive, self.limit = receive, limit
        self.size = 0
        self.started = self.finished = False
        self._kept: list[bytes] | None = []

    @property
    def complete(self) -> bytes | None:
        """The whole body when it was read to its end and kept, else None."""
        return b"".join(self._kept) if self.finished and self._kept is not None else None

    @property
    def replayable(self) -> bool:
        return not self.started or self.complete is not None

    def content(self):
        return self._stream() if not self.started else self.complete

    async def _stream(self):
        self.started = True
        while not self.finished:
            try:
                message = await asyncio.wait_for(self.receive(), BODY_IDLE_SECONDS)
            except TimeoutError:
                raise ClientStalled(f"no body data for {BODY_IDLE_SECONDS:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.limit is not None and self.size > self.limit:
                self._kept = None
                raise BodyTooLarge(f"request body exceeds the limit of {self.limit} bytes")
            if self._kept is not None:
                self._kept.append(chunk)
                if self.size > REPLAY_MAX_BYTES:
                    self._kept = None
            self.finished = not message.get("more_body")
            if chunk:
                yield chunk


async def _respond(send, status: int, payload: dict[str, Any], headers: list | tuple = ()) -> int:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
    return status


async def _refuse(send, status: int, error: str, headers: list | tuple = ()) -> tuple[int, str]:
    """Answer with the router's own error; the caller collects it."""
    await _respond(send, status, {"error": error}, headers)
    return status, error


def _configure_logging(data: dict) -> None:
    """To the configured file, rotated by size (``"log"``), or to stderr."""
    settings = data.get("log") or {}
    logs.configure(os.environ.get("MLOPS_LOG_LEVEL", "INFO"), settings.get("file"),
                   int(settings.get("max_bytes", logs.MAX_BYTES)), int(settings.get("backups", logs.BACKUPS)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.server.router")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    data = json.loads(args.config.read_text())
    _configure_logging(data)
    import uvicorn

    uvicorn.run(Router(args.config), host=data.get("host", "127.0.0.1"), port=data["port"],
                loop="uvloop", http="httptools", access_log=False, log_level="warning", log_config=None,
                limit_concurrency=MAX_CONCURRENT_REQUESTS, timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
