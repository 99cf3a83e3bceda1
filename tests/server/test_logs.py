"""Data-plane logs rotate by size: a service that runs for months keeps a bounded log."""

from __future__ import annotations

import logging

from pipeline.server import logs


def test_the_log_file_rotates_and_keeps_a_bounded_number_of_backups(tmp_path):
    path = tmp_path / "service.log"
    try:
        logs.configure("info", path, max_bytes=2_000, backups=2)
        for number in range(400):
            logging.getLogger("uvicorn.error").info("line %d with some padding to fill the file", number)
    finally:
        logging.basicConfig(handlers=[logging.StreamHandler()], force=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["service.log", "service.log.1", "service.log.2"]
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())
    assert "line 399" in path.read_text()
