"""Fingerprints made from ``as_plain`` must equal those ``dataclasses.asdict`` made: targets have recorded
them (a changed settings digest would restart every deployment after an upgrade)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from pipeline.plain import as_plain
from pipeline.spec.loader import load
from pipeline.state import Actual, ObservedDeployment, ObservedEndpoint, RegisteredModel

SPEC = """\
version: 1
models:
  fraud: {path: model, flavor: sklearn, tags: {owner: risk}}
targets:
  local: {type: local}
endpoints:
  scoring:
    target: local
    traffic: {blue: 100}
    mirror_traffic: {green: 5}
    deployments:
      blue:
        model: fraud
        instance_count: 2
        environment_variables: {LEVEL: debug, TOKEN: "${TOKEN}", RETRIES: 3, STRICT: true}
        request_settings: {request_timeout_ms: 2500, max_concurrent_requests_per_instance: 4}
        data_collector: {sampling_rate: 0.5}
        liveness_probe: {period: 5}
        resources: {requests: {cpu: "500m", memory: 512Mi}, limits: {memory: 1Gi}}
      green: {model: "fraud:1"}
"""


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def test_deployments_give_the_json_asdict_gives(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.bin").write_bytes(b"weights")
    (tmp_path / "mlops.yaml").write_text(SPEC)
    deployments = load(tmp_path / "mlops.yaml").deployments()
    assert len(deployments) == 2
    for deployment in deployments:
        assert canonical(as_plain(deployment)) == canonical(asdict(deployment))


def test_the_actual_state_gives_the_json_asdict_gives():
    actual = Actual(
        models={"fraud": RegisteredModel("fraud", {1: "sha256:a", 2: "sha256:b"}, "sklearn")},
        model_contents={"fraud": "sha256:b"},
        environment_digests={"docker": {"sklearn": "sha256:e"}},
        images=frozenset({"img:1", "img:2"}),
        aliases={"fraud": {"champion": 2}},
        endpoints={"scoring": ObservedEndpoint("scoring", "local", traffic={"blue": 100}, drift=("stale route",))},
        deployments={"scoring/blue": ObservedDeployment("scoring", "blue", "local", "fraud:2",
                                                        detail={"pids": [1, 2], "url": "http://127.0.0.1:1"})})
    assert canonical(as_plain(actual)) == canonical(asdict(actual))
