"""``mlops score-batch ENDPOINT``: the version serving there, in-process and through the running endpoint
(real HTTP over loopback, its key), and ``--collect`` showing up in ``mlops monitor``."""

from __future__ import annotations

import csv
import json
import random
import time

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_score_batch_against_the_endpoint_matches_score_and_is_monitored(repo, tmp_path):
    repo.mlops("apply", "--yes")
    rng = random.Random(3)
    rows = [[round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1), round(rng.uniform(1, 7), 1),
             round(rng.uniform(0, 2.5), 1)] for _ in range(1_500)]
    source = tmp_path / "rows.csv"
    with open(source, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row_id", *reversed(FEATURES)])  # another order than the model's: matched by name
        writer.writerows([i, *reversed(row)] for i, row in enumerate(rows))
    answered = repo.score(rows).json()["predictions"]

    local = tmp_path / "local"
    result = repo.mlops("score-batch", "iris", "--input", str(source), "--output", str(local), "--id-column",
                        "row_id", "--chunk-rows", "500", "--collect", "--format", "json")
    summary = json.loads(result.stdout)
    assert summary["model"] == "iris-classifier:1" and summary["rows_out"] == 1_500
    via = tmp_path / "via"
    repo.mlops("score-batch", "iris/blue", "--via-endpoint", "--concurrency", "3", "--input", str(source),
               "--output", str(via), "--id-column", "row_id", "--chunk-rows", "500")

    in_process = pq.read_table(local)
    over_http = pq.read_table(via)
    assert in_process["row_id"].to_pylist() == over_http["row_id"].to_pylist() == list(range(1_500))
    assert in_process["prediction"].to_pylist() == over_http["prediction"].to_pylist() == answered
    metadata = pq.read_metadata(next(via.glob("part-*.parquet"))).metadata
    assert metadata[b"mlops.endpoint"] == b"iris/blue"

    deadline = time.monotonic() + 10  # the service hands its events to the disk once a second
    while True:
        report = json.loads(repo.mlops("monitor", "iris", "--format", "json").stdout)
        rows_seen = sum(d["rows"] for d in report["deployments"])
        if rows_seen >= 3_000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows_seen >= 3_000  # the batch's 1,500 collected rows (15 events of 100) and the /score call's 1,500
