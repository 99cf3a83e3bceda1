"""Logging for the data-plane processes (scoring service, router): to a file rotated by size, or stderr.

Uses ``logging.handlers.RotatingFileHandler``: a process that runs for months keeps at most
``max_bytes × (backups + 1)`` of log. Uvicorn's own loggers propagate here (callers pass
``log_config=None``).
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, file: str | Path | None = None, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
    handler: logging.Handler = (logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups)
                                if file else logging.StreamHandler())
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO: an access log
