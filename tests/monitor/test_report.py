"""Monitoring numbers from collected events: traffic, errors by class, latency, predictions, drift."""

from __future__ import annotations

import numpy as np

from pipeline.monitor.drift import DriftPolicy
from pipeline.monitor.report import Baseline, feature_rows, predictions, summarize
from pipeline.server.events import Event


def events(rows, deployment="blue", status=200, latency=2.0, model="iris", version=1, outputs=None, start=0):
    return [Event.from_json({"deployment": deployment, "status": status, "latency_ms": latency, "model": model,
                             "model_version": version, "time": f"2026-01-01T00:{(start + i) // 60 % 60:02d}:"
                             f"{(start + i) % 60:02d}Z", "inputs": {"data": [row]},
                             "outputs": outputs if outputs is not None else [0]})
            for i, row in enumerate(rows)]


def test_errors_are_split_by_status_class_and_refusals_counted():
    rows = [[1.0, 2.0]] * 8
    report = summarize(events(rows) + events(rows[:2], status=500) + events(rows[:1], status=401)
                       + events(rows[:1], status=404) + events(rows[:3], deployment="green"))
    blue, green = report
    assert (blue.deployment, blue.requests, blue.rows) == ("blue", 12, 8)
    assert (blue.client_errors, blue.unauthorized, blue.not_found, blue.model_errors) == (2, 1, 1, 2)
    assert blue.error_rate == 4 / 12 and blue.latency_ms["p50"] == 2.0
    assert (green.deployment, green.requests) == ("green", 3)


def test_first_and_last_are_the_earliest_and_latest_events_whatever_the_order():
    late, early = events([[1.0]], start=50), events([[1.0]], start=5)
    (report,) = summarize(late + early)
    assert (report.first, report.last) == ("2026-01-01T00:00:05.000Z", "2026-01-01T00:00:50.000Z")


def test_predictions_are_counted_per_version():
    report = summarize(events([[1.0]] * 3, outputs=["setosa"]) + events([[1.0]], version=2, outputs=["virginica"])
                       + events([[1.0]], version=2, outputs=["setosa"]))[0]
    assert [(v.name, v.predictions["labels"]) for v in report.versions] == [
        ("iris:1", {"setosa": 3}), ("iris:2", {"virginica": 1, "setosa": 1})]


def test_each_version_is_compared_with_the_baseline_of_the_model_it_serves():
    generator = np.random.default_rng(1)
    policy = DriftPolicy(min_rows=50)
    iris = Baseline("iris.csv", ["a"], generator.normal(0, 1, (1000, 1)), policy)
    wine = Baseline("wine.csv", ["a"], generator.normal(5, 1, (1000, 1)), policy)
    served = events(generator.normal(5, 1, (200, 1)).tolist(), model="wine")
    (report,) = summarize(served, {"iris": iris, "wine": wine})
    (version,) = report.versions
    assert version.drift is not None and version.drift.baseline == "wine.csv"
    assert version.drift.features[0].drifted is False


def test_a_baseline_too_small_is_reported_as_such():
    generator = np.random.default_rng(2)
    small = Baseline("small.csv", ["a"], generator.normal(0, 1, (105, 1)))
    (report,) = summarize(events(generator.normal(3, 1, (500, 1)).tolist()), {"iris": small})
    drift = report.versions[0].drift
    assert drift is not None and not drift.judged and drift.features[0].drifted is None
    assert "baseline too small to judge (105 rows, needs 200)" in drift.reason


def test_rows_are_read_from_every_request_protocol():
    assert feature_rows({"data": [[1, 2]]}) == [[1, 2]]
    assert feature_rows({"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}}) == [[1, 2]]
    tensor = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    assert feature_rows(tensor) == [[1.0, 2.0], [3.0, 4.0]]
    assert feature_rows({"input-0": [[1, 2], [3, 4]]}) == [[1, 2], [3, 4]]  # a collected tensor


def test_predictions_are_read_from_every_response_shape():
    assert predictions([0, 2]) == [0, 2]
    assert predictions({"predictions": ["a"]}) == ["a"]
    assert predictions([[0.5], [0.25]]) == [0.5, 0.25]
    assert predictions([{"name": "y", "shape": [2], "datatype": "INT64", "data": [1, 0]}]) == [1, 0]


def test_the_router_s_own_refusals_are_a_row_of_their_own():
    refused = [Event.from_json({"deployment": "_router", "status": 401, "time": "2026-01-01T00:00:00Z",
                                "route": "router", "error": "missing or invalid key"})]
    (router,) = summarize(refused)
    assert (router.title, router.unauthorized, router.versions[0].name) == \
        ("router (refused before reaching a deployment)", 1, "(none)")


def test_rows_are_counted_when_a_baseline_folds_them_in():
    baseline = Baseline("b.csv", ["a", "b"], np.random.default_rng(4).normal(0, 1, (300, 2)))
    (report,) = summarize(events([[1.0, 2.0]] * 3), {"iris": baseline})
    assert report.rows == 3 and report.versions[0].drift.rows == 3
