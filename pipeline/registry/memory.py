"""``InMemoryRegistry``: the ``Registry`` protocol with its records and file bytes in memory.

Shipped with the package (as httpx ships ``MockTransport``) for tests of what sits above the
registry, and held to the same contract as ``LocalRegistry`` (``tests/registry/contract.py``):
versions are allocated by content digest (identical content is never a new version, numbers are
never reused), versions in use can be neither archived nor deleted, and ``materialize`` writes a
verified read-only folder (under a temporary folder of its own, removed by ``close``), refusing
stored bytes that no longer match their digest. ``blobs`` (digest → bytes) is public so tests can
tamper with what it stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import IntegrityError, ReferenceNotFound
from pipeline.registry.base import (
    ModelSummary,
    ModelVersion,
    download_aside,
    materialized,
    refuse_if_used,
    remove_materialized,
    remove_tree,
    versions_of,
)
from pipeline.registry.hashing import digest_content, list_files, merkle
from pipeline.registry.local import safe_relative


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class InMemoryRegistry:
    """A registry in this process's memory (thread-safe); files are materialized to a temp folder."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._versions: dict[str, dict[int, ModelVersion]] = {}  # not deleted
        self._last: dict[str, int] = {}  # highest number ever allocated per name (never reused)
        self._usage: dict[str, tuple[str, int]] = {}
        self._lock = threading.RLock()
        self._folder: Path | None = None

    # -- reading ---------------------------------------------------------------------------

    def list_versions(self, name: str, include_archived: bool = False) -> list[ModelVersion]:
        with self._lock:
            versions = self._versions.get(name, {})
            return [versions[v] for v in sorted(versions) if include_archived or not versions[v].archived]

    def list_models(self) -> list[ModelSummary]:
        with self._lock:
            summaries = []
            for name in sorted(self._versions):
                versions = list(self._versions[name].values())
                if not versions:
                    continue
                live = [v.version for v in versions if not v.archived]
                summaries.append(ModelSummary(name=name, versions=len(versions), latest=max(live) if live else None,
                                              updated=max(v.created for v in versions)))
            return summaries

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        with self._lock:
            versions = self._versions.get(name, {})
            if version is None:
                live = [v for v in sorted(versions) if not versions[v].archived]
                found = versions[live[-1]] if live else None
            else:
                found = versions.get(version)
            if found is None:
                available = [f"{name}:{v.version}" for v in self.list_versions(name)]
                known = ", ".join(available) if available else f"no versions of '{name}' are registered"
                wanted = f"{name}:{version}" if version is not None else f"a version of {name}"
                raise ReferenceNotFound(f"{wanted} is not in the registry ({known})")
            return found

    def find(self, name: str, digest: str) -> ModelVersion | None:
        with self._lock:
            return next((v for v in self.list_versions(name, include_archived=True) if v.digest == digest), None)

    # -- writing ---------------------------------------------------------------------------

    def register(self, name: str, source: Path, *, flavor: str, description: str = "",
                 tags: Mapping[str, str] | None = None, lineage: Mapping[str, Any] | None = None,
                 signature: Mapping[str, Any] | None = None) -> tuple[ModelVersion, bool]:
        """The content at ``source`` as the next version of ``name``, or the version that already has it."""
        content = digest_content(Path(source))
        with self._lock:
            existing = self.find(name, content.digest)
            if existing is not None:
                return existing, False
        paths = {relative: path for relative, _, path in list_files(Path(source))}
        read = {}
        for entry in content.files:
            data = paths[entry.path].read_bytes()
            if _sha256(data) != entry.digest:
                raise IntegrityError(f"{paths[entry.path]} changed while it was being registered; try again")
            read[entry.digest] = data
        with self._lock:
            existing = self.find(name, content.digest)  # registered by another thread meanwhile
            if existing is not None:
                return existing, False
            self.blobs.update({digest: data for digest, data in read.items() if digest not in self.blobs})
            number = self._last.get(name, 0) + 1
            self._last[name] = number
            version = ModelVersion(
                name=name, version=number, digest=content.digest, size=content.size, flavor=flavor,
                files=content.files, signature=dict(signature) if signature else None, description=description,
                tags=dict(tags or {}), created=datetime.now(UTC).isoformat(timespec="seconds"),
                lineage=dict(lineage or {}))
            self._versions.setdefault(name, {})[number] = version
            return version, True

    def set_tags(self, name: str, version: int, tags: Mapping[str, str]) -> ModelVersion:
        return self._replace(name, version, tags=dict(tags))

    def _replace(self, name: str, version: int, **changes) -> ModelVersion:
        with self._lock:
            updated = dataclasses.replace(self.get(name, version), **changes)
            self._versions[name][version] = updated
            return updated

    # -- files -----------------------------------------------------------------------------

    def _write_verified(self, record: ModelVersion, folder: Path) -> None:
        if merkle(record.files) != record.digest:
            raise IntegrityError(f"{record.ref}: its file list does not match its digest (the registry is corrupt)")
        for entry in record.files:
            data = self.blobs.get(entry.digest)
            if data is None:
                raise IntegrityError(f"{record.ref}: the stored file {entry.path} is missing from the registry")
            if _sha256(data) != entry.digest:
                raise IntegrityError(f"{record.ref}: the stored file {entry.path} does not match its digest "
                                     "(the registry was tampered with or is corrupt)")
            target = folder / safe_relative(entry.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def materialize(self, name: str, version: int) -> Path:
        """A verified, read-only folder with the version's files (rebuilt when it no longer matches)."""
        record = self.get(name, version)
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="mlops-memory-registry-"))
            folder = self._folder / record.digest.split(":", 1)[1]
            return materialized(folder, record.digest, lambda temp: self._write_verified(record, temp))

    def download(self, name: str, version: int, destination: Path) -> Path:
        """Copy a version into ``destination`` (new or empty): written aside, renamed once verified."""
        record = self.get(name, version)
        return download_aside(destination, lambda folder: self._write_verified(record, folder))

    # -- usage and deletion ----------------------------------------------------------------

    def set_usage(self, usage: Mapping[str, tuple[str, int]]) -> None:
        with self._lock:
            self._usage = {user: (name, int(version)) for user, (name, version) in usage.items()}

    def add_usage(self, user: str, name: str, version: int) -> None:
        with self._lock:
            self._usage[user] = (name, int(version))

    def versions_by_name(self, names: Iterable[str]) -> dict[str, list[ModelVersion]]:
        return versions_of(self, names)  # one local query each costs microseconds

    def aliases(self, name: str) -> Mapping[str, int]:
        return {}  # versions here are named by number (and by content) only

    def users(self, name: str, version: int) -> list[str]:
        with self._lock:
            return sorted(user for user, used in self._usage.items() if used == (name, version))

    def _refuse_if_used(self, name: str, version: int, action: str) -> None:
        refuse_if_used(name, version, action, self.users(name, version))

    def archive(self, name: str, version: int) -> None:
        with self._lock:
            self.get(name, version)
            self._refuse_if_used(name, version, "archive")
            self._replace(name, version, archived=True)

    def delete(self, name: str, version: int) -> list[str]:
        """Delete a version (its number is never reused) and drop bytes no other version references."""
        with self._lock:
            record = self.get(name, version)
            self._refuse_if_used(name, version, "delete")
            del self._versions[name][version]
            still = {f.digest for versions in self._versions.values() for v in versions.values() for f in v.files}
            removed = [f.digest for f in record.files if f.digest not in still and self.blobs.pop(f.digest, None)
                       is not None]
            if self._folder is not None and self.find(name, record.digest) is None:
                remove_materialized(self._folder / record.digest.split(":", 1)[1])
            return removed

    def close(self) -> None:
        """Remove the materialized folders."""
        with self._lock:
            if self._folder is not None and self._folder.exists():
                remove_tree(self._folder)
            self._folder = None
