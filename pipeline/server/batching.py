"""Adaptive batching: the rows of concurrent requests to one deployment scored by one ``predict``.

Why: a call into a model has a fixed cost besides its rows (a 50-tree random forest spends ~1.8 ms
of scikit-learn's per-call overhead on a 1-row request and ~0.1 ms on the rows), so a single-row
server tops out at ~470 req/s whatever it does around ``predict``. Scoring many callers' rows in
one call divides that cost among them.

How a batch forms, all on the event loop (no lock, no thread until a batch runs):

* A request joins only after its own rows were validated and converted, so a malformed request is
  answered 400 alone and never reaches a batch. Requests batch together when their input arrays
  agree in name, dtype and width and they ask for the same outputs (``key_of``).
* A batch is decided one loop iteration after its first member joined, so requests that arrived
  together are in it. Then it runs at once — a lone request on an idle instance waits for nothing —
  unless there is evidence that more are coming:

  - a batch is running (in a thread): the next one grows until the model is free;
  - recent batches held more requests than this one and the instance finished a batch within
    ``max_wait`` (clients whose answers just left are sending their next request): it waits for
    that many, at most the measured time of one predict call — waiting longer than a call takes
    could cost more than the call it saves. Such a wait that ends short lowers the expectation
    to what came, so a client that left costs one short wait.

  A full batch (``max_rows`` rows) runs at once, and no batch waits longer than ``max_wait``
  after its first member joined.
* The rows are stacked (``numpy.concatenate``), predicted in one call, and each caller gets its own
  slice. When the call raises, or its answer does not have one row per input row, the members are
  scored one by one, so only a guilty request fails.

The caller owns admission (a concurrency slot per request, taken before joining); the batcher
gives the slots back when its predict call really finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

Outcome = tuple[bool, Any]  # (True, answer) or (False, the exception)


class Expired(Exception):
    """The request's deadline passed while its batch ran in a thread."""


def key_of(kind: Hashable, arrays: dict[str, np.ndarray], rows: int) -> Hashable | None:
    """What requests must share to be stacked, or None when the arrays cannot be (a scalar, or
    inputs of different lengths)."""
    if len(arrays) == 1:  # the common case, kept cheap: it is paid by every request
        ((name, array),) = arrays.items()
        shape = array.shape
        return (kind, name, array.dtype, shape[1:]) if shape and shape[0] == rows else None
    parts: list[Hashable] = [kind]
    for name, array in arrays.items():
        if array.ndim < 1 or array.shape[0] != rows:
            return None
        parts.append((name, array.dtype, array.shape[1:]))
    return tuple(parts)


