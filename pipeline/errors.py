"""The exception tree of mlops.

Every error a user can cause is an ``MlopsError``: the CLI prints its message (one clear line, or
one line per problem with ``file:line:column``) and exits 1, never with a traceback unless
``--debug``. Anything else escaping is a bug.

    MlopsError
    ├── SpecError            mlops.yaml is invalid (carries every Problem, sorted by line)
    ├── ReferenceNotFound    a model, version, endpoint or deployment that does not exist
    ├── RegistryError        the model registry refused or failed an operation
    │   ├── IntegrityError   a stored blob does not match its digest (tampered or corrupt)
    │   ├── UnsafePathError  a path would leave the model folder or the store
    │   └── InUseError       a version still served by a deployment cannot be deleted
    ├── GitError             git facts could not be read, or the tree is dirty under --require-clean
    ├── LockError            another apply holds the state lock
    ├── StalePlanError       a saved plan no longer matches the state or the file
    ├── BuildError           an environment image failed to build
    ├── TargetError          a deployment target failed (with the service's log tail)
    │   └── HealthCheckFailed  a deployment never became ready
    ├── RolloutFailed        a canary failed its gates (or was aborted): traffic went back to stable
    ├── RolloutRefused       that version was rolled back: not rolled out again until mlops rollout retry
    ├── ServeError           the scoring service cannot start (bad keys file, data folder)
    │   └── ModelLoadError   a model folder cannot be loaded (bad files, untrusted types, missing extra)
    └── InvalidInput         data a model cannot take (shape, type, names, null/NaN): the caller's
                             mistake, never the model's failure (the HTTP service answers 400)

``ModelLoadError`` and ``InvalidInput`` are the model runtime's (``pipeline.runtime``): it knows no
HTTP, so it says what went wrong and the service picks the status.
"""

from __future__ import annotations

from dataclasses import dataclass


class MlopsError(Exception):
    """An error the user can act on; printed without a traceback, exit code 1."""

    transient = False  # True when retrying the same operation may succeed


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in a file, at a position (1-based line and column, 0 when unknown)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.message}"


class SpecError(MlopsError):
    """mlops.yaml (or another user file) is invalid; holds every problem found, sorted."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ReferenceNotFound(MlopsError):
    """A named thing (model, version, endpoint, deployment, lock id) does not exist."""


class RegistryError(MlopsError):
    """The model registry refused or failed an operation."""


class IntegrityError(RegistryError):
    """Stored content does not match its recorded digest."""


class UnsafePathError(RegistryError):
    """A path is absolute, contains '..', or is a symlink that points outside its root."""


class InUseError(RegistryError):
    """A model version is used by live deployments and cannot be deleted or archived."""


class GitError(MlopsError):
    """Git facts could not be read, or the working tree is dirty where a clean one is required."""


class LockError(MlopsError):
    """The state lock is held by another apply (or the given lock id does not match)."""

    transient = True


class StalePlanError(MlopsError):
    """A saved plan was made against a different state or file than the current one."""


class BuildError(MlopsError):
    """An environment image failed to build; the message carries the failing step's log tail."""


class TargetError(MlopsError):
    """A deployment target failed an operation."""


class HealthCheckFailed(TargetError):
    """A new or updated deployment did not become ready before its deadline."""


class RolloutFailed(MlopsError):
    """A progressive rollout was rolled back: the canary failed a gate, ran out of time, or was aborted."""


class RolloutRefused(MlopsError):
    """A version whose rollout was rolled back is not rolled out again until ``mlops rollout retry``."""


class ServeError(MlopsError):
    """The scoring service cannot load its model or start."""


class ModelLoadError(ServeError):
    """A model folder cannot be loaded as its flavor (or is refused by its trust settings)."""


class InvalidInput(MlopsError):
    """The data given to a model does not fit it (shape, type, nesting, names, null/NaN...)."""
