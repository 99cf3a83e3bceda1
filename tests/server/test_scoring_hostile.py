"""Hostile input: whatever a caller sends, the answer is a 4xx with a message (or a 200), on time, and
the instance keeps scoring and collecting for the next caller.

Property-based with Hypothesis (arbitrary bytes, arbitrary JSON, and documents shaped like requests)
against the app in-process — an exception escaping the app fails the example — plus explicit cases
against a real server process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.monitor import read_events
from pipeline.monitor.report import feature_rows
from pipeline.runtime.jsonio import MAX_DEPTH
from pipeline.server.app import create_app
from pipeline.server.collector import Collector
from pipeline.server.config import ServerConfig
from pipeline.spec.model import DataCollector

ROUTES = ("/score", "/v2/models/iris/infer", "/invocations")
ROW = [0.5, -1.0, 2.0, 0.1]
DEEP = b"[" * 100_000 + b"]" * 100_000


class InProcess:
    """A loaded sklearn app with collection on, called through httpx's ASGI transport on one loop."""

    def __init__(self, model_dir, data_dir):
        config = ServerConfig(model_dir=model_dir, flavor="sklearn", model_name="iris", model_version=1, port=0,
                              data_dir=data_dir, data_collector=DataCollector(enabled=True))
        self.app = create_app(config)
        self.app.service.load()
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test")

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[httpx.Response, float]:
        began = time.perf_counter()
        response = self.loop.run_until_complete(self.client.post(path, content=body,
                                                                 headers={"Content-Type": content_type}))
        return response, time.perf_counter() - began

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()
        self.app.service.collector.close()


@pytest.fixture(scope="module")
def app(models, tmp_path_factory) -> Iterator[InProcess]:
    served = InProcess(models["sklearn"], tmp_path_factory.mktemp("hostile-data"))
    yield served
    served.close()


def assert_answered(response: httpx.Response, seconds: float) -> None:
    assert seconds < 1.0
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40)
numbers = st.none() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=3) | st.booleans()
rows = st.lists(st.lists(numbers, max_size=6), max_size=4)
requests = st.one_of(
    st.fixed_dictionaries({"data": rows}),
    st.fixed_dictionaries({"input_data": st.fixed_dictionaries(
        {"data": rows}, optional={"columns": st.lists(st.text(max_size=3), max_size=6) | json_values})}),
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries({"data": rows}, optional={
        "columns": st.lists(st.text(max_size=3), max_size=6) | json_values})}),
    st.dictionaries(st.sampled_from(["dataframe_records", "instances", "inputs", "params"]),
                    st.lists(st.dictionaries(st.sampled_from(["a", "sepal_length", "petal_width"]), numbers,
                                             max_size=4), max_size=3) | rows | json_values, max_size=2),
    st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries(
        {"name": st.text(max_size=8) | json_values, "datatype": st.sampled_from(["FP64", "INT8", "BYTES", "x"]),
         "shape": st.lists(st.integers(-1, 5), max_size=3) | json_values, "data": rows | json_values},
        optional={"parameters": json_values}), max_size=3)},
        optional={"outputs": json_values, "parameters": json_values, "id": json_values}),
)


def _encode(document) -> bytes:
    return json.dumps(document, allow_nan=True).encode()  # NaN and Infinity literals included


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=512))
def test_arbitrary_bytes_are_answered_with_a_4xx(app, route, body):
    assert_answered(*app.post(route, body))


@PROPERTY
@given(route=st.sampled_from(ROUTES), document=json_values)
def test_arbitrary_json_is_answered_with_a_4xx(app, route, document):
    assert_answered(*app.post(route, _encode(document)))


@PROPERTY
@given(route=st.sampled_from(ROUTES), document=requests)
def test_near_miss_requests_are_answered_with_a_4xx_or_scored(app, route, document):
    assert_answered(*app.post(route, _encode(document)))


