"""``EndpointScorer`` against a real HTTP server on loopback: 429 Retry-After honoured, a 400 isolated
to the rows at fault, 5xx retried, the key sent."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

from pipeline.batch.scoring import EndpointScorer, Unavailable


class Scripted(BaseHTTPRequestHandler):
    """/score answering the sum of each row; 429 the first time, 500 the second, 400 for a negative value."""

    calls: list[tuple[float, str]] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.calls.append((time.monotonic(), self.headers.get("authorization", "")))
        rows = body["input_data"]["data"]
        if len(self.calls) == 1:
            return self._answer(429, {"error": "busy"}, {"Retry-After": "0.3"})
        if len(self.calls) == 2:
            return self._answer(500, {"error": "hiccup"})
        if any(value < 0 for row in rows for value in row):
            return self._answer(400, {"error": "negative value"})
        return self._answer(200, {"predictions": [sum(row) for row in rows]})

    def _answer(self, status, data, headers=None):
        payload = json.dumps(data).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Scripted.calls = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_retry_after_backoff_and_rows_at_fault(server):
    scorer = EndpointScorer(server, "secret", ["a", "b"], concurrency=1, retries=2, request_rows=4)
    table = pa.table({"a": [1.0, 2.0, -3.0, 4.0, 5.0], "b": [10.0, 20.0, 30.0, 40.0, 50.0]})
    scored = scorer.score(table)
    scorer.close()
    assert scored.rows.tolist() == [0, 1, 3, 4]
    assert scored.columns["prediction"].tolist() == [11.0, 22.0, 44.0, 55.0]
    assert scored.errors == [(2, "negative value")]
    assert Scripted.calls[1][0] - Scripted.calls[0][0] >= 0.3  # waited as Retry-After said
    assert all(key == "Bearer secret" for _, key in Scripted.calls)


def test_an_endpoint_that_does_not_answer_stops_the_run():
    scorer = EndpointScorer("http://127.0.0.1:9", None, ["a"], retries=1, timeout=1)
    with pytest.raises(Unavailable, match="after 1 retries"):
        scorer.score(pa.table({"a": [1.0, 2.0]}))
    scorer.close()
