"""Content digests of model files and folders, with a cache that makes re-hashing cost only stats.

A file's digest is its sha256. A model's digest is a Merkle digest: the sha256 of the lines
``<relative posix path>\\0<file sha256 hex>\\n`` sorted by path, so it changes when any file's
content, name or presence changes, and is independent of the order the filesystem lists files.
A single file is treated as a folder holding just that file.

First-time hashing streams each file in 4 MiB chunks into a reused buffer (``hashlib`` releases
the GIL, so a thread per core hashes several files at once). A cache keyed by (path, size,
mtime_ns, inode) skips files that did not change, so planning over unchanged models only stats.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from pipeline.errors import UnsafePathError

CHUNK = 4 * 1024 * 1024
SKIPPED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}
SKIPPED_FILES = {".DS_Store"}


def is_skipped(relative: str) -> bool:
    """Files that are not part of a model's content (caches, editor litter), wherever they are read from."""
    parts = relative.split("/")
    return (any(part in SKIPPED_DIRS for part in parts[:-1]) or parts[-1] in SKIPPED_FILES
            or parts[-1].endswith(".pyc"))


def digest_of_bytes(files: dict[str, bytes]) -> str | None:
    """The Merkle digest of in-memory files (e.g. a model folder at a git commit), by the same rules."""
    entries = [FileEntry(path, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
               for path, data in files.items() if not is_skipped(path)]
    return merkle(entries) if entries else None


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, posix
    digest: str  # "sha256:<hex>"
    size: int


@dataclass(frozen=True)
class ContentDigest:
    digest: str
    size: int
    files: tuple[FileEntry, ...]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return "sha256:" + digest.hexdigest()


def merkle(files: list[FileEntry] | tuple[FileEntry, ...]) -> str:
    lines = "".join(f"{f.path}\0{f.digest.split(':', 1)[1]}\n" for f in sorted(files, key=lambda f: f.path))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def list_files(source: Path) -> list[tuple[str, os.stat_result, Path]]:
    """Every file of a model as (relative path, stat, absolute path); refuses links that leave it."""
    return [(relative, info, Path(path)) for relative, info, path in _files(Path(source))]


def _files(source: Path) -> list[tuple[str, os.stat_result, str]]:
    """``list_files`` with the absolute paths as text: a plan lists every model's files, and making a
    ``Path`` of each cost more than the stat calls."""
    try:
        info = source.stat()  # one stat says file, folder or neither
    except OSError:
        info = None
    if info is not None and S_ISREG(info.st_mode):
        return [(source.name, info, str(source))]
    if info is None or not S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{source} is neither a file nor a folder")
    found = []
    resolved: list[Path] = []  # the folder's real path, resolved only if a symlink needs it

    def root() -> Path:
        if not resolved:
            resolved.append(source.resolve())
        return resolved[0]

    def walk(folder: str, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not target.is_relative_to(root()):
                        raise UnsafePathError(f"{source}/{relative} is a symlink that points outside the model "
                                              f"folder ({target}); copy the file in instead")
                if entry.is_dir():
                    if entry.name not in SKIPPED_DIRS:
                        walk(entry.path, relative + "/")
                elif entry.is_file() and entry.name not in SKIPPED_FILES and not entry.name.endswith(".pyc"):
                    found.append((relative, entry.stat(), entry.path))

    walk(str(source), "")
    return sorted(found, key=lambda item: item[0])


class HashCache:
    """(path, size, mtime_ns, inode) → digest, in SQLite so separate processes share it."""

    def __init__(self, path: Path | None):
        self._db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                             "mtime_ns INTEGER, inode INTEGER, digest TEXT)")

    def lookup(self, paths: list[str]) -> dict[str, tuple[int, int, int, str]]:
        if self._db is None or not paths:
            return {}
        found = {}
        for start in range(0, len(paths), 900):
            batch = paths[start:start + 900]
            marks = ",".join("?" * len(batch))
            for row in self._db.execute(f"SELECT path, size, mtime_ns, inode, digest FROM hashes "
                                        f"WHERE path IN ({marks})", batch):
                found[row[0]] = row[1:]
        return found

    def store(self, rows: list[tuple[str, int, int, int, str]]) -> None:
        if self._db is not None and rows:
            self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)", rows)


def digest_content(source: Path, cache: HashCache | None = None, workers: int | None = None) -> ContentDigest:
    """The Merkle digest of a model file or folder, hashing only files the cache doesn't know."""
    files = _files(source if isinstance(source, Path) else Path(source))  # Path(a Path) parses it again
    cache = cache or HashCache(None)
    known = cache.lookup([p for _, _, p in files])
    digests: dict[str, str] = {}
    stale = []
    for relative, stat, path in files:
        hit = known.get(path)
        if hit and hit[:3] == (stat.st_size, stat.st_mtime_ns, stat.st_ino):
            digests[relative] = hit[3]
        else:
            stale.append((relative, stat, path))
    if stale:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            fresh = list(pool.map(lambda item: sha256_file(Path(item[2])), stale))
        for (relative, _, _), digest in zip(stale, fresh, strict=True):
            digests[relative] = digest
        cache.store([(path, stat.st_size, stat.st_mtime_ns, stat.st_ino, digest)
                     for (_, stat, path), digest in zip(stale, fresh, strict=True)])
    entries = tuple(FileEntry(relative, digests[relative], stat.st_size) for relative, stat, _ in files)
    return ContentDigest(merkle(entries), sum(e.size for e in entries), entries)


_CACHES: dict[Path, HashCache] = {}


def working_tree_digest(source: Path, cache_dir: Path | None = None) -> ContentDigest:
    """The digest of the files now at a model's path (what a plain ``NAME`` reference means).

    Not a registry operation: the planner compares it with the registered versions' digests,
    whatever the registry's backend. ``cache_dir`` holds ``hashcache.db`` (opened once per
    process), so planning over unchanged files costs only stats; None hashes every file.
    """
    if cache_dir is None:
        return digest_content(source)
    folder = cache_dir if isinstance(cache_dir, Path) else Path(cache_dir)
    if folder not in _CACHES:
        _CACHES[folder] = HashCache(folder / "hashcache.db")
    return digest_content(source, _CACHES[folder])
