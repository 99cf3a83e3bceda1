"""Adaptive batching in real service processes over loopback HTTP: a burst of simultaneous requests
(every connection open, every request written before any answer is read) is scored in batches, and
each caller gets what an unbatched service answers it — its own rows, its own 400, one collected event."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from conftest import FEATURE_NAMES, Served, training_data

from pipeline.monitor import read_events

pytestmark = pytest.mark.slow

# Room for a whole burst: the admission limit (16 in flight, 500 ms queue wait) would turn a slow
# moment on a busy machine into 429s that have nothing to do with batching.
ROOM = {"max_concurrent_requests_per_instance": 64, "max_queue_wait_ms": 10_000}
UNBATCHED = {"request_settings": {"max_batch_size": 1, **ROOM}}


def burst(served: Served, requests: list[tuple[str, dict]]) -> list[tuple[int, object]]:
    """Send every request at once on its own keep-alive connection; (status, JSON answer) in order."""
    address = urlparse(served.url)
    connections = [http.client.HTTPConnection(address.hostname, address.port, timeout=30) for _ in requests]
    for connection in connections:
        connection.connect()
    headers = {"Content-Type": "application/json", **served.headers()}
    for connection, (path, body) in zip(connections, requests, strict=True):
        connection.request("POST", path, body=json.dumps(body), headers=headers)
    answers = []
    for connection in connections:
        response = connection.getresponse()
        answers.append((response.status, json.loads(response.read())))
        connection.close()
    return answers


def batches(served: Served) -> tuple[float, float]:
    """(batched predict calls, requests they scored), from the service's own metrics."""
    text = served.client().get("/metrics").text
    count = float(re.search(r"^mlops_batch_requests_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^mlops_batch_requests_sum (\S+)$", text, re.M).group(1))
    return count, total


def distinct_rows(count: int, seed: int) -> list[list[list[float]]]:
    """``count`` requests of 1 to 3 rows each, every value different."""
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1 + i % 3, 4)).round(6).tolist() for i in range(count)]


def flavor_requests(flavor: str) -> list[tuple[str, dict]]:
    requests: list[tuple[str, dict]] = []
    for i, rows in enumerate(distinct_rows(24, seed=len(flavor))):
        shape = [len(rows), 4]
        if i % 3 == 0:
            requests.append(("/score", {"data": rows}))
        elif i % 3 == 1:
            datatype = "FP32" if flavor == "onnx" else "FP64"
            requests.append(("/v2/models/iris/infer", {"inputs": [
                {"name": "x", "shape": shape, "datatype": datatype, "data": rows}]}))
        elif flavor == "python":
            requests.append(("/score", {"data": rows}))
        else:
            requests.append(("/invocations", {"dataframe_split": {"columns": FEATURE_NAMES, "data": rows}}))
    return requests


@pytest.fixture(scope="module")
def mlflow_columns_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pyfunc with DataFrame input (MLflow's signature names the columns): the batched kind."""
    mlflow = pytest.importorskip("mlflow.sklearn")
    pd = pytest.importorskip("pandas")
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    frame = pd.DataFrame(x, columns=FEATURE_NAMES)
    folder = tmp_path_factory.mktemp("mlflow-batching") / "model"
    mlflow.save_model(LogisticRegression().fit(frame, y), str(folder), input_example=frame[:2])
    return folder


@pytest.mark.parametrize("flavor", ["sklearn", "onnx", "mlflow", "python"])
def test_batched_answers_are_the_unbatched_answers(flavor, serve, models, request):
    model_dir = request.getfixturevalue("mlflow_columns_model") if flavor == "mlflow" else models[flavor]
    batched, unbatched = serve(model_dir, flavor, request_settings=ROOM), serve(model_dir, flavor, **UNBATCHED)
    requests = flavor_requests(flavor)
    expected = burst(unbatched, requests)
    assert all(status == 200 for status, _ in expected), expected
    answers = burst(batched, requests)
    for _ in range(3):  # another burst until one was batched: timing on a busy machine varies
        if flavor == "python" or batches(batched)[1] > batches(batched)[0]:
            break
        answers = burst(batched, requests)
    assert answers == expected
    calls, scored = batches(batched)
    if flavor == "python":  # score.py gets each caller's own body, so it is never batched
        assert calls == 0
    else:
        assert scored > calls  # some call scored several requests
    assert batches(unbatched) == (0.0, 0.0)


def test_each_caller_gets_its_own_rows_and_a_malformed_request_fails_alone(serve, models, estimator_predictions):
    served = serve(models["sklearn"], "sklearn", request_settings=ROOM)
    good = distinct_rows(40, seed=7)
    bad = {5: ("/score", {"data": [[1.0, 2.0]]}),  # too few columns
           17: ("/score", {"data": [[1.0, None, 2.0, 3.0]]}),  # a missing value
           29: ("/v2/models/iris/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64",
                                                       "data": [1, 2, 3]}]})}
    for _ in range(3):
        before = batches(served)
        requests = [bad.get(i, ("/score", {"data": rows})) for i, rows in enumerate(good)]
        answers = burst(served, requests)
        after = batches(served)
        if after[1] - before[1] > after[0] - before[0]:
            break
    else:
        pytest.fail("no burst was batched")
    for i, ((status, answer), rows) in enumerate(zip(answers, good, strict=True)):
        if i in bad:
            assert status == 400, answer
        else:
            assert (status, answer) == (200, {"predictions": estimator_predictions(np.array(rows)).tolist()})
    assert "4 numbers" in answers[5][1]["error"] and "missing" in answers[17][1]["error"].lower()


