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
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import psutil

from pipeline.errors import LockError

POLL_SECONDS = 0.2


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _machine_id() -> str | None:
    """This machine's boot id: two runners may share a host name, never a boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def holder_is_dead(holder: dict) -> bool:
    """The holder ran on this host and its process is gone (or its pid now names another process)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    if holder.get("machine") and holder.get("machine") != _machine_id():
        return False  # same host name, another machine: its pids mean nothing here
    started = _start_time(holder["pid"])
    if started is None:
        return True
    recorded = holder.get("pid_started")
    return isinstance(recorded, int | float) and abs(started - recorded) > 0.01


def ci_run_url() -> str | None:
    """The CI run this process belongs to (GitHub Actions), so a stuck lock leads to its log."""
    parts = [os.environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if not all(parts):
        return None
    server, repository, run_id = parts
    return f"{str(server).rstrip('/')}/{repository}/actions/runs/{run_id}"


def holder_info(operation: str) -> dict[str, Any]:
    """Who is taking a lock: enough to name them, to prove them dead on this host, to find their CI run."""
    info: dict[str, Any] = {
        "id": uuid.uuid4().hex[:12], "operation": operation, "user": getpass.getuser(), "host": socket.gethostname(),
        "machine": _machine_id(), "pid": os.getpid(), "pid_started": _start_time(os.getpid()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "ci_run": ci_run_url()}
    return {key: value for key, value in info.items() if value is not None}


def describe_holder(holder: dict) -> str:
    """The holder in one phrase: operation, user@host, pid, since, lock id and CI run."""
    details = f"pid {holder.get('pid')}, since {holder.get('created')}, lock id {holder.get('id')}"
    if holder.get("ci_run"):
        details += f", CI run {holder['ci_run']}"
    return f"{holder.get('operation', 'an operation')} by {holder.get('user')}@{holder.get('host')} ({details})"


def held_message(holder: dict, timeout: float, what: str = "the state") -> str:
    """Why an acquire gave up, and how to release a lock whose holder is gone."""
    message = f"{what} is locked by {describe_holder(holder)}; waited {timeout:g} s"
    lock_id = holder.get("id")
    if holder.get("host") == socket.gethostname():
        if holder_is_dead(holder):
            message += (f". That process is no longer running on this host: if no apply is in progress, "
                        f"release the lock with `mlops force-unlock {lock_id}`")
    else:
        message += (f". It runs on another host and cannot be checked from here: if it is no longer running, "
                    f"release the lock with `mlops force-unlock {lock_id}`")
    return message


def takeover_notice(holder: dict, what: str = "the state lock") -> str:
    return (f"Took over {what} of {holder.get('operation', 'an operation')} {holder.get('id')} by "
            f"{holder.get('user')}@{holder.get('host')} (pid {holder.get('pid')}, since {holder.get('created')}): "
            "that process is no longer running.")


def mismatch_message(lock_id: str, holder: dict) -> str:
    """Why force-unlock refused: only the holder's exact id may release someone else's lock."""
    return (f"lock id '{lock_id}' does not match the holder's id; the lock is held by "
            f"{holder.get('user')}@{holder.get('host')} pid {holder.get('pid')}")


@runtime_checkable
class Lock(Protocol):
    """What an apply needs of a lock, wherever it lives (a local file, an MLflow server)."""

    id: str | None

    def acquire(self, timeout: float = 30.0) -> Self: ...

    def release(self) -> None: ...

    def holder(self) -> dict | None: ...

    def force_unlock(self, lock_id: str) -> dict: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


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
