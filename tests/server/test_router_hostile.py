"""The router under hostile input: keys and sizes are checked before a body is read, memory stays
bounded, and a normal request is still served afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from pipeline.keys import ensure_keys
from pipeline.monitor import read_events
from pipeline.targets.health import free_port

BACKEND = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    size = 0
    while True:  # read it all, then judge: an early answer with unread data races the sender's writes (RST)
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if size > 512 * 1024:  # the instance's own, smaller limit
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too large"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
LIMIT = 1024 * 1024
BIG = 200 * 1024 * 1024


@pytest.fixture
def router(tmp_path: Path, wait_http):
    """A key-protected router with a 1 MiB body limit in front of one backend."""
    keys = ensure_keys(tmp_path / "keys.json")
    (tmp_path / "backend.py").write_text(BACKEND)
    backend_port, port = free_port(), free_port()
    config = {"endpoint": "e", "host": "127.0.0.1", "port": port,
              "backends": {"blue": [f"http://127.0.0.1:{backend_port}"]}, "traffic": {"blue": 100},
              "keys_file": str(tmp_path / "keys.json"), "max_body_bytes": LIMIT, "data_dir": str(tmp_path / "data"),
              "log": {"file": str(tmp_path / "router.log"), "max_bytes": 2000, "backups": 1}}
    (tmp_path / "router.json").write_text(json.dumps(config))
    processes = [subprocess.Popen([sys.executable, str(tmp_path / "backend.py"), str(backend_port)]),
                 subprocess.Popen([sys.executable, "-m", "pipeline.server.router", "--config",
                                   str(tmp_path / "router.json")])]
    try:
        wait_http(f"http://127.0.0.1:{backend_port}/")
        wait_http(f"http://127.0.0.1:{port}/-/router/ready")
        yield {"url": f"http://127.0.0.1:{port}/score", "key": keys["primary"], "pid": processes[1].pid,
               "log": tmp_path / "router.log", "data": tmp_path / "data"}
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def _stream(total: int):
    chunk = b"x" * (1024 * 1024)
    for _ in range(total // len(chunk)):
        yield chunk


def _post(router, key: str, content, **headers) -> int:
    headers = {"authorization": f"Bearer {key}", **headers}
    return httpx.post(router["url"], content=content, headers=headers, timeout=30).status_code


def test_wrong_key_is_refused_before_the_body_is_read(router):
    """A caller without the key cannot make the router read (or buffer) anything."""
    assert _post(router, "wrong", _stream(BIG), **{"content-length": str(BIG)}) == 401


def test_declared_oversize_body_is_refused_at_once(router):
    """The declared Content-Length is enough to refuse: 413, not 502."""
    assert _post(router, router["key"], _stream(BIG), **{"content-length": str(BIG)}) == 413


def test_chunked_oversize_body_is_refused_while_streaming(router):
    """Without Content-Length the limit is counted as the body streams."""
    assert _post(router, router["key"], _stream(BIG)) == 413


def test_hostile_requests_keep_memory_bounded_and_harm_no_next_request(router):
    """Bodies are streamed, never buffered whole, and a refused request leaves nothing behind."""
    for key in ("wrong", router["key"]):
        _post(router, key, _stream(BIG))
        _post(router, key, _stream(BIG), **{"content-length": str(BIG)})
    assert psutil.Process(router["pid"]).memory_info().rss < 150 * 1024 * 1024
    response = httpx.post(router["url"], content=b"{}", headers={"authorization": f"Bearer {router['key']}"})
    assert (response.status_code, response.text) == (200, "ok")


def test_a_body_under_the_limit_reaches_the_instance(router):
    """The limit refuses only what exceeds it."""
    assert _post(router, router["key"], b"y" * (LIMIT // 4)) == 200


def test_the_instance_413_passes_through(router):
    """A body the router lets through but the instance refuses is the instance's 413, not 502."""
    response = httpx.post(router["url"], content=b"y" * (LIMIT - 1), timeout=30,
                          headers={"authorization": f"Bearer {router['key']}"})
    assert (response.status_code, response.text) == (413, "too large")


def test_log_is_rotated_and_requests_are_not_logged_by_default(router):
    """Hostile traffic cannot fill the disk through the router's log."""
    for _ in range(200):
        _post(router, router["key"], b"{}")
    log = Path(router["log"])
    assert log.stat().st_size <= 2000 and "/score" not in log.read_text()


def test_opted_in_access_log_rotates_by_size(router):
    """With ``access_log`` on, every request is logged, and the file still never outgrows its cap."""
    config = router["log"].parent / "router.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "access_log": True}))
    time.sleep(0.5)  # the router re-reads its config every 50 ms
    for _ in range(100):
        _post(router, router["key"], b"{}")
    log, backup = router["log"], router["log"].with_name("router.log.1")
    assert "/score -> blue 200" in log.read_text() + backup.read_text()
    assert log.stat().st_size <= 2000 and backup.stat().st_size <= 2000


def test_the_requests_the_router_refuses_are_collected_without_payload(router):
    """No scoring service sees them, so the router collects them itself, for `mlops monitor` to count."""
    assert _post(router, "wrong", b'{"data": [[1]]}') == 401
    assert _post(router, router["key"], b"{}", **{"x-mlops-deployment": "nope"}) == 404
    assert _post(router, router["key"], b"{}") == 200  # forwarded: the instance collects it, not the router
    deadline, events = time.monotonic() + 10, []
    while time.monotonic() < deadline and len(events) < 2:
        time.sleep(0.2)
        events = list(read_events(router["data"], "e"))
    assert [(e.deployment, e.status, e.inputs, e.outputs, e.model) for e in events] == [
        ("_router", 401, None, None, None), ("_router", 404, None, None, None)]
    assert "deployment 'nope' is not part of this endpoint" in events[1].error
