"""One apply at a time per namespace: a ``coordination.k8s.io/v1`` Lease that says who holds it.

The same contract as ``StateLock`` (``pipeline/apply/lock.py``), with the cluster as the arbiter:
creating the Lease is atomic (409 when it exists), a takeover replaces it guarded by its
``resourceVersion`` (409 when another waiter got there first). The holder's details (user, host,
pid, id, CI run: ``holder_info``) sit in an annotation, its id in ``holderIdentity``. A Lease not
renewed within ``leaseDurationSeconds`` is expired and taken over with a notice (its holder may run on
another machine, so expiry replaces the pid check); ``mlops force-unlock ID`` releases it at once.
Held as a context manager (as an apply holds it), a thread renews it every third of its duration, so
a long apply keeps it and a killed one loses it within ``leaseDurationSeconds``. Messages are the
shared ones of ``pipeline.apply.lock``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pipeline.errors import LockError
from pipeline.targets.kubernetes.client import ApiError, Cluster

API, KIND = "coordination.k8s.io/v1", "Lease"
HOLDER = "mlops.dev/holder"
DEFAULT_NAME = "mlops-apply"
POLL_SECONDS = 1.0


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaseLock:
    """``Lock`` (acquire, release, holder, force_unlock) on a Lease in the target's namespace."""

    def __init__(self, client: Cluster, name: str = DEFAULT_NAME, operation: str = "apply",
                 duration: int = 60, notice: Callable[[str], None] | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep, scope: str | None = None,
                 renew_every: float | None = None):
        self.client, self.name, self.operation, self.duration = client, name, operation, duration
        self.notice = notice or (lambda message: None)
        self.now, self.sleep = now, sleep
        self.id: str | None = None
        self.scope = scope or f"{self.what}/{name}"  # targets in one namespace share this Lease
        self.renew_every = renew_every if renew_every is not None else duration / 3
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def what(self) -> str:
        return f"namespace {self.client.namespace}"

    def _lease(self) -> dict | None:
        try:
            return self.client.get(API, KIND, self.name)
        except ApiError as error:
            raise LockError(f"cannot read Lease {self.name} in {self.what}: {error.message}") from None

    def holder(self) -> dict | None:
        lease = self._lease()
        if lease is None or not (lease.get("spec") or {}).get("holderIdentity"):
            return None
        text = ((lease.get("metadata") or {}).get("annotations") or {}).get(HOLDER)
        try:
            return json.loads(text) if text else {"id": lease["spec"]["holderIdentity"]}
        except ValueError:
            return {"id": lease["spec"]["holderIdentity"], "note": "unreadable holder annotation"}

    def expired(self, lease: dict) -> bool:
        spec = lease.get("spec") or {}
        if not spec.get("holderIdentity"):
            return True
        renewed = _parse(spec.get("renewTime") or spec.get("acquireTime"))
        return renewed is None or self.now() > renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))

    def _body(self, info: dict, lease: dict | None = None) -> dict:
        now = _micro_time(self.now())
        metadata: dict = {"name": self.name, "namespace": self.client.namespace,
                          "labels": {"app.kubernetes.io/managed-by": "mlops"},
                          "annotations": {HOLDER: json.dumps(info, sort_keys=True)}}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"].get("resourceVersion")
        transitions = int((lease or {}).get("spec", {}).get("leaseTransitions") or 0) + (1 if lease else 0)
        return {"apiVersion": API, "kind": KIND, "metadata": metadata,
                "spec": {"holderIdentity": info["id"], "leaseDurationSeconds": self.duration,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}}

    def acquire(self, timeout: float = 30.0) -> LeaseLock:
        from pipeline.lockinfo import held_message, holder_info, takeover_notice

        info = holder_info(self.operation)
        waited = 0.0
        while True:
            lease = self._lease()
            try:
                if lease is None:
                    self.client.create(self._body(info))
                elif self.expired(lease):
                    previous = self.holder()
                    self.client.replace(self._body(info, lease))
                    if previous:
                        self.notice(takeover_notice(previous, f"the Lease of {self.what}") .replace(
                            "that process is no longer running", "its lease expired"))
                else:
                    if waited >= timeout:
                        raise LockError(held_message(self.holder() or {}, timeout, self.what))
                    self.sleep(POLL_SECONDS)
                    waited += POLL_SECONDS
                    continue
            except ApiError as error:
                if error.status != 409:  # 409: another waiter won the race; look again
                    raise LockError(f"cannot take Lease {self.name} in {self.what}: {error.message}") from None
                continue
            self.id = str(info["id"])
            return self

    def renew(self) -> None:
        """Push the expiry out (a long apply calls this well within ``duration``)."""
        lease = self._lease()
        if lease is None or self.id is None or lease["spec"].get("holderIdentity") != self.id:
            raise LockError(f"the Lease of {self.what} is no longer held by this apply (lock id {self.id})")
        lease["spec"]["renewTime"] = _micro_time(self.now())
        try:
            self.client.replace(lease)
        except ApiError as error:
            raise LockError(f"cannot renew Lease {self.name} in {self.what}: {error.message}") from None

    def release(self) -> None:
        holder = self.holder()
        if self.id and holder and holder.get("id") == self.id:
            self.client.delete(API, KIND, self.name)
        self.id = None

    def force_unlock(self, lock_id: str) -> dict:
        from pipeline.lockinfo import mismatch_message

        holder = self.holder()
        if holder is None:
            raise LockError(f"{self.what} is not locked")
        if holder.get("id") != lock_id:
            raise LockError(mismatch_message(lock_id, holder))
        self.client.delete(API, KIND, self.name)
        return holder

    def _keep_renewing(self) -> None:
        """Renew until released; a failed renewal is tried again at the next tick (two fit in a duration),
        a Lease taken by someone else (expired meanwhile, or force-unlocked) is said once and given up."""
        while not self._stop.wait(self.renew_every):
            try:
                self.renew()
            except LockError as error:
                if self._lease_lost():
                    self.notice(f"Warning: {error}; another apply may now change {self.what}")
                    return

    def _lease_lost(self) -> bool:
        try:
            holder = self.holder()
        except LockError:
            return False  # the API is unreachable now: keep trying while the Lease may still be ours
        return holder is None or holder.get("id") != self.id

    def __enter__(self) -> LeaseLock:
        if not self.id:
            self.acquire()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._keep_renewing, name=f"lease-{self.name}", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            self.release()
        except (LockError, ApiError) as error:  # the apply's own error matters more; the Lease expires
            self.notice(f"Could not release the Lease of {self.what} ({error}); it expires in {self.duration} s")
            self.id = None
