"""The state lock on an MLflow tracking server, so applies from different CI runners exclude each other.

Taking the lock is one atomic operation of the server: creating the registered model
``mlops--lock--KEY`` with the holder as its tags. MLflow refuses a name that exists
(RESOURCE_ALREADY_EXISTS) and writes the model and its tags in one transaction, like Terraform's
create-if-absent on S3. The rest follows ``StateLock``: waiters poll until their timeout and then
fail naming the holder; a holder that is provably dead on this host is taken over (serialized by a
host-local ``flock`` and re-checking the holder's id under it); ``mlops force-unlock ID`` releases
a holder elsewhere, only with its id.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.apply.lock import held_message, holder_info, holder_is_dead, mismatch_message, takeover_notice
from pipeline.errors import LockError
from pipeline.registry.mlflow_client import RESERVED_PREFIX, connect, error_code, redact, translated

POLL_SECONDS = 0.25
_INTEGERS = ("pid",)
_FLOATS = ("pid_started",)


class MlflowLock:
    def __init__(self, tracking_uri: str, key: str, operation: str = "apply",
                 notice: Callable[[str], None] | None = None):
        self.tracking_uri = tracking_uri
        self.name = f"{RESERVED_PREFIX}lock--{key}"
        self.operation = operation
        self.notice = notice or (lambda message: None)
        self.id: str | None = None
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.tracking_uri)
        return self._client

    def holder(self) -> dict | None:
        with translated(self.tracking_uri, f"reading the lock {self.name}"):
            try:
                model = self.client.get_registered_model(self.name)
            except Exception as error:
                if error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
        return _parse(dict(model.tags))

    def acquire(self, timeout: float = 30.0) -> MlflowLock:
        info = holder_info(self.operation)
        deadline = time.monotonic() + timeout
        while True:
            if self._create(info):
                self.id = str(info["id"])
                return self
            holder = self.holder()
            if holder is None and time.monotonic() < deadline:
                continue  # released between our attempt and the read: try again at once
            holder = holder or {}
            if holder.get("id") == info["id"]:  # our create succeeded, its answer was lost and retried
                self.id = str(info["id"])
                return self
            if self._take_over_dead_holder(holder):
                continue
            if time.monotonic() >= deadline:
                raise LockError(held_message(holder, timeout, f"the state at {redact(self.tracking_uri)}"))
            time.sleep(POLL_SECONDS)

    def _create(self, info: dict) -> bool:
        with translated(self.tracking_uri, f"taking the lock {self.name}"):
            try:
                self.client.create_registered_model(
                    self.name, tags={key: str(value) for key, value in info.items()},
                    description="mlops state lock: deleted when the apply ends (mlops force-unlock ID if it died)")
                return True
            except Exception as error:
                if error_code(error) == "RESOURCE_ALREADY_EXISTS":
                    return False
                raise

    def _take_over_dead_holder(self, holder: dict) -> bool:
        """Remove the lock of a holder that is provably dead; True when one was removed."""
        if not holder_is_dead(holder):
            return False
        digest = hashlib.sha256(f"{self.tracking_uri}\0{self.name}".encode()).hexdigest()[:16]
        with open(Path(tempfile.gettempdir()) / f"mlops-lock-{digest}.guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if (self.holder() or {}).get("id") != holder.get("id"):
                return False  # another waiter took it over first
            self._delete()
        self.notice(takeover_notice(holder))
        return True

    def release(self) -> None:
        if self.id:
            holder = self.holder()
            if holder and holder.get("id") == self.id:
                self._delete()
        self.id = None

    def force_unlock(self, lock_id: str) -> dict:
        """Remove a lock left by a dead apply; only the holder's exact id releases it."""
        holder = self.holder()
        if holder is None:
            raise LockError(f"the state at {redact(self.tracking_uri)} is not locked")
        if holder.get("id") != lock_id:
            raise LockError(mismatch_message(lock_id, holder))
        self._delete()
        return holder

    def _delete(self) -> None:
        with translated(self.tracking_uri, f"releasing the lock {self.name}"):
            try:
                self.client.delete_registered_model(self.name)
            except Exception as error:
                if error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                    raise

    def __enter__(self) -> MlflowLock:
        return self if self.id else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _parse(tags: dict[str, str]) -> dict:
    """The holder from the model's tags (strings), with its pid and start time as numbers again."""
    holder: dict[str, Any] = dict(tags)
    for key, kind in [*((k, int) for k in _INTEGERS), *((k, float) for k in _FLOATS)]:
        if key in holder:
            try:
                holder[key] = kind(holder[key])
            except ValueError:
                pass
    return holder
