"""The collection sink of one endpoint: where its scoring pods ship what they collect, on a volume.

``python -m pipeline.server.sink --config FILE`` (the scoring image; on Kubernetes a one-replica
``StatefulSet`` with a PersistentVolumeClaim, see docs/collection-in-kubernetes.md), in the pattern
of KServe's logger → sink and Azure ML's collector → storage:

* ``POST /v1/events`` takes whole JSON lines of one spool file (``x-mlops-file``: its path below
  ``<data_dir>/<endpoint>``, the collector's layout; ``x-mlops-offset``: where the body starts in
  it) and appends them to the same path under its own data folder, with the collector's writer
  (``pipeline.server.eventfiles``). The file is first cut back to the offset, so a batch posted
  twice (an answer lost, a spool shipped again by a restarted pod) is stored once. It answers 200
  only after ``fsync`` (and, for a new file, of its folders): an acknowledged batch survives a
  crash of the sink or of its node.
* ``GET /v1/events?deployment=&since=&until=&limit=`` streams the events of the window back as
  JSON lines (what ``mlops monitor`` reads, through the API server's service proxy), ending with
  one ``{"summary": {...}}`` line: files read, lines skipped, whether ``limit`` cut it short.

Both need the endpoint's key (``Authorization: Bearer``, or ``x-mlops-key`` where a proxy keeps the
Authorization header for itself) when the config names a keys file. Bodies are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pipeline.runtime.jsonio import dumps
from pipeline.server import logs
from pipeline.server.auth import KeyChecker
from pipeline.server.eventfiles import RELATIVE_PATH, EventReader, open_append
from pipeline.server.http import HTTPError, error_body, read_body, respond

log = logging.getLogger("mlops.server.sink")

MAX_BATCH_BYTES = 64 * 1024 * 1024
MAX_EVENTS = 1_000_000  # per GET
READ_BATCH = 1000  # events read in the thread per hand-over to the loop
EVENTS, READY, LIVE = "/v1/events", "/v1/ready", "/v1/live"


@dataclass(frozen=True)
class SinkConfig:
    endpoint: str
    data_dir: Path
    port: int = 8081
    host: str = "127.0.0.1"
    keys_file: Path | None = None
    max_batch_bytes: int = MAX_BATCH_BYTES
    log_level: str = "info"

    @classmethod
    def from_json(cls, text: str) -> SinkConfig:
        data = json.loads(text)
        data["data_dir"] = Path(data["data_dir"])
        if data.get("keys_file"):
            data["keys_file"] = Path(data["keys_file"])
        return cls(**data)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store(root: Path, relative: str, offset: int, body: bytes) -> None:
    """Append ``body`` at ``offset`` of ``root/relative`` and make it durable (the blocking part)."""
    path = root / relative
    created = []
    folder = path.parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    fd = open_append(path)
    try:
        size = os.fstat(fd).st_size
        if size > offset:
            os.ftruncate(fd, offset)  # sent before (its answer lost) or torn by a crash: the same bytes again
        elif size < offset:
            log.warning("%s: %d bytes missing before offset %d (lost with an earlier volume?); appending",
                        relative, offset - size, offset)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:  # the new file's name, and any folder made for it, must survive a crash too
        for directory in sorted({path.parent, *(made.parent for made in created)}, reverse=True):
            _fsync_path(directory)


class Sink:
    """The raw ASGI app (no framework: two routes, bodies of megabytes)."""

    def __init__(self, config: SinkConfig):
        self.config = config
        self.root = Path(config.data_dir) / config.endpoint
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = KeyChecker(config.keys_file) if config.keys_file is not None else None
        self._write = asyncio.Lock()
        self.stored = 0  # batches acknowledged

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except HTTPError as error:
            await respond(send, error.status, error_body(error.message), headers=error.headers)

    async def _route(self, scope: dict, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        if path in (READY, LIVE) and method == "GET":
            await respond(send, 200, b'{"status":"ok"}')
            return
        if path != EVENTS:
            raise HTTPError(404, f"no route {path}")
        headers = dict(scope["headers"])
        if self.keys is not None:
            header = headers.get(b"authorization") or (b"Bearer " + headers[b"x-mlops-key"]
                                                       if b"x-mlops-key" in headers else None)
            if not self.keys.allows(header):
                raise HTTPError(401, "missing or wrong endpoint key", ((b"www-authenticate", b"Bearer"),))
        if method == "POST":
            await self._post(headers, receive, send)
        elif method == "GET":
            await self._get(scope, send)
        else:
            raise HTTPError(405, f"{method} is not allowed on {path}")

    async def _post(self, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        relative = headers.get(b"x-mlops-file", b"").decode("ascii", "replace")
        if not RELATIVE_PATH.match(relative):
            raise HTTPError(400, "x-mlops-file must be <deployment>/YYYY/MM/DD/HH/<MM>-<pid>-<token>.jsonl")
        try:
            offset = int(headers.get(b"x-mlops-offset", b"0"))
        except ValueError:
            raise HTTPError(400, "x-mlops-offset is not a number") from None
        if offset < 0:
            raise HTTPError(400, "x-mlops-offset is negative")
        body = await read_body(receive, self.config.max_batch_bytes, headers.get(b"content-length"))
        if body and not body.endswith(b"\n"):
            raise HTTPError(400, "the body must be whole JSON lines, each ending with a newline")
        async with self._write:
            await asyncio.to_thread(store, self.root, relative, offset, body)
        self.stored += 1
        await respond(send, 200, dumps({"stored": body.count(b"\n")}))

    async def _get(self, scope: dict, send: Any) -> None:
        query = {k: v[-1].replace(" ", "+")  # an unencoded +00:00
                 for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        try:
            since = datetime.fromisoformat(query["since"]) if query.get("since") else None
            until = datetime.fromisoformat(query["until"]) if query.get("until") else None
            limit = min(int(query.get("limit", MAX_EVENTS)), MAX_EVENTS)
        except ValueError as error:
            raise HTTPError(400, f"bad query: {error}") from None
        deployment = query.get("deployment") or None
        if deployment is not None and "/" in deployment or deployment in (".", ".."):
            raise HTTPError(400, "bad deployment name")
        reader = EventReader(Path(self.config.data_dir), self.config.endpoint, deployment, since, until)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        sent, truncated = 0, False

        def batch() -> list[bytes]:
            return [dumps(event) + b"\n" for _, event in zip(range(min(READ_BATCH, limit - sent)), reader,
                                                             strict=False)]

        while True:
            lines = await asyncio.to_thread(batch) if sent < limit else []
            if not lines:
                truncated = sent >= limit and next(reader, None) is not None
                break
            sent += len(lines)
            await send({"type": "http.response.body", "body": b"".join(lines), "more_body": True})
        summary = {"summary": {"events": sent, "files_read": reader.files_read, "skipped": reader.skipped,
                               "truncated": truncated}}
        await send({"type": "http.response.body", "body": dumps(summary) + b"\n"})


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m pipeline.server.sink", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="SinkConfig as JSON")
    args = parser.parse_args(argv)
    try:
        config = SinkConfig.from_json(args.config.read_text())
        logs.configure(config.log_level, None)
        app = Sink(config)
    except Exception as error:  # a bad config, keys file or data folder
        print(f"error: cannot start the collection sink: {error}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=config.host, port=config.port, loop="uvloop", http="httptools", access_log=False,
                log_level=config.log_level, log_config=None, server_header=False, lifespan="on",
                timeout_graceful_shutdown=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
