"""Every route of a real sklearn service over loopback HTTP, with key auth and collection on."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from conftest import FEATURE_NAMES  # tests/server is on sys.path (pytest prepend import mode)

from pipeline.monitor import read_events
from pipeline.server.auth import regenerate

pytestmark = pytest.mark.slow

ROWS = [[0.5, -1.0, 2.0, 0.1], [-2.0, -1.0, 0.0, 3.0]]


def test_score_azure_formats(sklearn_server, estimator_predictions):
    expected = estimator_predictions(np.array(ROWS)).tolist()
    with sklearn_server.client() as client:
        assert client.post("/score", json={"data": ROWS}).json() == {"predictions": expected}
        split = {"input_data": {"columns": FEATURE_NAMES, "data": ROWS}}
        assert client.post("/score", json=split).json() == {"predictions": expected}
        assert client.post("/score", json={"input_data": {"data": ROWS}}).json() == {"predictions": expected}


def test_named_columns_are_matched_to_the_model_in_any_order(sklearn_server, estimator_predictions):
    expected = estimator_predictions(np.array(ROWS)).tolist()
    reversed_split = {"input_data": {"columns": FEATURE_NAMES[::-1], "data": [row[::-1] for row in ROWS]}}
    with sklearn_server.client() as client:
        assert client.post("/score", json=reversed_split).json() == {"predictions": expected}


@pytest.mark.parametrize(("columns", "expected"), [
    (["a", "b", "c", "d"], "unknown ['a', 'b', 'c', 'd']; missing ['sepal_length'"),
    (FEATURE_NAMES[:3] + ["colour"], "unknown ['colour']; missing ['petal_width']"),
    (FEATURE_NAMES[:3] + ["sepal_length"], "missing ['petal_width']; repeated ['sepal_length']"),
])
def test_unknown_or_missing_columns_are_a_400_naming_them(sklearn_server, columns, expected):
    with sklearn_server.client() as client:
        response = client.post("/score", json={"input_data": {"columns": columns, "data": ROWS}})
    assert response.status_code == 400 and expected in response.json()["error"]


@pytest.mark.parametrize(("body", "expected"), [
    (b"{not json", "not valid JSON"),
    (b'{"rows": [[1, 2, 3, 4]]}', 'expected {"data"'),
    (b'{"data": [[1, 2, 3]]}', "rows of 4 numbers"),
    (b'{"data": [[1, 2, 3, 4], [1, 2]]}', "rows of 4 numbers"),
    (b'{"data": [["a", "b", "c", "d"]]}', "rows of 4 numbers"),
])
def test_bad_requests_are_400_saying_what_was_expected(sklearn_server, body, expected):
    with sklearn_server.client() as client:
        response = client.post("/score", content=body)
    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_auth(sklearn_server):
    with httpx.Client(base_url=sklearn_server.url) as client:
        missing = client.post("/score", json={"data": ROWS})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "error" in missing.json()
        wrong = client.post("/score", json={"data": ROWS}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.get("/v2/models/iris").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        for open_route in ("/v2/health/live", "/v2/health/ready", "/metrics"):
            assert client.get(open_route).status_code == 200, open_route
    for which in ("primary", "secondary"):
        with sklearn_server.client(which) as client:
            assert client.post("/score", json={"data": ROWS}).status_code == 200


def test_key_rotation_without_restart_or_failures(sklearn_server):
    """Callers on the secondary key never fail while the primary is regenerated."""
    failures, stop = [], threading.Event()

    def caller() -> None:
        with sklearn_server.client("secondary") as client:
            while not stop.is_set():
                status = client.post("/score", json={"data": ROWS}).status_code
                if status != 200:
                    failures.append(status)

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        old = sklearn_server.keys["primary"]
        new_keys = regenerate(sklearn_server.keys_file, "primary")
        deadline = time.monotonic() + 5
        with httpx.Client(base_url=sklearn_server.url) as client:
            while time.monotonic() < deadline:
                new_ok = client.post("/score", json={"data": ROWS},
                                     headers={"Authorization": f"Bearer {new_keys['primary']}"}).status_code == 200
                old_refused = client.post("/score", json={"data": ROWS},
                                          headers={"Authorization": f"Bearer {old}"}).status_code == 401
                if new_ok and old_refused:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the new key was not picked up within 5 s")
        sklearn_server.keys = new_keys
    finally:
        stop.set()
        thread.join()
    assert failures == []


def test_health_and_server_metadata(sklearn_server):
    with sklearn_server.client() as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        metadata = client.get("/v2").json()
        assert metadata["name"] == "mlops" and "binary_tensor_data" in metadata["extensions"]
        assert "version" in metadata


def test_model_metadata_and_ready(sklearn_server):
    with sklearn_server.client() as client:
        for path in ("/v2/models/iris", "/v2/models/iris/versions/3"):
            metadata = client.get(path).json()
            assert metadata["name"] == "iris" and metadata["versions"] == ["3"]
            assert metadata["platform"] == "sklearn_sklearn"
            assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
            assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]
        assert client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
        assert client.get("/v2/models/iris/versions/3/ready").status_code == 200
        for unknown in ("/v2/models/other", "/v2/models/iris/versions/4", "/v2/models/iris/versions/4/ready"):
            response = client.get(unknown)
            assert response.status_code == 404 and "error" in response.json(), unknown
        assert client.get("/nowhere").json() == {"error": "Not Found"}


def test_infer_json(sklearn_server, estimator_predictions):
    x = np.array(ROWS)
    request = {"id": "r-1", "inputs": [{"name": "anything", "shape": [2, 4], "datatype": "FP32",
                                        "data": x.reshape(-1).tolist()}]}
    with sklearn_server.client() as client:
        for path in ("/v2/models/iris/infer", "/v2/models/iris/versions/3/infer"):
            body = client.post(path, json=request).json()
            assert body["model_name"] == "iris" and body["model_version"] == "3" and body["id"] == "r-1"
            (output,) = body["outputs"]
            assert output["name"] == "predict" and output["datatype"] == "INT64" and output["shape"] == [2]
            assert output["data"] == estimator_predictions(x.astype(np.float32)).tolist()
        both = client.post("/v2/models/iris/infer", json={**request, "outputs": [
            {"name": "predict"}, {"name": "predict_proba"}]}).json()
        assert [o["shape"] for o in both["outputs"]] == [[2], [2, 2]]
        nested = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": ROWS}]}
        assert client.post("/v2/models/iris/infer", json=nested).status_code == 200


@pytest.mark.parametrize(("inputs", "expected"), [
    ([{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}], "needs 4 values"),
    ([{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "expected shape [-1, 4]"),
    ([{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}], "datatype must be one of"),
    ([{"name": "x", "shape": [1, 4], "datatype": "FP32"}], "has no 'data'"),
    ([], "non-empty 'inputs'"),
])
def test_infer_bad_tensors_are_400(sklearn_server, inputs, expected):
    with sklearn_server.client() as client:
        response = client.post("/v2/models/iris/infer", json={"inputs": inputs})
    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_infer_unknown_model_or_version_is_404(sklearn_server):
    request = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    with sklearn_server.client() as client:
        assert client.post("/v2/models/other/infer", json=request).status_code == 404
        assert client.post("/v2/models/iris/versions/9/infer", json=request).status_code == 404


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_works_unchanged(sklearn_server, estimator_predictions, binary):
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(url=sklearn_server.url.removeprefix("http://"))
    headers = sklearn_server.headers()
    try:
        assert client.is_server_live(headers=headers)
        assert client.is_server_ready(headers=headers)
        assert client.is_model_ready("iris", headers=headers)
        assert client.get_model_metadata("iris", headers=headers)["inputs"][0]["shape"] == [-1, 4]
        for dtype, datatype in ((np.float32, "FP32"), (np.float64, "FP64")):
            x = np.array(ROWS, dtype=dtype)
            tensor = tritonclient.InferInput("input-0", list(x.shape), datatype)
            tensor.set_data_from_numpy(x, binary_data=binary)
            outputs = [tritonclient.InferRequestedOutput("predict_proba", binary_data=binary),
                       tritonclient.InferRequestedOutput("predict", binary_data=binary)]
            result = client.infer("iris", [tensor], outputs=outputs, headers=headers)
            assert result.as_numpy("predict").tolist() == estimator_predictions(x).tolist()
            assert result.as_numpy("predict_proba").shape == (2, 2)
            default = client.infer("iris", [tensor], headers=headers)  # no outputs named: binary answer
            assert default.as_numpy("predict").tolist() == estimator_predictions(x).tolist()
    finally:
        client.close()


def test_metrics(sklearn_server):
    with sklearn_server.client() as client:
        client.post("/score", json={"data": ROWS})
        client.post("/score", content=b"nope")
        text = client.get("/metrics").text
    assert 'mlops_requests_total{route="/score",status="200"}' in text
    assert 'mlops_requests_total{route="/score",status="400"}' in text
    assert 'mlops_request_duration_seconds_bucket{le="0.005",route="/score"}' in text
    for name in ("mlops_requests_in_flight", "mlops_model_load_seconds", "mlops_collector_queue_depth",
                 "mlops_collector_dropped_events_total"):
        assert name in text, name


def test_openapi_describes_routes_and_input_schema(sklearn_server):
    with sklearn_server.client() as client:
        document = client.get("/openapi.json").json()
    assert {"/score", "/invocations", "/v2/models/iris/infer", "/v2/health/ready", "/metrics"} <= set(document["paths"])
    schema = document["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    row = schema["oneOf"][0]["properties"]["data"]["items"]
    assert row["minItems"] == row["maxItems"] == 4
    assert document["components"]["securitySchemes"]["key"]["scheme"] == "bearer"


def test_collected_events(sklearn_server):
    marker = [[11.0, 22.0, 33.0, 44.0]]
    with sklearn_server.client() as client:
        assert client.post("/score", json={"data": marker}).status_code == 200
        assert client.post("/score", json={"data": [[1, 2]]}).status_code == 400
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = list(read_events(sklearn_server.folder / "data", "ep", "blue"))
        # a request that failed to parse is recorded as the document it sent
        mine = [e for e in events if e.inputs in ({"columns": FEATURE_NAMES, "data": marker}, {"data": [[1, 2]]})]
        if len(mine) == 2:
            break
        time.sleep(0.1)
    ok, failed = mine
    assert ok.status == 200 and ok.outputs == [1] and ok.error is None
    assert ok.model == "iris" and ok.model_version == 3 and ok.route == "/score"
    assert ok.endpoint == "ep" and ok.deployment == "blue" and ok.latency_ms > 0
    assert len(ok.id) == 32 and ok.id[12] == "4"
    assert failed.status == 400 and "rows of 4 numbers" in failed.error
    assert len({e.id for e in events}) == len(events)


def test_requests_refused_before_scoring_are_collected_without_payload(sklearn_server):
    """401s and unknown routes never reach the model, but the monitor must count them."""
    with httpx.Client(base_url=sklearn_server.url) as anonymous:
        assert anonymous.post("/score", json={"data": ROWS}).status_code == 401
    with sklearn_server.client() as client:
        assert client.post("/no/such/route", json={"data": ROWS}).status_code == 404
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = list(read_events(sklearn_server.folder / "data", "ep", "blue"))
        refused = [e for e in events if e.status in (401, 404) and e.route in ("/score", "other")]
        if len(refused) >= 2:
            break
        time.sleep(0.1)
    unauthorized = next(e for e in refused if e.status == 401)
    unknown = next(e for e in refused if e.status == 404)
    assert (unauthorized.route, unauthorized.inputs, unauthorized.outputs) == ("/score", None, None)
    assert unauthorized.error == "missing or invalid key" and unauthorized.model == "iris"
    assert (unknown.route, unknown.inputs, unknown.error) == ("other", None, "unknown route")
