"""The endpoint router over real HTTP: weights, mirrors, pinning, and switching without failures."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from pipeline.monitor import read_events
from pipeline.targets.health import free_port

BACKEND = textwrap.dedent("""
    import sys, uvicorn
    name, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with open(log, "a") as handle:
            handle.write(body.decode() + "\\n")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": name.encode()})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
""")


@pytest.fixture
def cluster(tmp_path: Path, wait_http):
    """Three backends (blue, green, shadow) and a router in front of them."""
    script = tmp_path / "backend.py"
    script.write_text(BACKEND)
    processes: list[subprocess.Popen] = []
    try:
        yield from _cluster(tmp_path, script, processes, wait_http)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def _cluster(tmp_path: Path, script: Path, processes: list[subprocess.Popen], wait_http):
    backends = {}
    for name in ("blue", "green", "shadow"):
        port = free_port()
        processes.append(subprocess.Popen([sys.executable, str(script), name, str(port),
                                           str(tmp_path / f"{name}.log")]))
        backends[name] = [f"http://127.0.0.1:{port}"]
    for urls in backends.values():
        wait_http(urls[0])
    port = free_port()
    config = tmp_path / "router.json"

    def route(traffic, mirror=None, names=("blue", "green", "shadow"), wait=True, **extra):
        data = {"endpoint": "e", "host": "127.0.0.1", "port": port,
                "backends": {n: backends[n] for n in names}, "traffic": traffic, "mirror": mirror or {}, **extra}
        temp = tmp_path / "router.tmp"
        temp.write_text(json.dumps(data))
        os.replace(temp, config)
        generation = hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]
        deadline = time.monotonic() + 10
        while wait and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/router/ready").json()["generation"] == generation:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        if wait:
            raise TimeoutError("router did not switch")

    route({"blue": 100}, wait=False)
    processes.append(subprocess.Popen([sys.executable, "-m", "pipeline.server.router", "--config",
                                       str(config)]))
    route({"blue": 100})
    yield {"url": f"http://127.0.0.1:{port}", "route": route, "logs": tmp_path}


def test_traffic_is_split_by_weight(cluster):
    cluster["route"]({"blue": 80, "green": 20})
    with httpx.Client() as client:
        seen = Counter(client.post(cluster["url"] + "/score", content=b"{}").text for _ in range(500))
    assert set(seen) == {"blue", "green"}
    assert 0.7 < seen["blue"] / 500 < 0.9  # 80 % ± 10 points: far beyond 4 sigma


def test_pinned_deployment_header_reaches_a_deployment_without_traffic(cluster):
    response = httpx.post(cluster["url"] + "/score", content=b"{}", headers={"x-mlops-deployment": "green"})
    assert response.text == "green" and response.headers["x-mlops-deployment"] == "green"


def test_mirror_copies_requests_and_discards_answers(cluster):
    cluster["route"]({"blue": 100}, {"shadow": 50})
    with httpx.Client() as client:
        answers = {client.post(cluster["url"] + "/score", content=f"{i}".encode()).text for i in range(200)}
    assert answers == {"blue"}
    time.sleep(0.3)
    mirrored = len((cluster["logs"] / "shadow.log").read_text().splitlines())
    assert 60 < mirrored < 140  # 50 % of 200


def test_refusals_are_collected_once_the_routes_name_a_data_folder(cluster, tmp_path):
    """An endpoint's router starts before its first deployment: collection starts with the routes."""
    cluster["route"]({"blue": 100}, data_dir=str(tmp_path / "data"))
    assert httpx.post(cluster["url"] + "/score", content=b"{}", headers={"x-mlops-deployment": "nope"}
                      ).status_code == 404
    deadline, events = time.monotonic() + 10, []
    while time.monotonic() < deadline and not events:
        time.sleep(0.2)
        events = list(read_events(tmp_path / "data", "e", "_router"))
    assert [(e.status, e.route) for e in events] == [(404, "router")]


def test_no_live_traffic_answers_503(cluster):
    cluster["route"]({"blue": 0})
    response = httpx.post(cluster["url"] + "/score", content=b"{}")
    assert response.status_code == 503 and "no live traffic" in response.json()["error"]


def test_switching_under_load_fails_no_request(cluster):
    failures, answers, stop = [], Counter(), threading.Event()

    def load():
        with httpx.Client() as client:
            while not stop.is_set():
                try:
                    response = client.post(cluster["url"] + "/score", content=b"{}")
                    answers[response.text] += 1
                    if response.status_code != 200:
                        failures.append(response.status_code)
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for traffic in ({"green": 100}, {"blue": 100}, {"blue": 50, "green": 50}, {"green": 100}):
        time.sleep(0.2)
        cluster["route"](traffic)
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert answers["blue"] and answers["green"]