@dataclass(eq=False, slots=True)
class _Member:
    payload: dict[str, np.ndarray]
    rows: int
    deadline: float  # time.perf_counter() seconds
    future: asyncio.Future[Any]
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class _Forming:
    key: Hashable
    fn: Callable[[Any], Any]
    first: float  # when the first member joined
    members: list[_Member]
    rows: int = 0
    decision_due: bool = False  # a call to _decide is scheduled, or the leader will decide
    lead: tuple[dict[str, np.ndarray], int, float] | None = None  # the leader, while it is not a member
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """The forming batches of one scoring service, by key. Only the event loop calls its methods."""

    def __init__(self, *, max_rows: int, max_wait: float, pool: Executor, runs_inline: Callable[[int], bool],
                 cost: Callable[[], float], learn: Callable[[float], None], release: Callable[[int], None],
                 observe: Callable[[int], None]):
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.pool = pool
        self.runs_inline = runs_inline  # rows → whether that call may run on the loop
        self.cost = cost  # seconds of one predict call, as measured so far
        self.learn = learn
        self.release = release  # gives back that many concurrency slots
        self.observe = observe  # requests per predict call, for the metrics
        self.forming: dict[Hashable, _Forming] = {}
        self.running = 0  # batches in threads
        self.expected = 1  # requests the recent batches held
        self.last_finished = 0.0

    async def score(self, key: Hashable, fn: Callable[[Any], Any], payload: dict[str, np.ndarray], rows: int,
                    deadline: float) -> Any:
        """Join ``payload`` (already validated) to the batch of ``key``; its own part of the answer.

        The request that starts a batch leads it: it yields one loop iteration (others that arrived
        with it join meanwhile), then decides. Still alone with nothing to wait for, it scores
        itself on the spot: a lone request pays one yield and little bookkeeping.
        """
        forming = self.forming.get(key)
        if forming is not None:
            return await self._join(forming, payload, rows, deadline).future
        forming = self.forming[key] = _Forming(key, fn, time.perf_counter(), [], rows, True,
                                               lead=(payload, rows, deadline))
        try:
            await asyncio.sleep(0)
        except BaseException:
            self._enlist_leader(forming)
            self._decide(forming)
            raise
        if forming.lead is not None and self._alone(forming):
            del self.forming[key]
            self.expected = 1
            self.observe(1)
            began = time.perf_counter()
            try:
                return fn(payload)
            finally:
                self.last_finished = finished = time.perf_counter()
                self.learn(finished - began)
                self.release(1)
        member = self._enlist_leader(forming)
        self._decide(forming)
        return await member.future

    def _alone(self, forming: _Forming) -> bool:
        """Whether a batch of its leader only should run now, inline: nothing joined, nothing runs,
        and recent batches were single or the instance was idle."""
        return self.forming.get(forming.key) is forming and not forming.members and not self.running \
            and (self.expected <= 1 or time.perf_counter() - self.last_finished > self.max_wait) \
            and self.runs_inline(forming.rows)

    def _enlist_leader(self, forming: _Forming) -> _Member:
        """The leader as a member of its batch (made only when the batch is more than its leader)."""
        if forming.lead is None:
            return forming.members[0]
        payload, rows, deadline = forming.lead
        forming.lead = None
        member = _Member(payload, rows, deadline, asyncio.get_running_loop().create_future())
        forming.members.insert(0, member)
        return member

    def _join(self, forming: _Forming, payload: dict[str, np.ndarray], rows: int, deadline: float) -> _Member:
        """Add a member to a forming batch (or, when it would overflow, to a new one after it)."""
        loop = asyncio.get_running_loop()
        if forming.rows + rows > self.max_rows:
            self._flush(forming)
            forming = self.forming[forming.key] = _Forming(forming.key, forming.fn, time.perf_counter(), [])
        member = _Member(payload, rows, deadline, loop.create_future())
        forming.members.append(member)
        forming.rows += rows
        if forming.rows >= self.max_rows:
            self._flush(forming)
        elif not forming.decision_due:  # a batch waiting for more (or new): did enough come?
            forming.decision_due = True
            loop.call_soon(self._decide, forming)
        return member

    # -- when a batch runs -----------------------------------------------------------------------
    def _decide(self, forming: _Forming) -> None:
        forming.decision_due = False
        if self.forming.get(forming.key) is not forming:
            return  # already flushed
        self._enlist_leader(forming)  # called early (a running batch finished): count the leader too
        now = time.perf_counter()
        bound = forming.first + self.max_wait
        if self.running:
            until = bound
        elif len(forming.members) < self.expected and now - self.last_finished <= self.max_wait:
            until = forming.first + min(self.max_wait, self.cost())
        else:
            self._flush(forming, short=len(forming.members) < self.expected)
            return
        if now >= until:
            self._flush(forming, short=not self.running)
            return
        if forming.timer is not None:
            forming.timer.cancel()
        forming.timer = asyncio.get_running_loop().call_later(until - now, self._flush, forming, True)

    def _flush(self, forming: _Forming, short: bool = False) -> None:
        if self.forming.get(forming.key) is not forming:
            return
        del self.forming[forming.key]
        self._enlist_leader(forming)
        if forming.timer is not None:
            forming.timer.cancel()
        count = len(forming.members)
        self.expected = count if short else max(self.expected, count)
        self.observe(count)
        if self.runs_inline(forming.rows):
            began = time.perf_counter()
            outcomes = score_members(forming.fn, forming.members)
            self.learn(time.perf_counter() - began)
            self._settle(forming.members, outcomes)
            return
        loop = asyncio.get_running_loop()
        self.running += 1
        began = time.perf_counter()
        future = self.pool.submit(score_members, forming.fn, forming.members)
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(
            self._finished, forming.members, done, time.perf_counter() - began))
        for member in forming.members:
            member.timer = loop.call_later(member.deadline - began, _expire, member)

    def _finished(self, members: list[_Member], done: Future[list[Outcome]], seconds: float) -> None:
        self.running -= 1
        self.learn(seconds)
        try:
            outcomes = done.result()
        except BaseException as error:  # cancelled at shutdown
            outcomes = [(False, error)] * len(members)
        self._settle(members, outcomes)
        for forming in list(self.forming.values()):  # they waited for the model to be free
            self._decide(forming)

    def _settle(self, members: list[_Member], outcomes: list[Outcome]) -> None:
        self.release(len(members))
        self.last_finished = time.perf_counter()
        for member, (ok, value) in zip(members, outcomes, strict=True):
            if member.timer is not None:
                member.timer.cancel()
            if member.future.done():
                continue  # expired, or its caller went away
            if ok:
                member.future.set_result(value)
            else:
                member.future.set_exception(value)


def _expire(member: _Member) -> None:
    if not member.future.done():
        member.future.set_exception(Expired())


# -- one predict call for many requests (in a worker thread, or inline) ------------------------------
def score_members(fn: Callable[[Any], Any], members: list[_Member]) -> list[Outcome]:
    """Each member's answer (or exception) from one call on the stacked rows, else one call each."""
    if len(members) > 1:
        try:
            stacked = {name: np.concatenate([m.payload[name] for m in members]) for name in members[0].payload}
            return [(True, part) for part in _split(fn(stacked), [m.rows for m in members])]
        except Exception:  # noqa: S110 - the guilty member fails again below, alone
            pass
    return [_one(fn, member.payload) for member in members]


def _one(fn: Callable[[Any], Any], payload: Any) -> Outcome:
    try:
        return True, fn(payload)
    except Exception as error:
        return False, error


def _split(result: Any, rows: list[int]) -> list[Any]:
    """The answer cut into each member's rows; ValueError when it does not have one row per input row."""
    total = sum(rows)
    bounds = np.cumsum([0, *rows]).tolist()
    if isinstance(result, dict):
        arrays = {name: np.asarray(value) for name, value in result.items()}
        if not all(a.ndim >= 1 and a.shape[0] == total for a in arrays.values()):
            raise ValueError("the model's outputs do not have one row per input row")
        return [{name: a[start:end] for name, a in arrays.items()} for start, end in pairwise(bounds)]
    if isinstance(result, np.ndarray) and result.ndim < 1 or not isinstance(result, np.ndarray | list) \
            or len(result) != total:
        raise ValueError("the model's answer does not have one row per input row")
    return [result[start:end] for start, end in pairwise(bounds)]
