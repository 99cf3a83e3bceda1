"""The ``rollout:`` block: read into seconds and fractions, its schedule, and its mistakes located."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import SpecError
from pipeline.spec.loader import load
from pipeline.spec.model import settings_digest

HEAD = """\
version: 1
models:
  iris: {path: m, flavor: sklearn, baseline: m/base.csv}
targets:
  local: {type: local}
endpoints:
  web:
    target: local
    deployments:
      blue:
        model: iris
        data_collector: {}
"""

FULL = HEAD + """\
        rollout:
          strategy: canary
          steps: [5, 25, 50, 100]
          interval: 5m
          mirror_first: 2m
          analysis:
            min_requests: 100
            failure_limit: 2
            metrics:
              - {name: error_rate, max: 1%}
              - {name: latency_p99, max: 300ms}
              - {name: latency_p99_ratio, max: 1.5}
              - {name: prediction_drift, max: 0.2}
              - {name: input_drift, max: 0.25}
          pause_before_promote: false
          progress_deadline: 30m
          on_failure: rollback
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "model.skops").write_text("x")
    (tmp_path / "m" / "base.csv").write_text("a\n1\n")
    path = tmp_path / "mlops.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as raised:
        load(write(tmp_path, text))
    return str(raised.value)


def test_a_full_rollout_block_is_read_in_seconds_and_fractions(tmp_path):
    rollout = load(write(tmp_path, FULL)).endpoints["web"].deployments["blue"].rollout
    assert rollout.progressive and rollout.weights() == (5, 25, 50, 100)
    assert (rollout.interval, rollout.mirror_first, rollout.progress_deadline) == (300, 120, 1800)
    limits = {g.name: g.max for g in rollout.analysis.metrics}
    assert limits == {"error_rate": 0.01, "latency_p99": 0.3, "latency_p99_ratio": 1.5,
                      "prediction_drift": 0.2, "input_drift": 0.25}
    assert rollout.schedule().startswith("mirror →(2m) 5% →(5m) 25% →(5m) 50% →(5m) 100% →(5m) promote; "
                                         "gates: error_rate ≤ 1%, latency_p99 ≤ 300ms")


def test_linear_weights_climb_by_step_weight_to_max_weight(tmp_path):
    text = HEAD + "        rollout: {strategy: linear, step_weight: 20, max_weight: 50, interval: 30s}\n"
    rollout = load(write(tmp_path, text)).endpoints["web"].deployments["blue"].rollout
    assert rollout.weights() == (20, 40, 50)


def test_pause_before_promote_shows_in_the_schedule(tmp_path):
    text = HEAD + "        rollout: {steps: [10, 100], interval: 2s, pause_before_promote: true}\n"
    rollout = load(write(tmp_path, text)).endpoints["web"].deployments["blue"].rollout
    assert rollout.schedule().startswith("10% →(2s) pause until mlops rollout promote → 100% →(2s) promote")


def test_changing_the_rollout_does_not_restart_the_deployment(tmp_path):
    plain = load(write(tmp_path, HEAD))
    rolled = load(write(tmp_path, FULL))
    endpoint, other = plain.endpoints["web"], rolled.endpoints["web"]
    assert settings_digest(endpoint, endpoint.deployments["blue"]) == \
        settings_digest(other, other.deployments["blue"])


@pytest.mark.parametrize(("block", "expected"), [
    ("{steps: [5, 25], interval: 5 minutes}", "is not a duration like 30s"),
    ("{steps: [25, 5]}", "must rise from step to step"),
    ("{strategy: linear}", "needs 'step_weight'"),
    ("{strategy: canary, steps: [5], step_weight: 5}", "applies only with 'strategy: linear'"),
    ("{steps: [5], interval: 5m, progress_deadline: 1m}", "shorter than the interval"),
    ("{steps: [5], analysis: {metrics: [{name: error_rate, max: 0.5s}]}}", "not a percentage like 1%"),
    ("{steps: [5], analysis: {metrics: [{name: latency_p99, max: 3}]}}", "has no unit"),
    ("{steps: [5], analysis: {metrics: [{name: error_rate, max: 1%}, {name: error_rate, max: 2%}]}}",
     "already gated"),
])
def test_mistakes_in_a_rollout_are_located(tmp_path, block, expected):
    message = problems(tmp_path, HEAD + f"        rollout: {block}\n")
    assert expected in message and "mlops.yaml:13:" in message


def test_drift_gates_need_collected_data(tmp_path):
    text = HEAD.replace("        data_collector: {}\n", "") + \
        "        rollout: {steps: [50], analysis: {metrics: [{name: prediction_drift, max: 0.2}]}}\n"
    assert "give the deployment a data_collector" in problems(tmp_path, text)


def test_a_deployment_named_like_a_canary_is_refused(tmp_path):
    text = HEAD.replace("endpoints:\n  web:\n    target: local\n",
                        "endpoints:\n  web:\n    target: local\n    traffic: {blue: 100, blue-canary: 0}\n") + \
        "        rollout: {steps: [50]}\n      blue-canary:\n        model: iris\n"
    assert "runs as 'blue-canary'" in problems(tmp_path, text)


def test_drift_gates_are_refused_where_data_is_collected_in_the_cluster(tmp_path):
    text = HEAD.replace("  local: {type: local}", "  local: {type: kubernetes, namespace: ml}").replace(
        "        model: iris\n", "        model: iris\n        environment: py\n").replace(
        "targets:", "environments:\n  py: {python: \"3.11\"}\ntargets:") + \
        "        rollout: {steps: [50], analysis: {metrics: [{name: input_drift, max: 0.2}]}}\n"
    assert "collects into its own sink" in problems(tmp_path, text)
