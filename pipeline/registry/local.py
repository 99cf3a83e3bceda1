"""The embedded registry: metadata in SQLite, model files in a content-addressed store.

Layout under the registry folder::

    registry.db                  models, versions, files, usage (WAL; every change one transaction)
    hashcache.db                 (path, size, mtime_ns, inode) → sha256, so re-planning only stats
    blobs/sha256/ab/<hex>        each distinct file once, written to a temp name and renamed
    materialized/<hex>/          a verified read-only copy of a version, as the services load it
    materialized/<hex>.derived/  what is computed from that content (a linear model's NumPy form)

Blobs are stored before the metadata that names them, so a crash at any moment leaves at worst an
unreferenced blob (collected later), never a version whose files are missing. Versions are
allocated inside ``BEGIN IMMEDIATE`` transactions, so concurrent processes registering at once get
distinct numbers, and identical content always maps to the existing version.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import IntegrityError, ReferenceNotFound, UnsafePathError
from pipeline.faults import crash_point
from pipeline.registry.base import (
    ModelSummary,
    ModelVersion,
    download_aside,
    materialized,
    refuse_if_used,
    remove_materialized,
)
from pipeline.registry.hashing import ContentDigest, FileEntry, HashCache, digest_content, list_files, sha256_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    flavor TEXT NOT NULL, signature TEXT, description TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL, archived INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0,
    lineage TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (name, version));
CREATE INDEX IF NOT EXISTS versions_digest ON versions (name, digest);
CREATE TABLE IF NOT EXISTS files (
    name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (name, version, path));
CREATE TABLE IF NOT EXISTS usage (
    deployment TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL);
"""


