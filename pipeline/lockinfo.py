"""Who holds a lock, and the messages about it: shared by every lock (a state folder's file, an MLflow
server's registered model, a cluster's Lease), so they all name a holder and explain a release alike.

A leaf module (as ``pipeline.keys``): ``pipeline.apply`` and the targets both import it.
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import psutil


@runtime_checkable
class Lock(Protocol):
    """What an apply needs of a lock, wherever it lives (a local file, an MLflow server, a cluster)."""

    id: str | None

    def acquire(self, timeout: float = 30.0) -> Self: ...

    def release(self) -> None: ...

    def holder(self) -> dict | None: ...

    def force_unlock(self, lock_id: str) -> dict: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


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
