"""One apply at a time per state folder: a lock file that says who holds it.

The lock is a file created with O_EXCL (atomic on every local filesystem), holding the holder's
user, host, pid, the process's start time, a random id and, in CI, the run's URL. A second apply waits up to its timeout
and then fails naming the holder. A holder that is provably dead on this host (its pid is gone, or
was reused by a process with another start time) is taken over at once with a notice: a killed
apply never needs a hand-made unlock. Takeovers are serialized by an ``flock`` on a guard file and
re-check the holder's id under it, so two waiters never both take the lock. A holder on another
host cannot be checked: ``mlops force-unlock ID`` releases it, only with the right id (as
Terraform does).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import LockError
from pipeline.lockinfo import (  # noqa: F401 - re-exported: the names every lock shares
    Lock,
    ci_run_url,
    describe_holder,
    held_message,
    holder_info,
    holder_is_dead,
    mismatch_message,
    takeover_notice,
)

POLL_SECONDS = 0.2


class StateLock:
    def __init__(self, state_dir: Path, operation: str = "apply",
                 notice: Callable[[str], None] | None = None):
        self.path = state_dir / "lock.json"
        self.operation = operation
        self.notice = notice or (lambda message: None)
        self.id: str | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"id": "?", "note": "unreadable lock file"}

    def acquire(self, timeout: float = 30.0) -> StateLock:
        info = holder_info(self.operation)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._take_over_dead_holder():
                    continue
                if time.monotonic() >= deadline:
                    raise LockError(self._held_message(timeout)) from None
                time.sleep(POLL_SECONDS)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(info, handle)
                handle.flush()
                os.fsync(handle.fileno())
            self.id = str(info["id"])
            return self

    def _take_over_dead_holder(self) -> bool:
        """Remove the lock of a holder that is provably dead; True when one was removed."""
        holder = self.holder()
        if not holder or not holder_is_dead(holder):
            return False
        with open(self.path.with_name("lock.guard"), "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if (self.holder() or {}).get("id") != holder.get("id"):
                return False  # another waiter took it over first
            self.path.unlink(missing_ok=True)
        self.notice(takeover_notice(holder))
        return True

    def _held_message(self, timeout: float) -> str:
        return held_message(self.holder() or {}, timeout)

    def release(self) -> None:
        holder = self.holder()
        if self.id and holder and holder.get("id") == self.id:
            self.path.unlink(missing_ok=True)
        self.id = None

    def force_unlock(self, lock_id: str) -> dict:
        """Remove a lock left by a dead apply; only the holder's exact id releases it."""
        holder = self.holder()
        if holder is None:
            raise LockError("the state is not locked")
        if holder.get("id") != lock_id:
            raise LockError(mismatch_message(lock_id, holder))
        self.path.unlink(missing_ok=True)
        return holder

    def __enter__(self) -> StateLock:
        return self if self.id else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
