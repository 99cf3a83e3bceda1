"""The apply journal: every step recorded before and after it runs, one JSON line each, fsynced.

Applies converge by re-planning against observed state, so the journal is not needed to recover
data; it tells what an interrupted apply was doing ("resuming after step deploy:iris/blue") and
keeps an audit trail of every step's outcome.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pipeline.faults import crash_point


class Journal:
    def __init__(self, folder: Path, apply_id: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{apply_id}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, event: str, **fields) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
        os.write(self._fd, (json.dumps(entry, default=str) + "\n").encode())
        os.fsync(self._fd)
        crash_point(f"journal {event}")

    def close(self, outcome: str) -> None:
        self.record("end", outcome=outcome)
        os.close(self._fd)

    @staticmethod
    def interrupted(folder: Path) -> dict | None:
        """The last apply that never recorded its end: its id and the step it was in."""
        if not folder.exists():
            return None
        journals = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not journals:
            return None
        lines = []
        for line in journals[-1].read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                break  # a torn last line from a kill: everything before it is whole
        if not lines or lines[-1].get("event") == "end":
            return None
        started = [e for e in lines if e.get("event") == "start"]
        done = {e.get("step") for e in lines if e.get("event") == "done"}
        running = next((e["step"] for e in reversed(started) if e["step"] not in done), None)
        return {"apply": journals[-1].stem, "step": running, "done": len(done)}