def test_a_lone_request_is_not_held_for_the_batch_wait(serve, models):
    served = serve(models["sklearn"], "sklearn", request_settings={"max_batch_wait_ms": 1000})
    unbatched = serve(models["sklearn"], "sklearn", **UNBATCHED)
    requests = [("/score", {"data": rows}) for rows in distinct_rows(16, seed=3)]

    def lone_latencies(target: Served) -> list[float]:
        burst(target, requests)  # batches of many just ran: then requests come one at a time
        seconds = []
        with target.client() as client:
            for rows in distinct_rows(30, seed=4):
                began = time.perf_counter()
                assert client.post("/score", json={"data": rows}).status_code == 200
                seconds.append(time.perf_counter() - began)
        return seconds

    batched, plain = lone_latencies(served), lone_latencies(unbatched)
    assert max(batched) < 0.5  # never the 1 s wait
    assert statistics.median(batched) < statistics.median(plain) + 0.01


def test_collection_writes_one_event_per_request(serve, models):
    served = serve(models["sklearn"], "sklearn",
                   data_collector={"enabled": True, "sampling_rate": 1.0, "rolling_rate": "minute"})
    rows = distinct_rows(32, seed=11)
    answers = burst(served, [("/score", {"data": r}) for r in rows])
    assert batches(served)[0] > 0
    served.stop()  # flushes every event
    events = list(read_events(served.folder / "data", "ep", "blue"))
    scored = [e for e in events if e.route == "/score"]
    assert len(scored) == len(rows)
    by_inputs = {json.dumps(e.inputs["data"]): e for e in scored}
    for r, (status, answer) in zip(rows, answers, strict=True):
        event = by_inputs[json.dumps(r)]
        assert event.status == status == 200 and event.outputs == answer["predictions"]


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forest whose every ``predict`` takes tens of milliseconds: a burst is bound to overlap in it."""
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    x, y = training_data()
    folder = tmp_path_factory.mktemp("slow-model")
    sio.dump(RandomForestClassifier(n_estimators=300, random_state=0).fit(x, y), folder / "model.skops")
    (folder / "model.json").write_text(json.dumps({"trusted_types": ["sklearn.tree._tree.Tree"]}))
    return folder


def test_limits_hold_per_request_under_batching(serve, slow_model):
    # predict in threads: a slot stays taken while its predict runs, so the burst meets full slots
    served = serve(slow_model, "sklearn", execution="thread", request_settings={
        "max_concurrent_requests_per_instance": 2, "max_queue_wait_ms": 0, "max_body_bytes": 400})
    rows = distinct_rows(12, seed=5)
    answers = burst(served, [("/score", {"data": r}) for r in rows] + [("/score", {"data": [[0.5] * 4] * 40})])
    statuses = [status for status, _ in answers]
    assert statuses[-1] == 413  # its own body limit, before it could join anything
    assert 429 in statuses[:-1]  # two slots, no queue: the rest of the burst is refused fast
    assert all(status in (200, 429) for status in statuses[:-1])
    with served.client() as client:  # and the slots came back
        assert client.post("/score", json={"data": rows[0]}).status_code == 200
