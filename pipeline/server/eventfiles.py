"""The on-disk layout of collected events: the one writer and the one reader of it.

Layout (the scoring service's collector writes it, and so does the collection sink)::

    <data_dir>/<endpoint>/<deployment>/YYYY/MM/DD/HH/<MM>-<pid>-<token>.jsonl

``MM`` is the minute for ``rolling_rate: minute`` and ``00`` otherwise (``HH`` is ``00`` for
``day``); ``<pid>-<token>`` names the one process that wrote the file, so each file is in time
order. ``AppendFiles`` is the writer: files opened ``O_APPEND`` and kept open while in use, whole
lines written with one ``os.write``; the sink adds ``fsync``. It lives in the data plane because
both the scoring service and the sink (``pipeline.server.sink``) write it, and the sink reads it
back with ``EventReader``; ``pipeline.monitor.collected`` re-exports the reader.

Events come out in time order: folders and file names sort by period, and the files of one
period (one per process) are merged on their ``time`` field — each file is already in order
because its process appends events as they finish. A line that is not whole JSON (the torn last
line of a process killed mid-write, or any corrupt line) is skipped and counted in
``EventReader.skipped``; reading never fails because of one bad line. ``EventReader.files_read``
counts the files opened, so an empty window can say how much was looked at; a window opens only
the files whose period can overlap it (a minute, an hour, or a day for ``00/00-*`` files). Each event is a
``pipeline.server.events.Event``, the record the collector writes; a line that holds none (no
``time``, a field of the wrong type) is skipped and counted too. ``EventReader.newest(n)`` is the
bounded read of the last ``n`` events (``mlops plan --replay``): periods from the newest back.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path

try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads  # type: ignore[assignment]

from pipeline.server.events import Event

log = logging.getLogger("mlops.monitor")

ROUTER_FOLDER = "_router"  # the deployment folder of what the endpoint's router refused itself (not a DNS label)
_PERIOD_DEPTH = 4  # YYYY/MM/DD/HH below the deployment folder
# a file's path below <data_dir>/<endpoint>: what a shipper may name, checked before the sink writes it
RELATIVE_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9]{2}/"
                           r"[0-9]{2}-[0-9]{1,10}-[0-9a-f]{8}\.jsonl$")


def period_path(period: int, period_seconds: int, suffix: str) -> str:
    """The file of period number ``period`` below a deployment folder: ``YYYY/MM/DD/HH/<MM><suffix>``."""
    start = datetime.fromtimestamp(period * period_seconds, UTC)
    minute = f"{start.minute:02d}" if period_seconds == 60 else "00"
    return f"{start.strftime('%Y/%m/%d/%H')}/{minute}{suffix}"


def open_append(path: Path) -> int:
    """The one way event files are opened for writing: appended to, never rewritten in place."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)


