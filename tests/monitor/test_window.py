"""`mlops monitor --since`: durations in days and weeks, absolute dates, and an honest empty window."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli
from pipeline.errors import MlopsError
from pipeline.monitor.window import parse_since

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", NOW - timedelta(minutes=90)),
    ("36h", NOW - timedelta(hours=36)),
    ("2d", NOW - timedelta(days=2)),
    ("1w", NOW - timedelta(weeks=1)),
    ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ("2026-11-01T12:00", datetime(2026, 11, 1, 12, tzinfo=UTC)),
    ("2026-11-01T12:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
])
def test_since_accepts_long_durations_and_iso_dates(text, expected):
    assert parse_since(text, NOW) == expected


def test_since_that_is_neither_is_refused_with_examples():
    with pytest.raises(MlopsError, match="neither a duration"):
        parse_since("yesterday", NOW)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The example repository with one collected request 30 hours ago."""
    shutil.copytree(REPO / "models", tmp_path / "models")
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    shutil.copy(REPO / "mlops.yaml", tmp_path / "mlops.yaml")
    moment = (datetime.now(UTC) - timedelta(hours=30)).replace(minute=10)
    folder = tmp_path / ".mlops" / "data" / "iris" / "blue" / moment.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True)
    event = {"time": moment.isoformat(), "deployment": "blue", "status": 200, "latency_ms": 1.0,
             "model": "iris-classifier", "model_version": 1, "inputs": {"data": [[5.1, 3.5, 1.4, 0.2]]}}
    (folder / "00-1-a.jsonl").write_text(json.dumps(event) + "\n")
    return tmp_path


def _monitor(repo: Path, *args: str):
    return CliRunner().invoke(cli, ["--file", str(repo / "mlops.yaml"), "monitor", "iris", *args])


def test_monitor_since_days_finds_a_request_of_yesterday(repo):
    result = _monitor(repo, "--since", "2d", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deployments"][0]["requests"] == 1


def test_empty_window_names_the_window_and_the_files_read(repo):
    """The window starts after the one request, within the hour its file holds: that file is read."""
    (path,) = (repo / ".mlops" / "data").rglob("*.jsonl")
    moment = datetime.fromisoformat(json.loads(path.read_text())["time"])
    since = (moment + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
    result = _monitor(repo, "--since", since)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"no requests between {since}:00Z and ")
    assert result.output.rstrip().endswith("(1 files read)")


def test_a_window_after_a_file_s_hour_does_not_open_it(repo):
    (path,) = (repo / ".mlops" / "data").rglob("*.jsonl")
    moment = datetime.fromisoformat(json.loads(path.read_text())["time"])
    since = (moment.replace(minute=0) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    result = _monitor(repo, "--since", since)
    expected = 1 if moment.hour == 0 else 0  # a file of hour 00 may be day-rolled: it is opened
    assert result.output.rstrip().endswith(f"({expected} files read)"), result.output


def test_unreadable_since_is_one_message_and_exit_1(repo):
    result = _monitor(repo, "--since", "2 days ago")
    assert result.exit_code == 1
    assert "neither a duration" in result.output and "Traceback" not in result.output
