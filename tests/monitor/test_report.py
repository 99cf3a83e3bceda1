"""Monitoring numbers from collected events: traffic, errors, latency and drift."""

from __future__ import annotations

import numpy as np

from pipeline.monitor.report import feature_rows, psi, summarize
from pipeline.server.events import Event


def events(rows, deployment="blue", status=200, latency=2.0):
    return [Event.from_json({"deployment": deployment, "status": status, "latency_ms": latency, "model": "iris",
                             "model_version": 1, "time": f"2026-01-01T00:00:{i:02d}Z", "inputs": {"data": [row]}})
            for i, row in enumerate(rows)]


def test_counts_errors_and_latency_per_deployment():
    rows = [[1.0, 2.0]] * 8
    report = summarize(events(rows) + events(rows[:2], status=500) + events(rows[:3], deployment="green"))
    blue, green = report
    assert (blue.deployment, blue.requests, blue.errors, blue.rows) == ("blue", 10, 2, 8)
    assert blue.error_rate == 0.2 and blue.latency_ms["p50"] == 2.0
    assert (green.deployment, green.requests) == ("green", 3)


def test_same_distribution_is_stable_and_shifted_one_drifts():
    generator = np.random.default_rng(0)
    baseline = generator.normal(0, 1, (2000, 2))
    same = generator.normal(0, 1, (500, 2)).tolist()
    shifted = (generator.normal(0, 1, (500, 2)) + [0, 1.5]).tolist()
    stable = summarize(events(same), (["a", "b"], baseline))[0].drift
    drifted = summarize(events(shifted), (["a", "b"], baseline))[0].drift
    assert [d.level for d in stable] == ["stable", "stable"]
    assert [d.level for d in drifted] == ["stable", "drift"]


def test_rows_are_read_from_every_request_protocol():
    assert feature_rows({"data": [[1, 2]]}) == [[1, 2]]
    assert feature_rows({"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}}) == [[1, 2]]
    tensor = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    assert feature_rows(tensor) == [[1.0, 2.0], [3.0, 4.0]]
    assert feature_rows({"input-0": [[1, 2], [3, 4]]}) == [[1, 2], [3, 4]]  # a collected tensor


def test_psi_of_identical_samples_is_zero():
    sample = np.arange(100, dtype=float)
    assert psi(sample, sample) < 1e-9