class AppendFiles:
    """Open ``O_APPEND`` files by key, for one thread: whole lines go in with one ``os.write`` each, so a
    process killed mid-write leaves at most one torn last line."""

    def __init__(self) -> None:
        self.open: dict[object, tuple[int, Path]] = {}

    def fd(self, key: object, path: Path) -> int:
        found = self.open.get(key)
        if found is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            found = (open_append(path), path)
            try:  # held while the file is written: a shipper adopts only the files of processes gone
                fcntl.flock(found[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass
            self.open[key] = found
        return found[0]

    def close(self, key: object) -> None:
        found = self.open.pop(key, None)
        if found is not None:
            os.close(found[0])

    def close_all(self) -> None:
        for key in list(self.open):
            self.close(key)

    def paths(self) -> set[Path]:
        return {path for _, path in self.open.values()}



def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hour_of(path: Path) -> datetime | None:
    """The start of the hour a file's folder stands for (None when the path is not ours)."""
    try:
        year, month, day, hour = (int(p) for p in path.parent.parts[-_PERIOD_DEPTH:])
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return None


def _span(hour: datetime, name: str) -> int:
    """How many seconds a file may cover from its folder's hour: a minute-rolled file (``MM`` not 00)
    one minute from ``MM``, a file of an hour other than 00 one hour (it is not day-rolled), and only
    ``00/00-*`` a whole day. So a short ``--since`` opens the files of its window, not of the whole day."""
    minute = int(name[:2]) if name[:2].isdigit() else 0
    if minute:
        return (minute + 1) * 60
    return 3600 if hour.hour else 86400


class EventReader:
    """An iterator of ``Event``; ``skipped`` counts the lines that could not be decoded, ``files_read``
    the files opened so far."""

    def __init__(self, data_dir: Path, endpoint: str | None = None, deployment: str | None = None,
                 since: datetime | None = None, until: datetime | None = None, ordered: bool = True):
        self.root = Path(data_dir)
        self.endpoint = endpoint
        self.deployment = deployment
        self.since = _utc(since)
        self.until = _utc(until)
        self.ordered = ordered
        self.skipped = 0
        self.files_read = 0
        self._events = self._read()

    def __iter__(self) -> Iterator[Event]:
        return self._events  # the generator itself: no method call per event

    def __next__(self) -> Event:
        return next(self._events)

    def _deployment_folders(self) -> list[Path]:
        if self.endpoint:
            endpoints = [self.root / self.endpoint]
        else:
            endpoints = sorted(p for p in self.root.glob("*") if p.is_dir())
        folders = []
        for endpoint in endpoints:
            if self.deployment:
                folders.append(endpoint / self.deployment)
            else:
                folders.extend(sorted(p for p in endpoint.glob("*") if p.is_dir()))
        return [f for f in folders if f.is_dir()]

    def _files(self) -> list[tuple[str, Path, bool]]:
        """(period key, file, whether its events need the window checked) in period order, files
        outside the time window left out; a file whose whole period lies inside the window is read
        without parsing each event's time (the collector files each event by that time)."""
        chosen = []
        since = self.since.timestamp() if self.since is not None else None
        until = self.until.timestamp() if self.until is not None else None
        for folder in self._deployment_folders():
            for path in folder.glob("*/*/*/*/*.jsonl"):
                hour = _hour_of(path)
                if hour is None:
                    continue
                start = hour.timestamp()
                end = start + _span(hour, path.name)
                if (until is not None and start > until) or (since is not None and end <= since):
                    continue
                check = (since is not None and start < since) or (until is not None and end > until)
                period = "/".join(path.parent.parts[-_PERIOD_DEPTH:]) + "/" + path.name.split("-", 1)[0]
                chosen.append((period, path, check))
        chosen.sort()
        return chosen

    def _lines(self, path: Path, check: bool) -> Iterator[Event]:
        self.files_read += 1
        decode, in_window = Event.from_json, self._in_window
        with open(path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):  # torn: the writer was killed mid-line
                    self.skipped += 1
                    log.warning("%s: skipped a torn last line", path)
                    continue
                try:
                    event = decode(_loads(line))
                except ValueError:
                    self.skipped += 1
                    log.warning("%s: skipped a line that is not JSON", path)
                    continue
                if event is None:
                    self.skipped += 1
                    continue
                if not check or in_window(event.time):
                    yield event

    def _in_window(self, text: str) -> bool:
        if self.since is None and self.until is None:
            return True
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.skipped += 1
            return False
        moment = _utc(moment) or moment
        return (self.since is None or moment >= self.since) and (self.until is None or moment < self.until)

    def _period(self, group: Iterator[tuple[str, Path, bool]]) -> Iterator[Event]:
        """The events of one period's files (one per process), merged in time order unless the
        reader was asked for no order."""
        streams = [self._lines(path, check) for _, path, check in group]
        if len(streams) == 1:
            return streams[0]
        if not self.ordered:
            return (event for stream in streams for event in stream)
        return heapq.merge(*streams, key=attrgetter("time"))

    def _read(self) -> Iterator[Event]:
        for _, group in groupby(self._files(), key=itemgetter(0)):
            yield from self._period(group)

    def newest(self, limit: int, keep: Callable[[Event], bool] = lambda event: True) -> list[Event]:
        """The last ``limit`` events ``keep`` accepts, in time order, read from the newest period back:
        older periods are never opened once enough is found, and at most ``limit`` events are held."""
        found: list[Event] = []
        periods = [list(group) for _, group in groupby(self._files(), key=itemgetter(0))]
        for period in reversed(periods):
            if len(found) >= limit:
                break
            tail = deque((event for event in self._period(iter(period)) if keep(event)),
                         maxlen=limit - len(found))
            found[:0] = tail
        return found


def read_events(data_dir: Path, endpoint: str | None = None, deployment: str | None = None,
                since: datetime | None = None, until: datetime | None = None, ordered: bool = True) -> EventReader:
    """Collected events under ``data_dir`` in time order, optionally for one endpoint/deployment and
    within ``[since, until)`` (naive datetimes are taken as UTC). ``ordered=False`` leaves the files
    of one period (one per process) unmerged: period by period, each file in order, for readers to
    whom order does not matter (the monitor's report), at less cost per event."""
    return EventReader(data_dir, endpoint, deployment, since, until, ordered)
