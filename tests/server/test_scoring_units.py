"""In-process checks of the pieces: config contract, admission limiter, tensor codec, collector
(sampling, rotation, drops), key checker, and routing before/after the model loads."""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipeline.errors import InvalidInput, ServeError
from pipeline.monitor import read_events
from pipeline.server import collector as collector_module
from pipeline.server.app import create_app, route_of
from pipeline.server.auth import KeyChecker, generate_keys, read_keys, regenerate
from pipeline.server.codecs import InferRequest, decode_request, decode_score, encode_response
from pipeline.server.collector import Collector
from pipeline.server.config import ServerConfig
from pipeline.server.limits import Busy, Limiter
from pipeline.spec.model import DataCollector, Deployment, Endpoint, ModelRef, RequestSettings


# -- config ----------------------------------------------------------------------------------------
def test_config_round_trips_through_json(tmp_path):
    config = ServerConfig(model_dir=tmp_path, flavor="onnx", model_name="m", model_version=2, port=8001,
                          keys_file=tmp_path / "keys.json", data_dir=tmp_path / "data",
                          request_settings=RequestSettings(request_timeout_ms=100),
                          data_collector=DataCollector(enabled=True, sampling_rate=0.5, rolling_rate="minute"))
    assert ServerConfig.from_json(config.to_json()) == config


def test_config_accepts_what_targets_write(tmp_path):
    from pipeline.targets.base import DeployRequest, ResolvedModel, server_config

    deployment = Deployment(name="blue", endpoint="iris", model=ModelRef("iris", 3),
                            data_collector=DataCollector(enabled=True))
    request = DeployRequest(endpoint=Endpoint(name="iris", target="local"), deployment=deployment,
                            model=ResolvedModel("iris", 3, "sha256:x", "sklearn", tmp_path))
    written = server_config(request, port=9000, model_dir=tmp_path, keys_file=tmp_path / "k.json",
                            data_dir=tmp_path / "d")
    config = ServerConfig.from_json(json.dumps(written))
    assert config.model_version == 3 and config.keys_file == tmp_path / "k.json"
    assert config.data_collector == deployment.data_collector


@pytest.mark.parametrize(("change", "message"), [
    ({"flavor": "keras"}, "flavor must be one of"),
    ({"execution": "fast"}, "execution must be one of"),
    ({"data_collector": {"enabled": True}, "data_dir": None}, "no data_dir"),
    ({"data_collector": {"sampling_rate": 2}}, "sampling_rate"),
    ({"colour": "blue"}, "unknown server config field"),
])
def test_config_rejects_nonsense(tmp_path, change, message):
    data = {"model_dir": str(tmp_path), "flavor": "sklearn", "model_name": "m", "model_version": 1, "port": 1,
            **change}
    with pytest.raises(ValueError, match=message):
        ServerConfig.from_dict(data)


# -- limiter ---------------------------------------------------------------------------------------
def test_limiter_hands_slots_over_and_sheds_load():
    async def scenario() -> None:
        limiter = Limiter(slots=1, queue=1)
        await limiter.acquire(0.1)
        waiter = asyncio.create_task(limiter.acquire(1.0))
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="queue of 1 is full"):
            await limiter.acquire(1.0)
        limiter.release()  # passes straight to the waiter
        await waiter
        assert limiter.busy == 1 and limiter.waiting == 0
        with pytest.raises(Busy, match="within 20 ms"):
            await limiter.acquire(0.02)
        assert limiter.waiting == 0
        limiter.release()
        assert limiter.free == 1 and limiter.try_acquire()

    asyncio.run(scenario())


# -- tensors ---------------------------------------------------------------------------------------
def test_binary_tensor_extension_both_ways():
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = [b"ab", b"cde"]
    header = json.dumps({"inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 13}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}]}).encode()
    blob = floats.tobytes() + b"".join(struct.pack("<I", len(w)) + w for w in words)
    request = decode_request(header + blob, str(len(header)).encode())
    assert request.inputs["x"].tolist() == floats.tolist()
    assert request.inputs["s"].tolist() == words
    body, split = encode_response("m", "1", request, {"y": np.array([1.5, 2.5]), "z": np.array(["a"])})
    document = json.loads(body[:int(split)])
    assert document["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert document["outputs"][1]["data"] == ["a"] and document["outputs"][1]["datatype"] == "BYTES"
    assert np.frombuffer(body[int(split):], dtype=np.float64).tolist() == [1.5, 2.5]


def test_json_tensors_and_errors():
    request = decode_request(b'{"id": "7", "inputs": [{"name": "b", "shape": [2], "datatype": "BOOL",'
                             b' "data": [true, false]}]}', None)
    assert request.inputs["b"].dtype == np.bool_ and request.id == "7"
    body, split = encode_response("m", "1", InferRequest(inputs={}, id="7"), {"o": np.array([[1, 2]])})
    assert split is None
    assert json.loads(body)["outputs"][0] == {"name": "o", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}
    header = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 99}}]}'
    with pytest.raises(InvalidInput, match="binary_data_size 99"):
        decode_request(header + b"\0" * 4, str(len(header)).encode())


# -- collector -------------------------------------------------------------------------------------
def _collector(folder: Path, **options) -> Collector:
    return Collector(folder, endpoint="e", deployment="d", model="m", model_version=1, **options)


def test_sampling_keeps_about_the_rate(tmp_path):
    collector = _collector(tmp_path, sampling_rate=0.1, max_queue=20_000)
    total = 10_000
    for _ in range(total):
        if collector.sampled():
            collector.record("/score", 200, 1.0, [[1.0]], [0], None)
    collector.close()
    kept = sum(1 for _ in read_events(tmp_path))
    sigma = math.sqrt(total * 0.1 * 0.9)
    assert abs(kept - 1000) <= 3 * sigma, kept