@PROPERTY
@given(header=st.lists(st.text(max_size=12), max_size=6), cells=st.lists(st.lists(st.text(max_size=6), max_size=6),
                                                                          max_size=4))
def test_arbitrary_csv_is_answered_with_a_4xx_or_scored(app, header, cells):
    import csv
    import io

    text = io.StringIO()
    csv.writer(text).writerows([header, *cells])
    response, seconds = app.post("/invocations", text.getvalue().encode(), content_type="text/csv")
    assert_answered(response, seconds)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_nesting_is_a_400_naming_the_limit(app, route, depth):
    response, _ = app.post(route, b'{"data": ' + b"[" * depth + b"]" * depth + b"}")
    assert response.status_code == 400 and "nests deeper than 32" in response.json()["error"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "null"])
def test_missing_or_infinite_values_are_a_400_on_score(app, value):
    response, _ = app.post("/score", f'{{"data": [[{value}, 1, 2, 3]]}}'.encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_null_in_an_infer_tensor_is_a_400(app):
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [None, 1, 2, 3]}]}
    response, _ = app.post("/v2/models/iris/infer", json.dumps(body).encode())
    assert response.status_code == 400 and "null, NaN or infinite" in response.json()["error"]


def test_a_model_that_takes_missing_values_gets_them(tmp_path):
    """HistGradientBoosting handles NaN natively (scikit-learn's tags say so): null is not refused."""
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import HistGradientBoostingRegressor

    from pipeline.runtime import load_model

    x = np.random.default_rng(0).normal(size=(50, 2))
    sio.dump(HistGradientBoostingRegressor(max_iter=5).fit(x, x[:, 0]), tmp_path / "model.skops")
    (tmp_path / "model.json").write_text(json.dumps({"trusted_types": sio.get_untrusted_types(
        file=tmp_path / "model.skops")}))
    model = load_model(tmp_path, "sklearn")
    assert np.isfinite(model.predict_batch([[None, 1.0]])).all()


def test_one_unserializable_event_is_dropped_and_counted_not_the_others(tmp_path):
    collector = Collector(tmp_path, endpoint="e", deployment="d", model="m", model_version=1)
    nested: list = []
    for _ in range(1000):  # deeper than any JSON encoder goes
        nested = [nested]
    collector.record("/score", 200, 1.0, [[1.0]], [0], None)
    collector.record("/score", 200, 1.0, nested, [0], None)
    collector.record("/score", 200, 1.0, [[2.0]], [1], None)
    collector.close()
    assert [e.inputs for e in read_events(tmp_path)] == [[[1.0]], [[2.0]]]
    assert collector.unserializable == 1 and collector.depth == 0


@pytest.mark.slow
def test_after_a_hostile_body_the_next_request_is_scored_and_collected(serve, models):
    served = serve(models["sklearn"], "sklearn",
                   data_collector={"enabled": True, "sampling_rate": 1.0, "rolling_rate": "minute"})
    marker = [[7.0, 7.0, 7.0, 7.0]]
    with served.client() as client:
        hostile = client.post("/score", content=DEEP)
        assert hostile.status_code == 400 and "nests deeper" in hostile.json()["error"]
        nan = client.post("/score", content=b'{"data": [[NaN, 1, 2, 3]]}')
        assert nan.status_code == 400
        scored = client.post("/score", json={"data": marker})  # same keep-alive connection
        assert scored.status_code == 200 and scored.json()["predictions"]
        metrics = client.get("/metrics").text
    assert "mlops_collector_unserializable_events_total 0.0" in metrics
    served.stop()  # SIGTERM: the collector writes everything
    events = list(read_events(served.folder / "data", "ep", "blue"))
    assert [e.status for e in events] == [400, 400, 200]
    assert feature_rows(events[-1].inputs) == marker  # what `mlops monitor` reads back
    log = served.log.read_text()
    assert "Traceback" not in log and "POST /score" not in log  # no traceback, no access line per request
