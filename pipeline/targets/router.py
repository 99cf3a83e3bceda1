"""The endpoint router: one stable URL that splits requests between an endpoint's deployments.

Run as ``python -m pipeline.targets.router --config router.json``. The config names the backends
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("mlops.router")

READY_PATH = "/-/router/ready"
PIN_HEADERS = (b"x-mlops-deployment", b"azureml-model-deployment")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host",
                "proxy-connection", "content-length"}
MAX_MIRRORS_IN_FLIGHT = 64
RELOAD_SECONDS = 0.05


@dataclass(frozen=True)
class Routes:
    """One generation of the router's configuration, swapped whole when the file changes."""

    generation: str
    backends: dict[str, list[str]]
    traffic: dict[str, int]
    mirror: dict[str, int]

    @classmethod
    def from_text(cls, text: str) -> Routes:
        data = json.loads(text)
        backends = {d: list(urls) for d, urls in data.get("backends", {}).items() if urls}
        return cls(
            generation=hashlib.sha256(text.encode()).hexdigest()[:16],
            backends=backends,
            traffic={d: w for d, w in data.get("traffic", {}).items() if w > 0 and d in backends},
            mirror={d: p for d, p in data.get("mirror", {}).items() if p > 0 and d in backends},
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
        self.client: httpx.AsyncClient | None = None
        self.reload()

    def reload(self) -> bool:
        """Load the config if it changed; a broken file keeps the previous routes (and is logged)."""
        try:
            mtime = self.config.stat().st_mtime_ns
            if mtime == self._mtime:
                return False
            text = self.config.read_text()
            self.routes = Routes.from_text(text)
            self._mtime = mtime
            log.info("routes %s: traffic %s mirror %s", self.routes.generation, self.routes.traffic,
                     self.routes.mirror)
            return True
        except (OSError, ValueError, AttributeError, TypeError) as error:
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
        body = await _read_body(receive)
        routes = self.routes
        pinned = next((v.decode() for k, v in scope["headers"] if k in PIN_HEADERS), None)
        if pinned is not None and pinned not in routes.backends:
            await _respond(send, 404, {"error": f"deployment '{pinned}' is not part of this endpoint"})
            return
        deployment = pinned or routes.pick()
        if deployment is None:
            await _respond(send, 503, {"error": "the endpoint has no live traffic (all weights are 0)"})
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.decode("latin-1").lower() not in _HOP_HEADERS]
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        if pinned is None:
            self._mirror(routes, scope["method"], target, headers, body)
        await self._forward(send, deployment, scope["method"], target, headers, body)

    async def _forward(self, send, deployment, method, target, headers, body) -> None:
        failed_url = None
        for attempt in range(2):
            url = self._instance(deployment, skip=failed_url)
            try:
                response = await self.client.request(method, url + target, headers=headers, content=body)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as error:
                failed_url = url
                log.warning("backend %s of %s failed (%s), attempt %d", url, deployment, error, attempt + 1)
                deployment = self._fallback(deployment)
                continue
            except httpx.TimeoutException:
                await _respond(send, 504, {"error": f"deployment '{deployment}' did not answer in time"})
                return
            out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                   if k.lower() not in _HOP_HEADERS]
            out.append((b"x-mlops-deployment", deployment.encode()))
            out.append((b"content-length", str(len(response.content)).encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            await send({"type": "http.response.body", "body": response.content})
            return
        await _respond(send, 502, {"error": f"deployment '{deployment}' is unreachable"})

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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._watcher.cancel()
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            self.reload()


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.targets.router")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MLOPS_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = json.loads(args.config.read_text())
    import uvicorn

    uvicorn.run(Router(args.config), host=data.get("host", "127.0.0.1"), port=data["port"],
                loop="uvloop", http="httptools", access_log=False, log_level="warning",
                timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
