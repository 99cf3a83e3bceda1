"""Reading collected events: time order across files, filters, and lines that are not whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pipeline.monitor import read_events


def _write(root: Path, relative: str, events: list[dict], tail: bytes = b"") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events) + tail)


def _event(moment: str, n: int) -> dict:
    return {"id": f"id{n}", "time": moment, "inputs": [[n]], "outputs": [n], "status": 200}


def test_events_in_time_order_across_processes_and_hours(tmp_path):
    _write(tmp_path, "ep/blue/2024/05/01/13/00-2-b.jsonl", [_event("2024-05-01T13:00:01.000000+00:00", 3)])
    _write(tmp_path, "ep/blue/2024/05/01/12/00-1-a.jsonl", [_event("2024-05-01T12:00:01.000000+00:00", 0),
                                                            _event("2024-05-01T12:30:00.000000+00:00", 2)])
    _write(tmp_path, "ep/blue/2024/05/01/12/00-7-c.jsonl", [_event("2024-05-01T12:10:00.000000+00:00", 1)])
    _write(tmp_path, "ep/green/2024/05/01/12/00-9-d.jsonl", [_event("2024-05-01T12:20:00.000000+00:00", 9)])
    assert [e.id for e in read_events(tmp_path, "ep", "blue")] == ["id0", "id1", "id2", "id3"]
    assert [e.id for e in read_events(tmp_path)] == ["id0", "id1", "id9", "id2", "id3"]
    assert [e.id for e in read_events(tmp_path, deployment="green")] == ["id9"]
    assert list(read_events(tmp_path, "other")) == []


def test_since_until_window(tmp_path):
    _write(tmp_path, "ep/blue/2024/05/01/12/00-1-a.jsonl", [_event("2024-05-01T12:00:01.000000+00:00", 0),
                                                            _event("2024-05-01T12:30:00.000000+00:00", 1)])
    _write(tmp_path, "ep/blue/2024/05/02/09/00-1-a.jsonl", [_event("2024-05-02T09:00:00.000000+00:00", 2)])
    since = datetime(2024, 5, 1, 12, 15, tzinfo=UTC)
    until = datetime(2024, 5, 2, 9, 0)  # naive: taken as UTC, and exclusive
    assert [e.id for e in read_events(tmp_path, since=since, until=until)] == ["id1"]
    assert [e.id for e in read_events(tmp_path, since=since)] == ["id1", "id2"]


def test_torn_and_corrupt_lines_are_skipped_and_counted(tmp_path):
    good = [_event("2024-05-01T12:00:01.000000+00:00", 0), _event("2024-05-01T12:00:02.000000+00:00", 1)]
    _write(tmp_path, "ep/blue/2024/05/01/12/00-1-a.jsonl", good[:1], tail=b"not json at all\n")
    _write(tmp_path, "ep/blue/2024/05/01/12/01-1-a.jsonl", good[1:], tail=b'{"id": "torn", "ti')
    reader = read_events(tmp_path)
    assert [e.id for e in reader] == ["id0", "id1"]
    assert reader.skipped == 2


def test_missing_folder_reads_nothing(tmp_path):
    reader = read_events(tmp_path / "absent")
    assert list(reader) == [] and reader.skipped == 0


def test_lines_of_older_collectors_still_read_and_ones_holding_no_event_are_skipped(tmp_path):
    """Events are typed on reading; a line written before (fewer fields) still reads, with defaults."""
    old = {"id": "old", "time": "2024-05-01T12:00:01.000000+00:00", "status": 200, "inputs": {"data": [[1]]}}
    wrong = {"id": "bad", "time": "2024-05-01T12:00:02.000000+00:00", "status": "200"}
    _write(tmp_path, "ep/blue/2024/05/01/12/00-1-a.jsonl", [old, wrong])
    reader = read_events(tmp_path)
    (event,) = list(reader)
    assert (event.id, event.status, event.inputs, event.deployment, event.latency_ms) == \
        ("old", 200, {"data": [[1]]}, None, None)
    assert reader.skipped == 1


def test_newest_reads_the_last_events_from_the_newest_periods_back(tmp_path):
    _write(tmp_path, "ep/blue/2024/05/01/12/00-1-a.jsonl", [_event("2024-05-01T12:00:01.000000+00:00", 0)])
    _write(tmp_path, "ep/blue/2024/05/01/13/00-1-a.jsonl", [_event("2024-05-01T13:00:01.000000+00:00", 1),
                                                            _event("2024-05-01T13:00:03.000000+00:00", 3)])
    _write(tmp_path, "ep/blue/2024/05/01/13/00-2-b.jsonl", [_event("2024-05-01T13:00:02.000000+00:00", 2)])
    _write(tmp_path, "ep/blue/2024/05/01/14/00-1-a.jsonl", [_event("2024-05-01T14:00:01.000000+00:00", 4),
                                                            {**_event("2024-05-01T14:00:02.000000+00:00", 5),
                                                             "status": 500}])
    reader = read_events(tmp_path, "ep", "blue")
    assert [e.id for e in reader.newest(3, lambda e: not e.failed)] == ["id2", "id3", "id4"]
    assert reader.files_read == 3  # the oldest hour was never opened
    assert [e.id for e in read_events(tmp_path, "ep", "blue").newest(10)] == [f"id{n}" for n in range(6)]


def test_a_short_window_opens_only_the_files_that_can_hold_it(tmp_path):
    for hour in range(6):  # hour-rolled files of one day: 00 .. 05
        _write(tmp_path, f"ep/blue/2024/05/01/{hour:02d}/00-1-a.jsonl",
               [_event(f"2024-05-01T{hour:02d}:10:00+00:00", hour)])
    for minute in (10, 20):  # a minute-rolled deployment
        _write(tmp_path, f"ep/green/2024/05/01/05/{minute:02d}-1-a.jsonl",
               [_event(f"2024-05-01T05:{minute:02d}:30+00:00", minute)])
    reader = read_events(tmp_path, "ep", since=datetime(2024, 5, 1, 5, 15, tzinfo=UTC))
    assert [e.id for e in reader] == ["id20"]
    # blue's 05 and green's 05/20, and blue's 00/00 (it could be a day-rolled file); not 01-04 nor 05/10
    assert reader.files_read == 3


def test_unordered_reading_yields_the_same_events(tmp_path):
    _write(tmp_path, "ep/blue/2024/05/01/12/00-1-a.jsonl", [_event("2024-05-01T12:00:01.000000+00:00", 0),
                                                            _event("2024-05-01T12:30:00.000000+00:00", 2)])
    _write(tmp_path, "ep/blue/2024/05/01/12/00-7-c.jsonl", [_event("2024-05-01T12:10:00.000000+00:00", 1)])
    unordered = [e.id for e in read_events(tmp_path, ordered=False)]
    assert sorted(unordered) == ["id0", "id1", "id2"] and len(unordered) == 3
