"""Ship spooled event files to the endpoint's collection sink (``pipeline.server.sink``).

On Kubernetes a scoring pod's data folder is an ``emptyDir``, gone with the pod: there the collector
still writes its files (the spool), and the shipper posts their whole lines to the sink, which
fsyncs them on its volume before answering 200. Only then does the shipper move past them, and a
file is deleted once the collector has closed it and every whole line of it is acknowledged.

It runs in the collector's writer thread, right after a write: no thread of its own (a second
thread running Python costs the scoring thread the GIL, see ``pipeline.server.collector``), and it
is woken only when there is work (lines written, or a failed post to retry after a capped
backoff). Each post names the file and the offset of its first byte, so a post repeated after a
lost answer, or a file shipped again from its start by the next process, is written once: the sink
cuts its copy back to that offset before appending.

Spool files left by an earlier process on the same folder (a container restarted in the same pod
after a crash or an OOM kill) are shipped too: at start every file no live process holds (an
``flock`` the writer takes) is shipped and deleted. A torn last line is never shipped.
"""

from __future__ import annotations

import fcntl
import http.client
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.keys import KEY_NAMES, read_keys
from pipeline.server.eventfiles import RELATIVE_PATH

log = logging.getLogger("mlops.server.shipper")

CHUNK_BYTES = 4 * 1024 * 1024  # at most this much per post (the sink takes up to MAX_BATCH_BYTES)
BACKOFF_SECONDS, BACKOFF_CAP_SECONDS = 0.5, 30.0
TIMEOUT_SECONDS = 10.0
WARN_EVERY_SECONDS = 30.0
EVENTS_PATH = "/v1/events"


class Shipper:
    """Posts the spool files below ``spool`` (``<data_dir>/<endpoint>``) to ``url``; one thread only."""

    def __init__(self, url: str, spool: Path, keys_file: Path | None = None, *,
                 clock=time.monotonic, timeout: float = TIMEOUT_SECONDS):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"collection sink {url!r} is not an http:// URL")
        self.host, self.port = parts.hostname, parts.port or 80
        self.spool = Path(spool)
        self.keys_file = keys_file
        self.clock = clock
        self.timeout = timeout
        self.offsets: dict[Path, int] = {}  # files to ship -> bytes acknowledged by the sink
        self.shipped = self.posts = self.failures = 0  # lines acknowledged, posts made, posts failed
        self._retry_at: float | None = None
        self._backoff = BACKOFF_SECONDS
        self._last_warning = -WARN_EVERY_SECONDS
        self._connection: http.client.HTTPConnection | None = None
        self._key: str | None = None

    # -- what there is to ship ---------------------------------------------------------------------
    def adopt_leftovers(self) -> int:
        """Take the spool files of processes that are gone (no one holds their lock); how many."""
        found = 0
        for path in sorted(self.spool.glob("*/*/*/*/*/*.jsonl")):
            if path in self.offsets or not RELATIVE_PATH.match(path.relative_to(self.spool).as_posix()):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live process writes it
            finally:
                os.close(fd)
            self.offsets[path] = 0
            found += 1
        if found:
            log.info("shipping %d spool file(s) left by an earlier process", found)
        return found

    def track(self, paths: set[Path]) -> None:
        """Files the collector writes (or wrote): shipped from their start unless known already."""
        for path in paths:
            self.offsets.setdefault(path, 0)

    def retry_in(self, now: float | None = None) -> float | None:
        """Seconds until a failed post is due again; None when nothing waits (sleep until woken)."""
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - (self.clock() if now is None else now))

    # -- shipping ----------------------------------------------------------------------------------
    def ship(self, writing: set[Path], deadline: float | None = None) -> bool:
        """Post what is spooled and not acknowledged (oldest first); True when nothing is left over.

        ``writing`` are the files the collector still appends to: kept after shipping, and their
        unfinished last line waits. Before a due retry nothing is posted, unless ``deadline`` is given
        (the last flush at shutdown, which retries until then).
        """
        self.track(writing)
        if self._retry_at is not None and deadline is None and self.clock() < self._retry_at:
            return False
        while True:
            try:
                self._ship_all(writing)
                self._retry_at, self._backoff = None, BACKOFF_SECONDS
                return True
            except Exception as error:  # whatever it is, it must not stop the collector's writer thread
                self._failed(error)
                if deadline is None:
                    return False
                wait = min(self._backoff, deadline - self.clock())
                if wait <= 0:
                    return False
                time.sleep(wait)

    def _ship_all(self, writing: set[Path]) -> None:
        for path in sorted(self.offsets):
            offset = self.offsets[path]
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                del self.offsets[path]
                continue
            while offset < size:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read(min(size - offset, CHUNK_BYTES))
                end = data.rfind(b"\n") + 1
                if end == 0 and len(data) == CHUNK_BYTES:  # one line longer than a chunk: send it whole
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        line = handle.readline()
                    data, end = line, len(line) if line.endswith(b"\n") else 0
                if end == 0:
                    break  # an unfinished (or torn) last line
                self._post(path.relative_to(self.spool).as_posix(), offset, data[:end])
                offset += end
                self.offsets[path] = offset
                self.shipped += data[:end].count(b"\n")
            if path not in writing:
                os.unlink(path)  # closed by its writer and every whole line acknowledged
                del self.offsets[path]

    def _post(self, relative: str, offset: int, body: bytes) -> None:
        headers = {"content-type": "application/x-ndjson", "x-mlops-file": relative, "x-mlops-offset": str(offset)}
        key = self._bearer()
        if key:
            headers["authorization"] = f"Bearer {key}"
        self.posts += 1
        connection = self._connection or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._connection = connection
        try:
            connection.request("POST", EVENTS_PATH, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read(4096)
        except BaseException:
            connection.close()
            self._connection = None
            raise
        if response.status != 200:
            if response.status == 401:
                self._key = None  # rotated: read the keys file again
            raise ShipError(f"HTTP {response.status}: {answer[:200].decode('utf-8', 'replace')}")

    def _bearer(self) -> str | None:
        if self.keys_file is None:
            return None
        if self._key is None:
            keys = read_keys(self.keys_file)
            self._key = next((str(keys[name]) for name in KEY_NAMES if keys.get(name)), None)
        return self._key

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        self._retry_at = self.clock() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_CAP_SECONDS)
        now = self.clock()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            pending = sum(max(0, _size(p) - o) for p, o in self.offsets.items())
            log.warning("collection sink %s:%d did not take the events (%s: %s); %d bytes stay spooled, retrying",
                        self.host, self.port, type(error).__name__, error, pending)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ShipError(Exception):
    """The sink answered, but not 200."""


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
