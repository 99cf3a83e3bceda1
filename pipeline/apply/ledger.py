"""The deployment ledger: what every apply did, kept beside the registry (``ledger.db``, SQLite).

Each entry (an apply or a destroy): time, commit, who, the plan summary, the endpoints it acted on,
and for each deployment the model version, image and traffic it serves afterwards. ``mlops
history`` reads it ("what served this endpoint, when, from which commit"); ``mlops rollback``
turns an entry back into an mlops.yaml change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.faults import crash_point

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    commit_sha TEXT,
    author TEXT,
    summary TEXT NOT NULL,
    outcome TEXT NOT NULL,
    served TEXT NOT NULL
);
"""
_COLUMNS = "id, time, commit_sha, author, summary, outcome, served, endpoints"


@dataclass(frozen=True)
class Entry:
    id: int
    time: str
    commit: str | None
    author: str | None
    summary: str
    outcome: str
    # "endpoint/deployment" -> {"model": "iris:3", "image": ..., "traffic": 90, "mirror": 0}
    served: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    acted_on: tuple[str, ...] = ()  # endpoints the entry changed that serve nothing after it (destroyed)

    def endpoints(self) -> set[str]:
        return {key.split("/", 1)[0] for key in self.served} | set(self.acted_on)


class Ledger:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(folder / "ledger.db", timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        if "endpoints" not in columns:  # ledgers written before destroy was recorded
            self._db.execute("ALTER TABLE entries ADD COLUMN endpoints TEXT NOT NULL DEFAULT '[]'")

    def record(self, *, commit: str | None, author: str | None, summary: str, outcome: str,
               served: Mapping[str, Mapping[str, Any]], acted_on: tuple[str, ...] = (),
               plan_json: str | None = None) -> int:
        """Append an entry; ``plan_json`` is accepted so callers treat every ledger alike (kept by MlflowLedger)."""
        cursor = self._db.execute(
            f"INSERT INTO entries ({_COLUMNS.removeprefix('id, ')}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (datetime.now(UTC).isoformat(timespec="seconds"), commit, author, summary, outcome,
             json.dumps(served, sort_keys=True), json.dumps(sorted(acted_on))))
        crash_point("ledger entry committed")
        return int(cursor.lastrowid or 0)

    def entries(self, endpoint: str | None = None) -> list[Entry]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY id").fetchall()
        entries = [Entry(id=row[0], time=row[1], commit=row[2], author=row[3], summary=row[4], outcome=row[5],
                         served=json.loads(row[6]), acted_on=tuple(json.loads(row[7]))) for row in rows]
        if endpoint is not None:
            entries = [e for e in entries if endpoint in e.endpoints()]
        return entries

    def close(self) -> None:
        self._db.close()
