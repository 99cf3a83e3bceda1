"""Admission control: a fixed number of scoring slots and a short, bounded wait for one.

A request that finds every slot busy waits at most ``max_queue_wait_ms`` in a queue no longer than
the number of slots; when the queue is full or the wait runs out it gets 429 at once. So an
overloaded instance sheds load in milliseconds instead of building an endless backlog.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Busy(Exception):
    """No slot could be had: the queue is full, or the wait ran out."""


class Limiter:
    """Slots handed directly from a finishing request to the oldest waiter (FIFO, no stampede).

    Only the event loop thread may call its methods.
    """

    def __init__(self, slots: int, queue: int):
        self.slots = max(1, slots)
        self.queue = max(0, queue)
        self.free = self.slots
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return self.slots - self.free

    def try_acquire(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self, timeout: float) -> None:
        """Take a slot, waiting up to ``timeout`` seconds; Busy when that cannot be done."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.queue or timeout <= 0:
            raise Busy(f"all {self.slots} scoring slots are busy and the queue of {self.queue} is full")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, self._expire, waiter)
        try:
            granted = await waiter
        except BaseException:  # cancelled while waiting: give back a slot that was handed over
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()
        if not granted:
            raise Busy(f"no scoring slot became free within {timeout * 1000:.0f} ms")

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes to the waiter without becoming free
                return
        self.free += 1
