"""Stopping a real service: SIGTERM finishes requests and flushes the collector; SIGKILL leaves a
log the reader can still read (at most one torn last line, skipped)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from pipeline.monitor import read_events

pytestmark = pytest.mark.slow

COLLECT = {"enabled": True, "sampling_rate": 1.0, "rolling_rate": "hour"}
ROW = [[0.5, -1.0, 2.0, 0.1]]


def _send(served, count: int) -> None:
    with served.client() as client:
        for _ in range(count):
            assert client.post("/score", json={"data": ROW}).status_code == 200


def test_sigterm_finishes_in_flight_requests_and_flushes_the_collector(serve, models):
    served = serve(models["python"], "python", data_collector=COLLECT)
    slow: list[int] = []

    def in_flight() -> None:
        with served.client() as client:  # still running when SIGTERM arrives
            slow.append(client.post("/score", json={"data": "sleep"}).status_code)

    _send(served, 200)
    thread = threading.Thread(target=in_flight)
    thread.start()
    time.sleep(0.3)
    assert served.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises it once done
    thread.join()
    assert slow == [200]
    events = list(read_events(served.folder / "data"))
    assert len(events) == 201
    assert "data collector flushed: 201 events written" in served.log.read_text()


def test_sigkill_leaves_a_readable_log(serve, models):
    served = serve(models["sklearn"], "sklearn", data_collector=COLLECT)
    _send(served, 50)
    deadline = time.monotonic() + 5  # batches are written about once a second
    while len(list(read_events(served.folder / "data"))) < 50:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    served.stop(signal.SIGKILL)
    (log,) = (served.folder / "data").rglob("*.jsonl")
    with open(log, "ab") as handle:  # what a kill in the middle of a write leaves behind
        handle.write(b'{"id": "torn", "time": "2')
    reader = read_events(served.folder / "data", endpoint="ep", deployment="blue")
    events = list(reader)
    assert len(events) == 50 and reader.skipped == 1
    assert all(event.inputs["data"] == ROW for event in events)


def test_liveness_answers_while_the_model_loads(serve, models, tmp_path):
    """Readiness waits for the model (and its warm-up); liveness does not."""
    slow_init = tmp_path / "slow"
    slow_init.mkdir()
    (slow_init / "score.py").write_text("import time\n\ndef init():\n    time.sleep(2)\n\n"
                                        "def run(raw):\n    return raw\n")
    served = serve(slow_init, "python", wait=False)
    deadline = time.monotonic() + 30
    seen_live_not_ready = False
    while time.monotonic() < deadline:
        try:
            live = httpx.get(served.url + "/v2/health/live", timeout=1).status_code
            ready = httpx.get(served.url + "/v2/health/ready", timeout=1).status_code
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        if live == 200 and ready == 503:
            seen_live_not_ready = True
        if ready == 200:
            break
        time.sleep(0.05)
    assert seen_live_not_ready and ready == 200
