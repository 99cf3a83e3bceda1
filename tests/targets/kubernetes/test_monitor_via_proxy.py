"""``mlops monitor`` on a kubernetes endpoint: the adapter reads the endpoint's collection sink through
the API server's service proxy (the fake ``Cluster`` hands the call to a real ``Sink`` app in-process)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest

from pipeline.errors import TargetError
from pipeline.server.sink import Sink, SinkConfig, store
from pipeline.targets.kubernetes.manifests import SINK_PORT
from tests.targets.kubernetes.fake_cluster import FakeCluster
from tests.targets.kubernetes.test_adapter import deploy_all, spec, target  # noqa: F401 - the fixture

ROW = [[5.1, 3.5, 1.4, 0.2]]


def line(n: int, deployment: str, minute: int) -> bytes:
    return json.dumps({"id": f"{n:032x}", "time": f"2026-11-25T08:{minute:02d}:00.000000+00:00", "endpoint": "iris",
                       "deployment": deployment, "model": "iris-classifier", "model_version": 3, "route": "score",
                       "status": 200, "latency_ms": 1.0, "inputs": ROW, "outputs": [n], "error": None}).encode() + b"\n"


def asgi_get(app, path: str, query: dict, headers: dict) -> tuple[int, bytes]:
    """One GET on an ASGI app, in-process: what the Service behind the API server's proxy answers."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": urlencode(query).encode(),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def sink(tmp_path: Path, spec):  # noqa: F811 - the fixture
    """The adapter on a fake cluster whose Service ``iris-collector`` is a real sink over a real folder."""
    cluster = FakeCluster()
    adapter = target(spec, cluster)
    deploy_all(spec, adapter)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(adapter.keys("iris")))
    data = tmp_path / "sink"
    for n, (deployment, minute) in enumerate([("blue", 5), ("green", 6), ("blue", 7), ("blue", 50)]):
        store(data / "iris", f"{deployment}/2026/11/25/08/00-{n}-0000000{n}.jsonl", 0, line(n, deployment, minute))
    app = Sink(SinkConfig("iris", data, keys_file=keys_file))
    seen: list[dict] = []

    def handler(path: str, query: dict, headers: dict) -> tuple[int, bytes]:
        seen.append(headers)
        return asgi_get(app, path, query, headers)

    cluster.services[("iris-collector", SINK_PORT)] = handler
    return adapter, cluster, seen


def test_monitor_reads_the_sink_through_the_service_proxy(sink):
    adapter, cluster, seen = sink
    events = adapter.collected("iris", "blue", datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
                               datetime(2026, 11, 25, 8, 30, tzinfo=UTC))
    assert [e.outputs for e in events] == [[0], [2]]
    assert events.files_read == 3 and events.truncated is False
    assert seen[0] == {"x-mlops-key": adapter.keys("iris")["primary"]}  # Authorization is the API server's
    assert ("proxy", "Service", f"iris-collector:{SINK_PORT}/v1/events") in cluster.calls
    everything = adapter.collected("iris", None, None, None)
    assert [e.deployment for e in everything] == ["blue", "green", "blue", "blue"]


def test_the_report_is_made_from_what_the_adapter_returns(sink):
    from pipeline.monitor.report import summarize

    adapter, _, _ = sink
    reports = summarize(adapter.collected("iris", None, None, None), None)
    assert {r.to_dict()["deployment"]: r.to_dict()["requests"] for r in reports} == {"blue": 3, "green": 1}


def test_an_unreachable_or_refusing_sink_is_a_target_error(sink):
    adapter, cluster, _ = sink
    handler = cluster.services.pop(("iris-collector", SINK_PORT))  # no ready sink pod: the proxy answers 503
    with pytest.raises(TargetError, match="collected data of endpoint 'iris'.*503") as caught:
        adapter.collected("iris", None, None, None)
    assert caught.value.transient
    cluster.services[("iris-collector", SINK_PORT)] = handler
    assert len(list(adapter.collected("iris", None, None, None))) == 4  # back
    cluster.services[("iris-collector", SINK_PORT)] = lambda path, query, headers: (401, b'{"error": "key"}')
    with pytest.raises(TargetError, match="401"):
        adapter.collected("iris", None, None, None)


def test_a_stream_cut_short_says_so():
    from pipeline.targets.kubernetes.adapter import CollectedEvents

    whole = CollectedEvents.parse(line(1, "blue", 1) + b'{"summary": {"files_read": 2, "truncated": false}}\n')
    cut = CollectedEvents.parse(line(1, "blue", 1) + line(2, "blue", 2)[:20])
    assert (len(whole.events), whole.files_read, whole.truncated) == (1, 2, False)
    assert (len(cut.events), cut.skipped, cut.truncated) == (1, 1, True)
