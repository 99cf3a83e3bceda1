"""The batcher's rules on a real event loop and thread pool, with small functions for models: when
a batch runs, how long it may wait, and that each member gets its own rows or its own error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from pipeline.server.batching import Batcher, Expired, key_of

KEY = key_of("score", {"x": np.zeros((1, 2))}, 1)


class Recorder:
    """A model that doubles its rows and records the size and start of every call."""

    def __init__(self, seconds: float = 0.0, fail_on: float | None = None, rows_out: bool = True):
        self.seconds, self.fail_on, self.rows_out = seconds, fail_on, rows_out
        self.calls: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def __call__(self, payload: dict[str, np.ndarray]) -> Any:
        x = payload["x"]
        with self.lock:
            self.calls.append((len(x), time.perf_counter()))
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError(f"cannot score {self.fail_on}")
        return x[:, 0] * 2 if self.rows_out else float(x.sum())


def make_batcher(pool: ThreadPoolExecutor, *, inline: bool = True, max_rows: int = 64, max_wait: float = 0.05,
                 cost: float = 10.0) -> tuple[Batcher, list[int]]:
    released: list[int] = []
    batcher = Batcher(max_rows=max_rows, max_wait=max_wait, pool=pool, runs_inline=lambda rows: inline,
                      cost=lambda: cost, learn=lambda seconds: None, release=released.append,
                      observe=lambda count: None)
    return batcher, released


def join(batcher: Batcher, *args: Any) -> asyncio.Future[Any]:
    """A request's task joining the batcher (it starts on the next loop iteration, like a request's)."""
    return asyncio.ensure_future(batcher.score(*args))


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v, 0.0] for v in values])}


def run(scenario: Callable[[ThreadPoolExecutor], Any]) -> Any:
    with ThreadPoolExecutor(4) as pool:
        return asyncio.run(scenario(pool))


def test_requests_arriving_together_are_one_call_and_each_gets_its_own_rows():
    model = Recorder()

    async def scenario(pool):
        batcher, released = make_batcher(pool)
        futures = [join(batcher, KEY, model, rows(*range(i, i + n)), n, time.perf_counter() + 5)
                   for i, n in ((0, 1), (10, 3), (20, 2))]
        return [f.tolist() for f in await asyncio.gather(*futures)], released

    answers, released = run(scenario)
    assert answers == [[0], [20, 22, 24], [40, 42]]
    assert [size for size, _ in model.calls] == [6]
    assert released == [3]  # every member's slot, given back once the call finished


def test_a_lone_request_on_an_idle_server_is_not_held():
    model = Recorder()

    async def scenario(pool):
        batcher, _ = make_batcher(pool, max_wait=1.0)
        began = time.perf_counter()
        await join(batcher, KEY, model, rows(1), 1, began + 5)
        return time.perf_counter() - began

    assert run(scenario) < 0.05  # not the 1 s max_wait


def test_after_bigger_batches_a_batch_waits_for_more_but_never_beyond_the_bound():
    model = Recorder()

    async def scenario(pool):
        batcher, _ = make_batcher(pool, max_wait=0.2)
        await asyncio.gather(*[join(batcher, KEY, model, rows(i), 1, time.perf_counter() + 5) for i in range(4)])
        began = time.perf_counter()
        first = join(batcher, KEY, model, rows(10), 1, began + 5)  # the others are "on their way"
        await asyncio.sleep(0.05)
        second = join(batcher, KEY, model, rows(11), 1, began + 5)
        await asyncio.gather(first, second)
        waited = time.perf_counter() - began
        began = time.perf_counter()  # two came: two are now enough
        await asyncio.gather(*[join(batcher, KEY, model, rows(i), 1, began + 5) for i in (12, 13)])
        two = time.perf_counter() - began
        await asyncio.sleep(0.25)  # idle for longer than the bound: a lone request is not held
        began = time.perf_counter()
        await join(batcher, KEY, model, rows(14), 1, began + 5)
        return waited, two, time.perf_counter() - began

    waited, two, lone_after_idle = run(scenario)
    assert [size for size, _ in model.calls] == [4, 2, 2, 1]
    assert 0.19 <= waited < 0.3
    assert two < 0.05 and lone_after_idle < 0.05


def test_the_wait_for_more_is_bounded_by_the_measured_cost_of_a_call():
    model = Recorder()

    async def scenario(pool):
        batcher, _ = make_batcher(pool, max_wait=1.0, cost=0.02)
        await asyncio.gather(*[join(batcher, KEY, model, rows(i), 1, time.perf_counter() + 5) for i in range(4)])
        began = time.perf_counter()
        await join(batcher, KEY, model, rows(10), 1, began + 5)
        return time.perf_counter() - began

    assert run(scenario) < 0.2  # ~0.02 s, far below the 1 s bound


def test_a_batch_forming_while_one_runs_starts_within_the_bound():
    model = Recorder(seconds=0.5)

    async def scenario(pool):
        batcher, _ = make_batcher(pool, inline=False, max_wait=0.05)
        first = join(batcher, KEY, model, rows(1), 1, time.perf_counter() + 5)
        await asyncio.sleep(0.02)  # the first batch is running in a thread
        joined = time.perf_counter()
        later = [join(batcher, KEY, model, rows(i), 1, time.perf_counter() + 5) for i in (2, 3)]
        await asyncio.gather(first, *later)
        return joined

    joined = run(scenario)
    assert [size for size, _ in model.calls] == [1, 2]
    assert model.calls[1][1] - joined < 0.05 + 0.03  # not after the 0.5 s call: at the bound


def test_a_failing_batch_is_scored_one_by_one_so_only_the_guilty_request_fails():
    model = Recorder(fail_on=-1.0)

    async def scenario(pool):
        batcher, released = make_batcher(pool)
        futures = [join(batcher, KEY, model, payload, len(payload["x"]), time.perf_counter() + 5)
                   for payload in (rows(1, 2), rows(3, -1), rows(4))]
        return await asyncio.gather(*futures, return_exceptions=True), released

    (good, bad, other), released = run(scenario)
    assert good.tolist() == [2, 4] and other.tolist() == [8]
    assert isinstance(bad, ValueError) and "cannot score -1" in str(bad)
    assert [size for size, _ in model.calls] == [5, 2, 2, 1]
    assert released == [3]


def test_an_answer_without_a_row_per_input_row_is_not_split():
    model = Recorder(rows_out=False)  # one number for the whole input

    async def scenario(pool):
        batcher, _ = make_batcher(pool)
        futures = [join(batcher, KEY, model, rows(*p), len(p), time.perf_counter() + 5) for p in ((1, 2), (5,))]
        return await asyncio.gather(*futures)

    assert run(scenario) == [3.0, 5.0]  # each request's own answer, as unbatched


def test_a_full_batch_runs_at_once_and_the_next_request_starts_another():
    model = Recorder()

    async def scenario(pool):
        batcher, _ = make_batcher(pool, max_rows=4)
        futures = [join(batcher, KEY, model, rows(i, i), 2, time.perf_counter() + 5) for i in range(3)]
        return [f.tolist() for f in await asyncio.gather(*futures)]

    assert run(scenario) == [[0, 0], [2, 2], [4, 4]]
    assert [size for size, _ in model.calls] == [4, 2]


def test_a_request_past_its_deadline_in_a_thread_batch_expires_and_its_slot_waits_for_the_thread():
    model = Recorder(seconds=0.3)

    async def scenario(pool):
        batcher, released = make_batcher(pool, inline=False)
        future = join(batcher, KEY, model, rows(1), 1, time.perf_counter() + 0.1)
        with pytest.raises(Expired):
            await future
        slots_at_expiry = list(released)
        await asyncio.sleep(0.4)
        return slots_at_expiry, released

    at_expiry, after = run(scenario)
    assert at_expiry == [] and after == [1]


def test_arrays_of_other_widths_or_lengths_do_not_share_a_batch():
    assert key_of("score", {"x": np.zeros((2, 3))}, 2) != key_of("score", {"x": np.zeros((2, 4))}, 2)
    assert key_of("score", {"x": np.zeros((2, 3))}, 2) != key_of("score", {"x": np.zeros((2, 3), np.float32)}, 2)
    assert key_of("score", {"a": np.zeros((2, 3)), "b": np.zeros((3, 3))}, 3) is None
    assert key_of("score", {"x": np.array(1.0)}, 1) is None
