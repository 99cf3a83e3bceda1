"""Where the apply lock and the apply ledger live: beside the registry, on this machine or shared.

The embedded registry keeps them in its folder (a lock file, ``ledger.db``); an MLflow registry
keeps them on the tracking server (a lock that is an atomic create of a reserved registered
model, one run per apply in the repository's experiment), so every clone and CI runner sees the
same history and waits for the same lock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class StateStore(Protocol):
    shared: bool

    def lock(self, operation: str = "apply", notice: Callable[[str], None] | None = None) -> Any:
        """A lock (``acquire``/``release``/``force_unlock``/context manager) for one operation."""
        ...

    def ledger(self) -> Any:
        """The ledger (``record``/``entries``) of every apply and destroy."""
        ...


@dataclass(frozen=True)
class LocalStateStore:
    """The lock file in the state folder and the SQLite ledger in the registry folder."""

    state_dir: Path
    registry_dir: Path
    shared = False

    def lock(self, operation: str = "apply", notice: Callable[[str], None] | None = None):
        from pipeline.apply.lock import StateLock

        return StateLock(self.state_dir, operation, notice=notice)

    def ledger(self):
        from pipeline.apply.ledger import Ledger

        return Ledger(self.registry_dir)


def lock_key(experiment: str) -> str:
    """A registered-model-safe name for the lock of one experiment (one repository)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-") or "default"


@dataclass(frozen=True)
class MlflowStateStore:
    """The lock and the ledger on an MLflow tracking server, named after the repository's experiment."""

    tracking_uri: str
    experiment: str
    shared = True

    def lock(self, operation: str = "apply", notice: Callable[[str], None] | None = None):
        from pipeline.apply.mlflow_lock import MlflowLock

        return MlflowLock(self.tracking_uri, lock_key(self.experiment), operation, notice=notice)

    def ledger(self):
        from pipeline.apply.mlflow_ledger import MlflowLedger

        return MlflowLedger(self.tracking_uri, self.experiment)