def safe_relative(path: str) -> PurePosixPath:
    """A path inside a model: relative, no '..', never escaping the folder it is joined to."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\\" in path:
        raise UnsafePathError(f"unsafe path '{path}' in a model: paths must be relative and stay inside it")
    return pure


class LocalRegistry:
    """The ``Registry`` protocol on this machine (see ``pipeline.registry.base``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "registry.db", timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.executescript(_SCHEMA)
        self.cache = HashCache(self.root / "hashcache.db")

    # -- reading ---------------------------------------------------------------------------

    def digest(self, source: Path) -> ContentDigest:
        """The working-tree digest of ``source`` with this registry's hash cache (kept for callers;
        new code calls ``hashing.working_tree_digest``, which needs no registry)."""
        return digest_content(source, self.cache)

    def _version(self, row, files: tuple[FileEntry, ...] | None = None) -> ModelVersion:
        name, version = row[0], row[1]
        if files is None:
            files = tuple(FileEntry(*f) for f in self._db.execute(
                "SELECT path, digest, size FROM files WHERE name=? AND version=? ORDER BY path", (name, version)))
        return ModelVersion(name=name, version=version, digest=row[2], size=row[3], flavor=row[4],
                            signature=json.loads(row[5]) if row[5] else None, description=row[6],
                            tags=json.loads(row[7]), created=row[8], archived=bool(row[9]),
                            lineage=json.loads(row[10]), files=files)

    _COLUMNS = "name, version, digest, size, flavor, signature, description, tags, created, archived, lineage"

    def list_versions(self, name: str, include_archived: bool = False) -> list[ModelVersion]:
        archived = "" if include_archived else " AND archived=0"
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM versions WHERE name=? AND deleted=0{archived} "
                                "ORDER BY version", (name,)).fetchall()
        return [self._version(row) for row in rows]

    def list_models(self) -> list[ModelSummary]:
        rows = self._db.execute(
            "SELECT name, COUNT(*), MAX(CASE WHEN archived=0 THEN version END), MAX(created) FROM versions "
            "WHERE deleted=0 GROUP BY name ORDER BY name").fetchall()
        return [ModelSummary(name=r[0], versions=r[1], latest=r[2], updated=r[3]) for r in rows]

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        if version is None:
            row = self._db.execute(f"SELECT {self._COLUMNS} FROM versions WHERE name=? AND deleted=0 AND archived=0 "
                                   "ORDER BY version DESC LIMIT 1", (name,)).fetchone()
        else:
            row = self._db.execute(f"SELECT {self._COLUMNS} FROM versions WHERE name=? AND version=? AND deleted=0",
                                   (name, version)).fetchone()
        if row is None:
            available = [f"{name}:{v.version}" for v in self.list_versions(name)]
            known = ", ".join(available) if available else f"no versions of '{name}' are registered"
            wanted = f"{name}:{version}" if version is not None else f"a version of {name}"
            raise ReferenceNotFound(f"{wanted} is not in the registry ({known})")
        return self._version(row)

    def find(self, name: str, digest: str) -> ModelVersion | None:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM versions WHERE name=? AND digest=? AND deleted=0 "
                               "ORDER BY version LIMIT 1", (name, digest)).fetchone()
        return self._version(row) if row else None

    # -- writing ---------------------------------------------------------------------------

    def _blob(self, digest: str) -> Path:
        hexdigest = digest.split(":", 1)[1]
        return self.root / "blobs" / "sha256" / hexdigest[:2] / hexdigest

    def _store_blob(self, source: Path, digest: str) -> None:
        target = self._blob(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as handle:
                shutil.copyfileobj(handle, out, 4 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            if sha256_file(Path(temp)) != digest:
                raise IntegrityError(f"{source} changed while it was being registered; try again")
            os.chmod(temp, 0o444)
            os.replace(temp, target)
        finally:
            Path(temp).unlink(missing_ok=True)

    def register(self, name: str, source: Path, *, flavor: str, description: str = "",
                 tags: Mapping[str, str] | None = None, lineage: Mapping[str, Any] | None = None,
                 signature: Mapping[str, Any] | None = None) -> tuple[ModelVersion, bool]:
        """Store the content at ``source`` as the next version of ``name``, unless identical content is
        already registered (then that version is returned: registering is idempotent)."""
        content = self.digest(source)
        existing = self.find(name, content.digest)
        if existing is not None:
            return existing, False
        paths = {relative: path for relative, _, path in list_files(source)}
        for entry in content.files:
            self._store_blob(paths[entry.path], entry.digest)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT version FROM versions WHERE name=? AND digest=? AND deleted=0",
                                   (name, content.digest)).fetchone()
            if row is not None:  # another process registered the same content meanwhile
                self._db.execute("COMMIT")
                return self.get(name, row[0]), False
            version = (self._db.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()[0]
                       or 0) + 1
            self._db.execute(
                "INSERT INTO versions (name, version, digest, size, flavor, signature, description, tags, created, "
                "lineage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, content.digest, content.size, flavor, json.dumps(signature) if signature else None,
                 description, json.dumps(dict(tags or {}), sort_keys=True), now,
                 json.dumps(dict(lineage or {}), sort_keys=True, default=str)))
            self._db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                                 [(name, version, f.path, f.digest, f.size) for f in content.files])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        crash_point("registry version committed")
        return self.get(name, version), True

    def set_tags(self, name: str, version: int, tags: Mapping[str, str]) -> ModelVersion:
        self.get(name, version)
        self._db.execute("UPDATE versions SET tags=? WHERE name=? AND version=?",
                         (json.dumps(dict(tags), sort_keys=True), name, version))
        return self.get(name, version)

    # -- files -----------------------------------------------------------------------------

    def _verified_copy(self, version: ModelVersion, folder: Path) -> None:
        for entry in version.files:
            blob = self._blob(entry.digest)
            target = folder / safe_relative(entry.path)
            if not blob.exists():
                raise IntegrityError(f"{version.name}:{version.version}: the stored file {entry.path} is missing "
                                     "from the registry")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, target)
            if sha256_file(target) != entry.digest:
                raise IntegrityError(f"{version.name}:{version.version}: the stored file {entry.path} does not match "
                                     "its digest (the registry was tampered with or is corrupt)")

    def materialize(self, name: str, version: int) -> Path:
        """A verified, read-only folder with the version's files (built once, reused after)."""
        record = self.get(name, version)
        folder = self.root / "materialized" / record.digest.split(":", 1)[1]
        return materialized(folder, record.digest, lambda temp: self._verified_copy(record, temp))

    def download(self, name: str, version: int, destination: Path) -> Path:
        """Copy a version into ``destination`` (new or empty): written aside, renamed once verified."""
        record = self.get(name, version)
        return download_aside(destination, lambda folder: self._verified_copy(record, folder))

    # -- usage and deletion ----------------------------------------------------------------

    def set_usage(self, usage: Mapping[str, tuple[str, int]]) -> None:
        """Replace the record of which deployment serves which version (after every apply)."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM usage")
        self._db.executemany("INSERT INTO usage VALUES (?, ?, ?)", [(k, n, v) for k, (n, v) in usage.items()])
        self._db.execute("COMMIT")
        crash_point("registry usage committed")

    def add_usage(self, user: str, name: str, version: int) -> None:
        """Protect a version before a deployment starts serving it (kept until the next ``set_usage``)."""
        self._db.execute("INSERT OR REPLACE INTO usage VALUES (?, ?, ?)", (user, name, version))
        crash_point("registry usage committed")

    def versions_by_name(self, names: Iterable[str]) -> dict[str, list[ModelVersion]]:
        """``list_versions(name, include_archived=True)`` of each name, in two queries per 900 names (one
        query per model and one more per version made a quarter of a 10,000-model plan)."""
        wanted = sorted(set(names))
        found: dict[str, list[ModelVersion]] = {name: [] for name in wanted}
        for start in range(0, len(wanted), 900):  # SQLite allows 999 parameters per query
            batch = wanted[start:start + 900]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM versions WHERE name IN ({marks}) AND deleted=0 "
                                    "ORDER BY name, version", batch).fetchall()
            # files after versions: a version registered in between is not in rows; the files of those are
            files: dict[tuple[str, int], list[FileEntry]] = {}
            for name, version, path, digest, size in self._db.execute(
                    f"SELECT name, version, path, digest, size FROM files WHERE name IN ({marks}) "
                    "ORDER BY name, version, path", batch):
                files.setdefault((name, version), []).append(FileEntry(path, digest, size))
            for row in rows:
                found[row[0]].append(self._version(row, tuple(files.get((row[0], row[1]), ()))))
        return found

    def aliases(self, name: str) -> Mapping[str, int]:
        return {}  # versions here are named by number (and by content) only

    def users(self, name: str, version: int) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT deployment FROM usage WHERE name=? AND version=? ORDER BY deployment", (name, version))]

    def _refuse_if_used(self, name: str, version: int, action: str) -> None:
        refuse_if_used(name, version, action, self.users(name, version))

    def archive(self, name: str, version: int) -> None:
        self.get(name, version)
        self._refuse_if_used(name, version, "archive")
        self._db.execute("UPDATE versions SET archived=1 WHERE name=? AND version=?", (name, version))

    def delete(self, name: str, version: int) -> list[str]:
        """Delete a version (its number is never reused) and collect blobs nothing else references."""
        record = self.get(name, version)
        self._refuse_if_used(name, version, "delete")
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("UPDATE versions SET deleted=1 WHERE name=? AND version=?", (name, version))
        self._db.execute("DELETE FROM files WHERE name=? AND version=?", (name, version))
        still = {r[0] for r in self._db.execute("SELECT DISTINCT digest FROM files")}
        self._db.execute("COMMIT")
        removed = []
        for entry in record.files:
            if entry.digest not in still:
                self._blob(entry.digest).unlink(missing_ok=True)
                removed.append(entry.digest)
        materialized = self.root / "materialized" / record.digest.split(":", 1)[1]
        if not self.find(name, record.digest):
            remove_materialized(materialized)
        return removed

    def close(self) -> None:
        self._db.close()
