"""Endpoint keys: two per endpoint (primary, secondary), in a JSON file only its owner can read.

Targets create and rotate the file; scoring services read it (and re-read it when it changes), so
rotating one key while callers use the other never interrupts service. A leaf module: both the
targets and the server import it.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

KEY_NAMES = ("primary", "secondary")


def _new_key() -> str:
    return secrets.token_urlsafe(32)


def write_atomic(path: Path, data: dict, mode: int = 0o600) -> None:
    """Write JSON to a temp file with ``mode``, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if path.exists():  # keep the owner a target gave the file (a container user must still read it)
            owner = path.stat()
            os.fchown(fd, owner.st_uid, owner.st_gid)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_keys(path: Path) -> dict[str, str]:
    return json.loads(Path(path).read_text())


def ensure_keys(path: Path) -> dict[str, str]:
    """The endpoint's keys, generated on first use."""
    if path.exists():
        return read_keys(path)
    keys = {name: _new_key() for name in KEY_NAMES}
    write_atomic(path, keys)
    return keys


def regenerate(path: Path, which: str) -> dict[str, str]:
    """Replace one key; the other stays valid, so callers can switch without downtime."""
    if which not in KEY_NAMES:
        raise ValueError(f"key must be one of {', '.join(KEY_NAMES)}")
    keys = ensure_keys(path)
    keys[which] = _new_key()
    write_atomic(path, keys)
    return keys
