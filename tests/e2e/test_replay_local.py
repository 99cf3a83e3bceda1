"""plan --replay with real processes: requests collected by the live service, replayed on a retrained model."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix

from pipeline.monitor import read_events

pytestmark = pytest.mark.slow


def wait_for_collected(repo, count: int, timeout: float = 30) -> None:
    """The collector writes about once a second: wait until every request is on disk."""
    deadline = time.monotonic() + timeout
    while sum(1 for _ in read_events(repo.root / ".mlops" / "data", "iris", "blue")) < count:
        assert time.monotonic() < deadline, "the requests were not collected in time"
        time.sleep(0.2)


def test_plan_replays_collected_requests_on_the_retrained_model(repo):
    repo.mlops("apply", "--yes")
    features, species = load_iris(return_X_y=True)
    retrained = LogisticRegression(C=0.02, max_iter=500).fit(features, species)
    sio.dump(retrained, repo.root / "models" / "iris" / "model.skops")
    repo.commit("retrained")

    nothing = repo.mlops("plan", "--replay", "50")
    assert "nothing to replay: iris/blue collected no answered requests of iris-classifier:1" in nothing.stdout

    url, headers = repo.endpoint()
    generator = np.random.default_rng(7)
    sent, answered = [], []
    with httpx.Client(headers=headers, timeout=10) as client:
        for _ in range(60):
            rows = features[generator.choice(len(features), 3)]
            response = client.post(f"{url}/score", json={"data": rows.tolist()})
            assert response.status_code == 200, response.text
            sent.append(rows)
            answered.append(response.json()["predictions"])
    wait_for_collected(repo, 60)

    report = json.loads(repo.mlops("plan", "--replay", "50", "--format", "json").stdout)
    (case,) = report["replay"]["cases"]
    assert (case["step"], case["live_model"], case["candidate_model"]) == (
        "update:iris/blue", "iris-classifier:1", "iris-classifier:2")
    live = np.concatenate(answered[-50:])  # what the service answered, as the test received it
    candidate = retrained.predict(np.vstack(sent[-50:]))
    result = case["result"]
    assert (result["requests"], result["rows"], result["failed"]) == (50, 150, 0)
    assert result["agreement"] == pytest.approx(accuracy_score(live, candidate))
    labels = sorted(set(live) | set(candidate))
    assert result["labels"] == [str(label) for label in labels]
    assert result["confusion"] == confusion_matrix(live, candidate, labels=labels).tolist()
    assert result["changed"] > 0  # the retrained model answers differently: the test checks real numbers

    text = repo.mlops("plan", "--replay", "50").stdout
    assert f"agreement {accuracy_score(live, candidate) * 100:.1f} %" in text
    assert "confusion (rows: live answer, columns: candidate answer)" in text
    markdown = repo.mlops("plan", "--replay", "50", "--format", "markdown").stdout
    assert "#### Replay of the last 50 production requests" in markdown and "| live ↓ / candidate → |" in markdown


def test_replay_takes_a_positive_number(repo):
    refused = repo.mlops("plan", "--replay", "0", check=False)
    assert refused.returncode != 0 and "--replay" in refused.stderr and "Traceback" not in refused.stderr
