"""Key auth for the scoring service: ``Authorization: Bearer <primary or secondary key>``.

The keys live in a JSON file (mode 0600) that targets write with the helpers of ``pipeline.keys``;
this module re-exports them under the server's names. The service re-reads the file when its
modification time changes (looked at no more than once a second), so a key is rotated without a
restart: callers switch to the other key, the old one is regenerated, and no request fails.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from pathlib import Path

from pipeline.errors import ServeError
from pipeline.keys import KEY_NAMES, read_keys, regenerate, write_atomic

__all__ = ["KEY_NAMES", "KeyChecker", "generate_keys", "read_keys", "regenerate"]

log = logging.getLogger("mlops.server")

RECHECK_SECONDS = 1.0
_BEARER = b"bearer "


def generate_keys(path: Path) -> dict[str, str]:
    """Write a fresh pair of keys (replacing any), atomically and readable by the owner only."""
    keys = {name: secrets.token_urlsafe(32) for name in KEY_NAMES}
    write_atomic(Path(path), keys)
    return keys


class KeyChecker:
    """Checks a request's Authorization header against the current keys, cheaply.

    Comparison is constant-time against both keys (no early exit that would tell which one was
    close). A file that disappears or cannot be parsed keeps the last good keys and is logged:
    a half-finished rotation must not lock every caller out.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._keys: tuple[bytes, ...] = ()
        self._mtime_ns = -1
        self._checked = 0.0
        try:
            self._load(os.stat(self.path).st_mtime_ns)
        except (OSError, ValueError) as error:
            raise ServeError(f"cannot read the keys file {self.path}: {error}") from error

    def _load(self, mtime_ns: int) -> None:
        keys = read_keys(self.path)
        values = tuple(str(keys[name]).encode() for name in KEY_NAMES if keys.get(name))
        if not values:
            raise ValueError("it holds no keys")
        self._keys, self._mtime_ns = values, mtime_ns

    def _refresh(self, now: float) -> None:
        self._checked = now
        try:
            mtime_ns = os.stat(self.path).st_mtime_ns
            if mtime_ns != self._mtime_ns:
                self._load(mtime_ns)
                log.info("keys file changed; new keys in use")
        except (OSError, ValueError) as error:
            log.warning("cannot re-read the keys file %s (%s); keeping the previous keys", self.path, error)

    def allows(self, header: bytes | None, now: float | None = None) -> bool:
        """True when ``header`` is ``Bearer <key>`` for one of the current keys."""
        now = time.monotonic() if now is None else now
        if now - self._checked >= RECHECK_SECONDS:
            self._refresh(now)
        if not header or header[:7].lower() != _BEARER:
            return False
        token = header[7:].strip()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(token, key)
        return ok
