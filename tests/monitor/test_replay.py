"""Replay: collected requests back into rows, a candidate run on them, and how its answers differ."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix

from pipeline.monitor.replay import compare, render_markdown, render_text, replay, request_of, requests_of, summarize
from pipeline.runtime import load_model
from pipeline.server.events import Event

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def event(inputs, outputs, route="/score", status=200) -> Event:
    found = Event.from_json({"time": "2026-01-01T00:00:00+00:00", "route": route, "status": status,
                             "inputs": inputs, "outputs": outputs, "model": "iris", "model_version": 1})
    assert found is not None
    return found


def test_labels_agreement_and_confusion_match_sklearn():
    generator = np.random.default_rng(1)
    live = generator.choice(["setosa", "versicolor", "virginica"], 500).tolist()
    candidate = [("versicolor" if label == "setosa" and generator.random() < 0.2 else label) for label in live]
    result = compare(live, candidate)
    assert result["kind"] == "labels"
    assert result["agreement"] == pytest.approx(accuracy_score(live, candidate))
    assert result["confusion"] == confusion_matrix(live, candidate, labels=result["labels"]).tolist()
    assert result["changes"][0]["live"] == "setosa" and result["changes"][0]["candidate"] == "versicolor"
    assert result["changed"] == sum(a != b for a, b in zip(live, candidate, strict=True))


def test_class_numbers_sort_by_value():
    assert compare([10, 2, 2], [2, 10, 2])["labels"] == ["2", "10"]


def test_numbers_shift_mean_quantiles_and_psi():
    generator = np.random.default_rng(2)
    live = generator.normal(0, 1, 2000)
    same = compare(live.tolist(), live.tolist())
    shifted = compare(live.tolist(), (live + 1.0).tolist())
    assert same["agreement"] == 1.0 and same["psi"] == pytest.approx(0.0, abs=1e-9)
    assert shifted["kind"] == "numbers" and shifted["agreement"] == 0.0
    assert shifted["mean_absolute_change"] == pytest.approx(1.0)
    assert shifted["candidate"]["mean"] == pytest.approx(float((live + 1.0).mean()), abs=1e-6)
    assert shifted["candidate"]["p95"] == pytest.approx(float(np.percentile(live + 1.0, 95)), abs=1e-6)
    assert shifted["psi"] > 0.2  # a significant shift, as PSI is read


def test_vectors_are_compared_whole():
    result = compare([[0.1, 0.9], [0.5, 0.5]], [[0.1, 0.9], [0.6, 0.4]])
    assert (result["kind"], result["agreement"]) == ("values", 0.5)


def test_requests_are_read_from_each_collected_form():
    rows = [[5.1, 3.5, 1.4, 0.2]]
    assert request_of(event(rows, [0])).rows == rows
    named = request_of(event({"columns": COLUMNS, "data": rows}, [0]))
    assert (named.rows, named.columns) == (rows, COLUMNS)
    tensor = request_of(event({"input-0": rows}, {"predict": [0]}, route="/v2/models/{name}/infer"))
    assert (tensor.tensors, tensor.output, tensor.answers) == ({"input-0": rows}, "predict", [0])
    assert request_of(event(rows, None, status=400)) is None  # failed: nothing was answered
    assert request_of(event(rows + rows, [0])) is None  # not one answer per row


@pytest.fixture
def iris_candidate(tmp_path):
    features, species = load_iris(return_X_y=True)
    estimator = LogisticRegression(C=0.02, max_iter=500).fit(features, species)
    sio.dump(estimator, tmp_path / "model.skops")
    (tmp_path / "baseline.csv").write_text(",".join(COLUMNS) + "\n" + "\n".join(
        ",".join(str(v) for v in row) for row in features[:5]) + "\n")
    return estimator, load_model(tmp_path, "sklearn", tmp_path / "baseline.csv"), features, species


def test_replay_gets_the_candidates_answers_on_the_collected_rows(iris_candidate):
    estimator, model, features, species = iris_candidate
    # live answered the true species; rows were collected with the model's column names, some reordered
    events = [event({"columns": COLUMNS, "data": features[i:i + 3].tolist()}, species[i:i + 3].tolist())
              for i in range(0, 150, 3)]
    order = [3, 2, 1, 0]
    events.append(event({"columns": [COLUMNS[i] for i in order], "data": features[:2, order].tolist()},
                        species[:2].tolist()))
    result = replay(model, requests_of(events))
    expected = estimator.predict(np.vstack([features, features[:2]]))
    assert result.failed == 0 and result.candidate == expected.tolist()
    report = summarize(result)
    truth = np.concatenate([species, species[:2]])
    assert report["agreement"] == pytest.approx(accuracy_score(truth, expected))
    assert report["confusion"] == confusion_matrix(truth, expected).tolist()
    assert report["latency_ms_per_row"]["p50"] > 0


def test_candidate_failures_are_counted_with_the_first_message(iris_candidate):
    _, model, features, species = iris_candidate
    events = [event(features[:2, :3].tolist(), species[:2].tolist()), event(features[:1].tolist(), [0])]
    result = replay(model, requests_of(events))
    assert (result.requests, result.failed, len(result.candidate)) == (2, 1, 1)
    assert "4" in result.first_error  # says the candidate takes 4 features


def test_regressor_replay_reports_the_prediction_shift(tmp_path):
    generator = np.random.default_rng(3)
    x = generator.normal(0, 1, (200, 2))
    sio.dump(LinearRegression().fit(x, x @ [1.0, 2.0] + 5.0), tmp_path / "model.skops")
    model = load_model(tmp_path, "sklearn")
    live = (x @ [1.0, 2.0]).tolist()  # the live model had no intercept
    report = summarize(replay(model, requests_of([event(x[i:i + 10].tolist(), live[i:i + 10])
                                                  for i in range(0, 200, 10)])))
    assert report["kind"] == "numbers" and report["agreement"] == 0.0
    assert report["mean_absolute_change"] == pytest.approx(5.0, abs=1e-6)
    assert report["candidate"]["mean"] - report["live"]["mean"] == pytest.approx(5.0, abs=1e-6)
    text = render_text(20, [{"step": "update:r/blue", "source": "r/blue", "live_model": "r:1", "candidate_model": "r:2",
                             "candidate_from": "registered", "result": report}])
    assert "mean absolute change 5" in text and f"PSI {report['psi']:.4f}" in text


def test_renderers_show_agreement_confusion_and_what_was_not_replayed():
    result = {"requests": 2, "failed": 0, "first_error": None, **compare([0, 1, 1], [0, 2, 1]),
              "latency_ms_per_row": {"mean": 0.1, "p50": 0.1, "p95": 0.2}}
    cases = [{"step": "update:iris/blue", "source": "iris/blue", "live_model": "iris:1", "candidate_model": "iris:2",
              "candidate_from": "registered", "result": result},
             {"step": "update:iris/green", "source": "iris/green", "live_model": "iris:1",
              "candidate_model": "iris:2", "candidate_from": None, "note": "iris/green collected no requests"}]
    text = render_text(50, cases)
    assert "agreement 66.7 % (1 of 3 answers change)" in text and "1 → 2 (1)" in text
    assert "nothing to replay: iris/green collected no requests" in text
    markdown = render_markdown(50, cases)
    assert "| live ↓ / candidate → | `0` | `1` | `2` |" in markdown and "| `1` | 0 | 1 | 1 |" in markdown
