"""Limits over real HTTP: 413 for big bodies, 504 on time, 429 instead of an endless queue."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow

LIMITS = {"request_timeout_ms": 300, "max_concurrent_requests_per_instance": 1, "max_queue_wait_ms": 100,
          "max_body_bytes": 1000}


@pytest.fixture
def limited(serve, models):
    """The score.py model (runs in threads: no warm-up example) with tight limits."""
    return serve(models["python"], "python", request_settings=LIMITS)


def test_body_limit_declared_and_streamed(limited):
    big = b'{"data": [[' + b"1," * 600 + b"1]]}"
    with limited.client() as client:
        declared = client.post("/score", content=big)
        assert declared.status_code == 413 and "1000 bytes" in declared.json()["error"]

        def chunks():
            for start in range(0, len(big), 100):
                yield big[start:start + 100]

        streamed = client.post("/score", content=chunks())  # chunked: no Content-Length
        assert streamed.status_code == 413
    with limited.client() as client:
        assert client.post("/score", json={"data": [[1, 2]]}).json() == [6.0]


def test_timeout_is_504_on_time_and_a_busy_instance_answers_429_fast(limited):
    results: dict[str, tuple[int, float]] = {}

    def slow() -> None:
        began = time.monotonic()
        with limited.client() as client:
            response = client.post("/score", json={"data": "sleep"})  # the model sleeps 1 s
        results["slow"] = (response.status_code, time.monotonic() - began)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.15)
    with limited.client() as client:
        began = time.monotonic()
        busy = client.post("/score", json={"data": [[1, 2]]})
        waited = time.monotonic() - began
        assert busy.status_code == 429, busy.text
        assert waited < 0.5  # max_queue_wait_ms=100, never an endless wait
        assert busy.headers["retry-after"] == "1"
    thread.join()
    status, took = results["slow"]
    assert status == 504 and took < 0.8  # request_timeout_ms=300, though the model ran on
    deadline = time.monotonic() + 3
    with limited.client() as client:  # the slot comes back when the model really finishes
        while (response := client.post("/score", json={"data": [[1, 2]]})).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert response.json() == [6.0]
        text = client.get("/metrics").text
    assert 'route="/score",status="504"' in text and 'route="/score",status="429"' in text


def test_wrong_method_and_not_ready_answers(limited):
    with limited.client() as client:
        response = client.get("/score")
        assert response.status_code == 405 and "error" in response.json()
    with httpx.Client(base_url=limited.url) as client:
        assert client.get("/v2/health/ready").status_code == 200
