"""The collection sink over real HTTP, and real scoring services shipping their spool to it.

The sink runs as ``python -m pipeline.server.sink --config FILE`` (as in its pod); services as the
targets start them (``conftest.start_server``) with ``collection_sink`` set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.monitor.collected import read_events
from pipeline.server.auth import generate_keys
from pipeline.server.eventfiles import RELATIVE_PATH
from tests.server.conftest import ROOT, free_port

COLLECT = {"enabled": True, "sampling_rate": 1.0, "rolling_rate": "minute"}
ROW = [[5.1, 3.5, 1.4, 0.2]]
FILE = "blue/2026/11/25/08/00-42-0123abcd.jsonl"


def event(n: int, deployment: str = "blue", hour: int = 8) -> bytes:
    return json.dumps({"id": f"{n:032x}", "time": f"2026-11-25T{hour:02d}:00:{n % 60:02d}.000000+00:00",
                       "endpoint": "ep", "deployment": deployment, "model": "iris", "model_version": 3,
                       "route": "score", "status": 200, "latency_ms": 0.5, "inputs": ROW, "outputs": [n],
                       "error": None}).encode() + b"\n"


@dataclass
class RunningSink:
    url: str
    process: subprocess.Popen
    data: Path
    keys: dict[str, str]
    port: int
    log: Path

    def headers(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys['primary']}", **extra}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)


def start_sink(folder: Path, keys_file: Path, port: int | None = None, max_batch_bytes: int | None = None) \
        -> RunningSink:
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = {"endpoint": "ep", "data_dir": str(folder / "data"), "port": port, "host": "127.0.0.1",
              "keys_file": str(keys_file)}
    if max_batch_bytes:
        config["max_batch_bytes"] = max_batch_bytes
    (folder / "sink.json").write_text(json.dumps(config))
    log = folder / "sink.log"
    with open(log, "ab") as handle:
        command = [sys.executable, "-m", "pipeline.server.sink", "--config", str(folder / "sink.json")]
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    sink = RunningSink(f"http://127.0.0.1:{port}", process, folder / "data", json.loads(keys_file.read_text()),
                       port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(sink.url + "/v1/ready", timeout=1).status_code == 200:
                return sink
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"sink not ready:\n{log.read_text()}")


@pytest.fixture
def sinks(tmp_path: Path):
    started: list[RunningSink] = []
    keys_file = tmp_path / "keys.json"
    generate_keys(keys_file)

    def factory(keys: Path = keys_file, **options) -> RunningSink:
        sink = start_sink(tmp_path / "sink", keys, **options)
        started.append(sink)
        return sink

    yield factory
    for sink in started:
        sink.stop()


def post(sink: RunningSink, body: bytes, file: str = FILE, offset: int = 0, **headers: str) -> httpx.Response:
    return httpx.post(sink.url + "/v1/events", content=body,
                      headers={"x-mlops-file": file, "x-mlops-offset": str(offset), **sink.headers(), **headers})


def test_a_posted_batch_is_on_disk_when_acknowledged_and_reads_back_unchanged(sinks):
    sink = sinks()
    body = b"".join(event(n) for n in range(10))
    answer = post(sink, body)
    assert answer.status_code == 200 and answer.json() == {"stored": 10}
    assert (sink.data / "ep" / FILE).read_bytes() == body  # written (and fsynced) before the answer
    assert [e.outputs for e in read_events(sink.data, "ep")] == [[n] for n in range(10)]


def test_a_batch_posted_again_is_stored_once(sinks):
    sink = sinks()
    first, second = event(1), event(2)
    assert post(sink, first).status_code == 200
    assert post(sink, second, offset=len(first)).status_code == 200
    assert post(sink, second, offset=len(first)).status_code == 200  # the answer was lost: sent again
    assert post(sink, first + second, offset=0).status_code == 200  # a restarted pod ships the file again
    assert (sink.data / "ep" / FILE).read_bytes() == first + second


def test_a_wrong_key_is_401_and_the_proxy_header_works(sinks):
    sink = sinks()
    answer = httpx.post(sink.url + "/v1/events", content=event(1), headers={
        "x-mlops-file": FILE, "authorization": "Bearer nope"})
    assert answer.status_code == 401
    assert httpx.get(sink.url + "/v1/events").status_code == 401
    assert httpx.get(sink.url + "/v1/events", headers={"x-mlops-key": sink.keys["secondary"]}).status_code == 200
    assert not (sink.data / "ep" / FILE).exists()


def test_oversized_bad_paths_and_torn_bodies_are_refused(sinks):
    sink = sinks(max_batch_bytes=4096)
    assert post(sink, event(1) * 100).status_code == 413
    assert post(sink, event(1), file="../../etc/passwd").status_code == 400
    assert post(sink, event(1), file="blue/2026/11/25/08/x.jsonl").status_code == 400
    assert post(sink, event(1)[:-5]).status_code == 400
    assert not list(sink.data.rglob("*.jsonl"))


def test_get_streams_the_window_of_one_deployment(sinks):
    sink = sinks()
    for n, (deployment, hour) in enumerate([("blue", 8), ("blue", 9), ("green", 8), ("blue", 10)]):
        file = f"{deployment}/2026/11/25/{hour:02d}/00-1-0000000{n}.jsonl"
        assert post(sink, event(n, deployment, hour), file=file).status_code == 200
    answer = httpx.get(sink.url + "/v1/events", headers=sink.headers(), params={
        "deployment": "blue", "since": "2026-11-25T08:30:00+00:00", "until": "2026-11-25T10:00:00+00:00"})
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [line["outputs"] for line in lines[:-1]] == [[1]]
    assert lines[-1]["summary"]["events"] == 1 and lines[-1]["summary"]["truncated"] is False
    everything = httpx.get(sink.url + "/v1/events", headers=sink.headers(), params={"limit": 3}).text.splitlines()
    assert len(everything) == 4 and json.loads(everything[-1])["summary"]["truncated"] is True


def test_the_file_pattern_is_the_collectors_layout(sinks, tmp_path):
    assert RELATIVE_PATH.match(FILE)
    assert not RELATIVE_PATH.match("blue/2026/11/25/08/00-42-0123abcd.jsonl/../x")


# -- the scoring service ships ------------------------------------------------------------------


def score(served, count: int) -> None:
    with served.client() as client:
        for _ in range(count):
            assert client.post("/score", json={"data": ROW}).status_code == 200


def spooled(served) -> list[Path]:
    return list((served.folder / "data").rglob("*.jsonl"))


def wait_for(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def sink_events(sink: RunningSink) -> list:
    return list(read_events(sink.data, "ep"))


def serve_shipping(serve, models, sink_url: str, **settings):
    """A service whose keys file the sink reads too (the endpoint's one keys Secret, on Kubernetes)."""
    return serve(models["sklearn"], "sklearn", data_collector=COLLECT, collection_sink=sink_url,
                 collection_grace_seconds=5, **settings)


def test_a_service_ships_every_event_to_the_sink(serve, models, sinks, tmp_path):
    port = free_port()
    served = serve_shipping(serve, models, f"http://127.0.0.1:{port}")
    sink = sinks(keys=served.keys_file, port=port)
    score(served, 30)
    wait_for(lambda: len(sink_events(sink)) == 30)
    assert served.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises it once done
    events = sink_events(sink)
    assert len(events) == 30 and len({e.id for e in events}) == 30
    assert all(e.deployment == "blue" and e.inputs["data"] == ROW for e in events)
    assert spooled(served) == []  # shipped, acknowledged, closed: deleted


def test_with_the_sink_down_events_stay_spooled_and_ship_when_it_is_back(serve, models, sinks, tmp_path):
    port = free_port()
    served = serve_shipping(serve, models, f"http://127.0.0.1:{port}")
    score(served, 20)
    wait_for(lambda: sum(len(p.read_bytes().splitlines()) for p in spooled(served)) == 20)
    time.sleep(1.5)
    sink = sinks(keys=served.keys_file, port=port)
    wait_for(lambda: len(sink_events(sink)) == 20, seconds=40)  # the backoff is capped
    score(served, 5)
    wait_for(lambda: len(sink_events(sink)) == 25)
    assert served.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises it once done


def test_sigterm_ships_what_is_spooled(serve, models, sinks, tmp_path):
    port = free_port()
    served = serve_shipping(serve, models, f"http://127.0.0.1:{port}")
    sink = sinks(keys=served.keys_file, port=port)
    score(served, 15)
    # at once: most events were never handed to the writer yet
    assert served.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert len(sink_events(sink)) == 15
    assert spooled(served) == []


def test_a_killed_services_spool_is_shipped_by_the_next_instance_on_its_folder(serve, models, sinks, tmp_path):
    port = free_port()
    served = serve_shipping(serve, models, f"http://127.0.0.1:{port}")
    score(served, 12)
    wait_for(lambda: sum(len(p.read_bytes().splitlines()) for p in spooled(served)) == 12)
    served.stop(signal.SIGKILL)
    left = spooled(served)
    assert left
    sink = sinks(keys=served.keys_file, port=port)
    from tests.server.conftest import start_server

    again = start_server(served.folder, models["sklearn"], "sklearn", data_collector=COLLECT,
                         collection_sink=sink.url, collection_grace_seconds=5)
    try:
        wait_for(lambda: len(sink_events(sink)) == 12)
        wait_for(lambda: not any(p.exists() for p in left))
    finally:
        again.stop()
