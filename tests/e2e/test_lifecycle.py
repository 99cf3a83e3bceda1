"""What a user sees across status, destroy and apply again: URIs, a stable port, kept data, history."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = pytest.mark.slow

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2]]


def test_status_names_the_scoring_and_oip_uris(repo):
    repo.mlops("apply", "--yes")
    (row,) = json.loads(repo.mlops("status", "--format", "json").stdout)
    assert row["scoring_uri"] == f"{row['url']}/score"
    assert row["oip_uri"] == f"{row['url']}/v2/models/iris-classifier/infer"
    text = repo.mlops("status").stdout
    assert row["scoring_uri"] in text and row["oip_uri"] in text


def test_an_endpoint_keeps_its_port_across_destroy_and_apply(repo):
    repo.mlops("apply", "--yes")
    before, _ = repo.endpoint()
    repo.mlops("destroy", "--yes")
    repo.mlops("apply", "--yes")
    after, _ = repo.endpoint()
    assert after == before
    assert repo.score(IRIS_ROWS).status_code == 200


def test_destroy_keeps_collected_data_and_says_where_unless_purged(repo):
    repo.mlops("apply", "--yes")
    assert repo.score(IRIS_ROWS).status_code == 200
    data = repo.root / ".mlops" / "data" / "iris"
    kept = repo.mlops("destroy", "--yes").stdout
    assert f"kept the data it collected in {data}" in kept
    assert list(data.rglob("*.jsonl"))  # flushed on shutdown, still there
    repo.mlops("apply", "--yes")
    purged = repo.mlops("destroy", "--yes", "--purge-data").stdout
    assert "deleted the data it collected" in purged and not data.exists()


def test_history_shows_a_destroy(repo):
    repo.mlops("apply", "--yes")
    repo.mlops("destroy", "--yes")
    history = repo.mlops("history", "iris").stdout
    assert "destroyed" in history and "Destroyed endpoints: iris" in history


def test_named_columns_are_matched_by_the_baseline_header(repo):
    """The example model names no features; its baseline (inside the model folder) does."""
    repo.mlops("apply", "--yes")
    url, headers = repo.endpoint()
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    reversed_body = {"input_data": {"columns": columns[::-1], "data": [row[::-1] for row in rows]}}

    answer = httpx.post(f"{url}/score", json=reversed_body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [0, 2]
    unknown = httpx.post(f"{url}/score", json={"input_data": {"columns": ["a", "b", "c", "d"], "data": rows}},
                         headers=headers, timeout=10)
    assert unknown.status_code == 400 and "a" in unknown.text


def test_the_endpoint_refuses_a_body_over_the_deployments_limit_before_reading_it(repo):
    spec = (repo.root / "mlops.yaml").read_text()
    (repo.root / "mlops.yaml").write_text(spec.replace(
        "        data_collector: {sampling_rate: 1.0}\n",
        "        data_collector: {sampling_rate: 1.0}\n        request_settings: {max_body_bytes: 4096}\n"))
    repo.mlops("apply", "--yes")
    url, headers = repo.endpoint()
    big = httpx.post(f"{url}/score", content=b"x" * 100_000, headers={**headers, "content-type": "application/json"},
                     timeout=10)
    assert big.status_code == 413
    assert repo.score(IRIS_ROWS).status_code == 200


def test_the_local_targets_port_is_the_endpoints_port(repo):
    from pipeline.targets.health import free_port

    port = free_port()
    spec = (repo.root / "mlops.yaml").read_text()
    local = f"  local: {{type: local, port: {port}}}"
    (repo.root / "mlops.yaml").write_text(spec.replace("  local: {type: local}", local))
    repo.mlops("apply", "--yes")
    url, _ = repo.endpoint()
    assert url == f"http://127.0.0.1:{port}"
    assert repo.score(IRIS_ROWS).status_code == 200
