"""The data collector: what the service was asked and what it answered, as JSON lines on disk.

Scoring never waits on the disk. After the response is sent, the event loop keeps the event (a
tuple of references: nothing is copied) and every 64 events serializes them to JSON lines in one
tight loop. Once a second (or at once when half the queue limit is reached, or an event falls in
a new file period) the loop hands the lines to a writer thread, which joins them and writes them
with one ``os.write`` of whole lines to a file opened ``O_APPEND``: a process killed with SIGKILL
leaves at most one torn last line, which the reader (``pipeline.monitor.collected``) skips. What
is not written yet is bounded (events and bytes); past that, events are dropped and counted (a
metric, and a warning at most every 10 s). An event that cannot be serialized is dropped on its
own and counted too (``unserializable``): it never holds up or loses the others.
``close()`` writes everything: SIGTERM loses nothing.

With a collection sink (``ServerConfig.collection_sink``, on Kubernetes, where the data folder is
an ``emptyDir`` that dies with the pod) these files are a spool: the writer thread also runs the
``Shipper`` (``pipeline.server.shipper``) after each write, which posts the new whole lines to the
sink and deletes a file once it is closed and acknowledged; ``close()`` then ships what is left,
retrying until ``ship_grace`` seconds have passed.

Why this shape, measured on a 0.1 ms model at 16 connections:

* a writer thread that serialized events itself cost 16 % of the throughput: a second thread
  running Python steals the GIL each time the scoring thread releases it (every syscall; a random
  forest releases it per tree) and gives it back only after the 5 ms switch interval;
* a writer waking 5 times a second, even to do almost nothing, cost 8 % (on the random forest);
  this one wakes only when lines are handed over, about once a second under load, never idle;
* serializing each event as it comes cost 8.5 % (about 12 µs in place, though 3 µs in a
  micro-benchmark: orjson and the model evict each other from the CPU caches); 64 at a time
  cost 1.5 %.

Files roll by the event's UTC time::

    <data_dir>/<endpoint>/<deployment>/YYYY/MM/DD/HH/<MM>-<pid>-<token>.jsonl

where ``MM`` is the minute for ``rolling_rate: minute`` and ``00`` otherwise (``HH`` is ``00`` for
``day``); ``token`` is random per process, so instances sharing a folder (or a reused pid in a
container) never share a file. Each line is one ``pipeline.server.events.Event`` as JSON. The layout
and the writer (``AppendFiles``) live in ``pipeline.server.eventfiles``, shared with the sink.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import reprlib
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import InvalidInput
from pipeline.runtime.jsonio import dumps, parse_json
from pipeline.server.eventfiles import AppendFiles, period_path
from pipeline.server.events import Event
from pipeline.server.shipper import Shipper

log = logging.getLogger("mlops.server.collector")

PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_QUEUE = 50_000
MAX_QUEUE_BYTES = 64 * 1024 * 1024
WARN_EVERY_SECONDS = 10.0
SERIALIZE_EVERY = 64
_ID_BLOCK = 256  # event ids drawn from the OS this many at a time


class Collector:
    """Call ``record`` (and ``sampled``) from one thread only: the event loop's."""

    def __init__(self, data_dir: Path, *, endpoint: str, deployment: str, model: str | None,
                 model_version: int | None,
                 sampling_rate: float = 1.0, rolling_rate: str = "hour", max_queue: int = MAX_QUEUE,
                 max_queue_bytes: int = MAX_QUEUE_BYTES, flush_seconds: float = 1.0,
                 shipper: Shipper | None = None, ship_grace: float = 20.0):
        self.folder = Path(data_dir) / endpoint / deployment
        self.shipper = shipper
        self.ship_grace = ship_grace
        self.sampling_rate = sampling_rate
        self.period = PERIOD_SECONDS[rolling_rate]
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.flush_seconds = flush_seconds
        self.dropped = 0  # queue full
        self.unserializable = 0  # an event no JSON encoder could write
        self._static = (endpoint, deployment, model, model_version)
        # Counters with one writer each (no read-modify-write shared between threads).
        self._recorded = self._recorded_bytes = 0  # the loop's
        self.written = self.failed = self._written_bytes = 0  # the writer's
        self._pending: list[tuple] = []  # events not serialized yet
        self._batch: list[bytes] = []
        self._batch_period = -1
        self._handed: deque[tuple[int, list[bytes]]] = deque()  # batches for the writer
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._suffix = f"-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._files = AppendFiles()  # by period number (writer thread only)
        self._ids: list[str] = []
        self._second = -1
        self._second_text = ""
        self._last_warning = 0.0
        self._random = random.random

    # -- the event loop's side -------------------------------------------------------------------
    def sampled(self) -> bool:
        rate = self.sampling_rate
        return rate >= 1.0 or (rate > 0.0 and self._random() < rate)

    def record(self, route: str, status: int, latency_ms: float, inputs: Any, outputs: Any,
               error: str | None) -> None:
        """Keep one (sampled) event; never blocks, drops and counts when too much is unwritten."""
        if self._recorded - self.written - self.failed >= self.max_queue \
                or self._recorded_bytes - self._written_bytes >= self.max_queue_bytes:
            self._drop()
            return
        when = time.time()
        period = int(when // self.period)
        if period != self._batch_period:
            self.hand_over()
            self._batch_period = period
        self._pending.append((when, route, status, latency_ms, inputs, outputs, error))
        self._recorded += 1
        if len(self._pending) >= SERIALIZE_EVERY:
            self._serialize()

    def _serialize(self) -> None:
        """Turn the pending events into lines, in one tight loop (3× cheaper than one at a time).

        Each event is serialized on its own: one that cannot be (nested too deep for the encoder,
        say) is dropped and counted in ``unserializable``, and the others are written as usual.
        """
        line = self._line
        lines = []
        for event in self._pending:
            try:
                lines.append(line(*event))
            except Exception as failure:  # whatever it is, it must not stop the rest
                self._unserializable(failure)
        self._pending.clear()
        self._recorded_bytes += sum(map(len, lines))
        self._batch.extend(lines)
        if len(self._batch) >= self.max_queue // 2:
            self.hand_over()  # a burst: write now rather than at the next tick

    @property
    def depth(self) -> int:
        """Events recorded but not written yet."""
        return self._recorded - self.written - self.failed

    def hand_over(self) -> None:
        """Give the current batch to the writer thread (one wake-up)."""
        if self._pending:
            self._serialize()
        if self._batch:
            self._handed.append((self._batch_period, self._batch))
            self._batch = []
            self._wake.set()

    def _tick(self) -> None:
        self.hand_over()
        if not self._stopping:
            self._timer = asyncio.get_running_loop().call_later(self.flush_seconds, self._tick)

    def _unserializable(self, failure: Exception) -> None:
        self.unserializable += 1
        self._recorded -= 1  # never to be written: not part of the queue depth
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("data collector dropped an event it cannot serialize (%s: %s); %d so far",
                        type(failure).__name__, failure, self.unserializable)

    def _drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning("data collector queue full: %d events dropped so far", self.dropped)

    def _event_id(self) -> str:
        """A random (version 4) UUID as hex, like ``uuid4().hex`` at a third of the cost."""
        if not self._ids:
            block = os.urandom(16 * _ID_BLOCK).hex()
            self._ids = [block[i:i + 12] + "4" + block[i + 13:i + 16] + "89ab"[int(block[i + 16], 16) & 3]
                         + block[i + 17:i + 32] for i in range(0, len(block), 32)]
        return self._ids.pop()

    def _timestamp(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((when - second) * 1e6):06d}+00:00"

    def _line(self, when: float, route: str, status: int, latency_ms: float, inputs: Any, outputs: Any,
              error: str | None) -> bytes:
        event = Event(self._event_id(), self._timestamp(when), *self._static, route, status, round(latency_ms, 3),
                      _json_value(inputs), outputs, error)
        try:
            return dumps(event) + b"\n"
        except (TypeError, ValueError) as failure:  # a model returned something JSON cannot hold
            event.outputs = reprlib.repr(outputs)
            event.error = error or f"outputs not serializable: {failure}"
            return dumps(event) + b"\n"  # still failing (the inputs): _serialize drops the event

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer, and the once-a-second hand-over when called on a running event loop."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="mlops-collector", daemon=True)
        self._thread.start()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.flush_seconds, self._tick)

    def close(self, timeout: float | None = None) -> None:
        """Write everything recorded, then stop the writer and close the files.

        Call it from the loop's thread, or once nothing records any more (after uvicorn finished
        the in-flight requests).
        """
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        self.hand_over()
        self._wake.set()
        if timeout is None:
            timeout = 10.0 + (self.ship_grace if self.shipper is not None else 0.0)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._finish()

    def _finish(self) -> None:
        """Write what was handed over, close the files, and ship what is spooled within the grace."""
        self._write_handed()
        written = self._files.paths()
        self._files.close_all()
        if self.shipper is not None:
            self.shipper.track(written)
            if not self.shipper.ship(set(), deadline=time.monotonic() + self.ship_grace):
                log.error("collection sink unreachable at shutdown: %d spool file(s) stay in %s for the next "
                          "instance on this folder", len(self.shipper.offsets), self.shipper.spool)
            self.shipper.close()

    # -- the writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        shipper = self.shipper
        if shipper is not None and shipper.adopt_leftovers():
            shipper.ship(set())
        while not self._stopping:
            self._wake.wait(shipper.retry_in() if shipper is not None else None)
            self._wake.clear()
            self._write_handed()
            if shipper is not None and not self._stopping:
                shipper.ship(self._files.paths())
        self._finish()

    def _write_handed(self) -> None:
        while self._handed:
            period, lines = self._handed.popleft()
            data = b"".join(lines)
            try:
                os.write(self._fd(period), data)
                self.written += len(lines)
            except OSError as error:
                log.error("data collector cannot write %d events: %s", len(lines), error)
                self.failed += len(lines)
            self._written_bytes += len(data)

    def _fd(self, period: int) -> int:
        if period in self._files.open:
            return self._files.fd(period, Path())
        for old in [p for p in self._files.open if isinstance(p, int) and p < period]:
            self._files.close(old)  # periods only move forward
        path = self.folder / period_path(period, self.period, self._suffix)
        if self.shipper is not None:
            self.shipper.track({path})  # even when it is closed again before the next ship
        return self._files.fd(period, path)


def _json_value(inputs: Any) -> Any:
    """Raw request bodies (the python flavor, bodies refused as malformed) are recorded as the JSON
    they hold when it is within the request bounds, else as text."""
    if isinstance(inputs, bytes | bytearray):
        try:
            return parse_json(inputs)
        except InvalidInput:
            return inputs.decode("utf-8", "replace")
    return inputs