def test_full_queue_drops_and_counts(tmp_path):
    collector = _collector(tmp_path, max_queue=5)
    for _ in range(8):
        collector.record("/score", 200, 1.0, None, None, None)
    assert collector.dropped == 3 and collector.depth == 5
    collector.close()  # never started: close still writes the queue
    assert collector.written == 5


def test_files_roll_by_minute_and_events_come_back_in_time_order(tmp_path, monkeypatch):
    clock = iter([1_700_000_000.0 + offset for offset in (0, 30, 61, 125)])
    monkeypatch.setattr(collector_module.time, "time", lambda: next(clock))
    first, second = _collector(tmp_path, rolling_rate="minute"), _collector(tmp_path, rolling_rate="minute")
    first.record("/score", 200, 1.0, [[1]], [1], None)
    second.record("/score", 200, 1.0, [[2]], [1], None)  # same minute, another process
    first.record("/score", 500, 1.0, [[3]], None, "boom")
    second.record("/score", 200, 1.0, [[4]], [1], None)
    first.close()
    second.close()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert len(files) == 4
    assert files[0].startswith("e/d/2023/11/14/22/13-") and files[-1].startswith("e/d/2023/11/14/22/15-")
    events = list(read_events(tmp_path))
    assert [e.inputs for e in events] == [[[1]], [[2]], [[3]], [[4]]]
    assert events[2].error == "boom" and events[2].status == 500
    assert events[0].time == "2023-11-14T22:13:20.000000+00:00"


def test_unserializable_outputs_are_kept_as_text(tmp_path):
    collector = _collector(tmp_path)
    collector.record("/score", 200, 1.0, b'{"data": 1}', {1, 2}, None)
    collector.close()
    (event,) = read_events(tmp_path)
    assert event.inputs == {"data": 1} and event.outputs == "{1, 2}"
    assert "not serializable" in event.error


# -- auth ------------------------------------------------------------------------------------------
def test_keys_file_helpers_and_checker(tmp_path):
    path = tmp_path / "keys.json"
    keys = generate_keys(path)
    assert os.stat(path).st_mode & 0o777 == 0o600 and read_keys(path) == keys
    checker = KeyChecker(path)
    assert checker.allows(f"Bearer {keys['primary']}".encode(), now=0)
    assert checker.allows(f"bearer {keys['secondary']}".encode(), now=0)
    assert not checker.allows(b"Bearer wrong", now=0)
    assert not checker.allows(keys["primary"].encode(), now=0)
    assert not checker.allows(None, now=0)
    new = regenerate(path, "primary")
    assert new["secondary"] == keys["secondary"]
    assert checker.allows(f"Bearer {keys['primary']}".encode(), now=0.5)  # not re-read within a second
    assert not checker.allows(f"Bearer {keys['primary']}".encode(), now=10)
    assert checker.allows(f"Bearer {new['primary']}".encode(), now=10)
    path.write_text("{broken")
    assert checker.allows(f"Bearer {new['primary']}".encode(), now=20)  # last good keys kept


def test_missing_keys_file_refuses_to_start(tmp_path):
    with pytest.raises(ServeError, match="keys file"):
        KeyChecker(tmp_path / "absent.json")


# -- routing in-process ----------------------------------------------------------------------------
def test_route_labels_are_a_closed_set():
    assert route_of("/score") == "/score"
    assert route_of("/v2/models/x/versions/2/infer") == "/v2/models/{name}/infer"
    assert route_of("/v2/models/x/ready") == "/v2/models/{name}/ready"
    assert route_of("/anything/else") == "other"


def test_not_ready_until_the_model_is_loaded(models, tmp_path):
    config = ServerConfig(model_dir=models["sklearn"], flavor="sklearn", model_name="iris", model_version=1,
                          port=0)
    app = create_app(config)

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=app)  # no lifespan: nothing loads by itself
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = [(await client.get("/v2/health/ready")).status_code,
                        (await client.post("/score", json={"data": [[1, 2, 3, 4]]})).status_code,
                        (await client.get("/v2/health/live")).status_code]
            app.service.load()
            statuses += [(await client.get("/v2/health/ready")).status_code,
                         (await client.post("/score", json={"data": [[1, 2, 3, 4]]})).status_code]
            return statuses

    assert asyncio.run(calls()) == [503, 503, 200, 200, 200]
    assert app.service.inline  # a 0.1 ms model runs on the event loop in "auto"


def test_a_model_without_feature_names_takes_them_from_its_baseline(models, tmp_path):
    """An ONNX model carries no column names; the baseline CSV's header lets callers name columns."""
    from pipeline.runtime import load_model

    baseline = tmp_path / "baseline.csv"
    baseline.write_text("a,b,c,d\n1,2,3,4\n")
    model = load_model(models["onnx"], "onnx", baseline)
    straight, _, _ = decode_score(model, b'{"input_data": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]]}}')
    shuffled, _, _ = decode_score(model, b'{"input_data": {"columns": ["d", "c", "b", "a"], "data": [[4, 3, 2, 1]]}}')
    assert np.array_equal(straight["X"], shuffled["X"])
    with pytest.raises(InvalidInput, match=r"unknown \['e'\]"):
        decode_score(model, b'{"input_data": {"columns": ["a", "b", "c", "e"], "data": [[1, 2, 3, 4]]}}')
