"""The ``Registry`` protocol the reconciler and the scoring service use, and its records.

A model is a name; its versions 1, 2, 3 … are distinct contents (identical content is never a new
version). Each version records its digest, files, flavor, tags and lineage (which commit, branch
and author it came from), and the registry knows which deployments serve which version, so a
version in use can be neither archived nor deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import InUseError, MlopsError, UnsafePathError
from pipeline.registry.hashing import FileEntry, digest_content


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    digest: str  # Merkle digest of the files: "sha256:<hex>"
    size: int
    flavor: str
    files: tuple[FileEntry, ...] = ()
    signature: Mapping[str, Any] | None = None
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # ISO-8601 UTC
    archived: bool = False
    lineage: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int | None  # the newest version that is not archived
    updated: str


class Registry(Protocol):
    """Where model versions live. Hashing the working tree is not part of it: see
    ``pipeline.registry.hashing.working_tree_digest``."""

    def register(self, name: str, source: Path, *, flavor: str, description: str = "",
                 tags: Mapping[str, str] | None = None, lineage: Mapping[str, Any] | None = None,
                 signature: Mapping[str, Any] | None = None) -> tuple[ModelVersion, bool]: ...

    def get(self, name: str, version: int | None = None) -> ModelVersion: ...

    def find(self, name: str, digest: str) -> ModelVersion | None: ...

    def list_models(self) -> list[ModelSummary]: ...

    def list_versions(self, name: str, include_archived: bool = False) -> list[ModelVersion]: ...

    def materialize(self, name: str, version: int) -> Path: ...

    def download(self, name: str, version: int, destination: Path) -> Path: ...

    def set_usage(self, usage: Mapping[str, tuple[str, int]]) -> None: ...

    def add_usage(self, user: str, name: str, version: int) -> None: ...

    def users(self, name: str, version: int) -> list[str]: ...

    def versions_by_name(self, names: Iterable[str]) -> dict[str, list[ModelVersion]]:
        """Every version (archived too) of each model: what a plan reads, in as few requests as the backend
        allows (``versions_of`` is the one-by-one form for backends that gain nothing from batching)."""
        ...

    def aliases(self, name: str) -> Mapping[str, int]:
        """Named pointers to versions (``models:/NAME@ALIAS``); registries without them have none."""
        ...

    def archive(self, name: str, version: int) -> None: ...

    def delete(self, name: str, version: int) -> list[str]: ...


def download_aside(destination: Path, fill: Callable[[Path], None]) -> Path:
    """Fill a new folder beside ``destination`` and rename it into place only once ``fill`` succeeded
    (it verifies what it writes): a failed or tampered download leaves nothing behind."""
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise MlopsError(f"{destination} already exists and is not an empty folder; choose a new one")
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.download-"))
    try:
        fill(temp)
        if destination.exists():
            destination.rmdir()
        os.replace(temp, destination)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return destination


def refuse_if_used(name: str, version: int, action: str, users: list[str]) -> None:
    """Delete protection, worded the same by every backend: a version that serves stays."""
    if users:
        raise InUseError(f"cannot {action} {name}:{version}: it is served by {', '.join(users)}; deploy another "
                         "version there first (through mlops.yaml)")


def remove_tree(folder: Path) -> None:
    """Remove a folder, read-only copies included."""
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    folder.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def derived_folder(folder: Path) -> Path:
    """Where files computed from a materialized version's verified content are kept (the runtime's linear
    form of a model, ``pipeline.runtime.linear``): beside ``folder``, named by the same digest, removed with it."""
    return folder.with_name(folder.name + ".derived")


def remove_materialized(folder: Path) -> None:
    """A materialized folder and what was derived from it."""
    if folder.exists():
        remove_tree(folder)
    shutil.rmtree(derived_folder(folder), ignore_errors=True)


def materialized(folder: Path, digest: str, fill: Callable[[Path], None]) -> Path:
    """``folder`` holding exactly the content ``digest`` names, read-only: reused only when every byte
    re-hashes to it, otherwise filled aside by ``fill`` (which verifies what it writes) and renamed."""
    if folder.exists():
        try:
            if digest_content(folder).digest == digest:
                return folder
        except (OSError, UnsafePathError):
            pass
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
    try:
        fill(temp)
        for path in sorted(temp.rglob("*"), reverse=True):
            path.chmod(0o555 if path.is_dir() else 0o444)
        temp.chmod(0o555)
        if folder.exists():
            remove_tree(folder)
        os.replace(temp, folder)
    finally:
        if temp.exists():
            remove_tree(temp)
    return folder


def versions_of(registry: Registry, names: Iterable[str]) -> dict[str, list[ModelVersion]]:
    """``versions_by_name`` one model at a time."""
    return {name: registry.list_versions(name, include_archived=True) for name in sorted(set(names))}
