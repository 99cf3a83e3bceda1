"""The ledger on a real MLflow server: same entries as the SQLite ledger, in order, the plan as an artifact."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import datetime

from pipeline.apply.ledger import Ledger
from pipeline.apply.mlflow_ledger import MlflowLedger
from pipeline.registry.mlflow_client import connect

APPLIES = [
    dict(commit="a" * 40, author="ada", summary="2 to add", outcome="ok",
         served={"iris/blue": {"model": "iris:3", "image": "sha256:ab", "traffic": 90, "mirror": 0},
                 "iris/green": {"model": "iris:4", "image": None, "traffic": 10.5, "mirror": 0, "note": "é ✓"}}),
    dict(commit=None, author=None, summary="", outcome="failed",
         served={"wine/main": {"model": "wine:1", "traffic": 100, "extra": {"nested": [1, 2.25, None]}}}),
    dict(commit="b" * 40, author="bob", summary="Destroyed endpoints: wine, old", outcome="destroyed",
         served={}, acted_on=("wine", "old")),
]


def _without_time(entries):
    return [{k: v for k, v in asdict(e).items() if k != "time"} for e in entries]


def test_entries_round_trip_like_the_sqlite_ledger(mlflow_server, tmp_path):
    ledger = MlflowLedger(mlflow_server, f"ledger-{uuid.uuid4().hex}")
    assert ledger.entries() == []  # no experiment yet
    local = Ledger(tmp_path)
    ids = [ledger.record(**apply, plan_json=json.dumps({"n": n})) for n, apply in enumerate(APPLIES)]
    local_ids = [local.record(**apply, plan_json="{}") for apply in APPLIES]
    assert ids == local_ids == [1, 2, 3]
    entries = ledger.entries()
    assert _without_time(entries) == _without_time(local.entries())
    assert entries[1].commit is None and entries[1].author is None and entries[2].acted_on == ("old", "wine")
    for entry in entries:
        assert datetime.fromisoformat(entry.time).utcoffset().total_seconds() == 0
    assert [e.id for e in ledger.entries("iris")] == [1]
    assert [e.id for e in ledger.entries("wine")] == [2, 3]
    assert ledger.entries("nothing") == []
    # A fresh instance (another CI runner) continues the numbering.
    assert MlflowLedger(mlflow_server, ledger.experiment).record(**APPLIES[0]) == 4
    ledger.close()


def test_plan_is_an_artifact_and_commit_an_mlflow_tag(mlflow_server, tmp_path):
    name = f"ledger-{uuid.uuid4().hex}"
    ledger = MlflowLedger(mlflow_server, name)
    plan = json.dumps({"summary": "1 to add", "steps": [{"id": "deploy iris/blue"}]}, indent=2)
    ledger.record(**APPLIES[0], plan_json=plan)
    ledger.record(**APPLIES[1])
    client = connect(mlflow_server)
    experiment = client.get_experiment_by_name(name)
    runs = {r.data.tags["mlops.entry"]: r for r in client.search_runs([experiment.experiment_id])}
    first = runs["1"]
    assert first.info.run_name == "apply #1 / ok" and first.info.status == "FINISHED"
    assert first.data.tags["mlflow.source.git.commit"] == "a" * 40
    local = client.download_artifacts(first.info.run_id, "plan.json", str(tmp_path))
    assert open(local).read() == plan
    assert runs["2"].info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(runs["2"].info.run_id)] == []


def test_values_too_long_for_a_tag_round_trip_through_artifacts(mlflow_server):
    ledger = MlflowLedger(mlflow_server, f"ledger-{uuid.uuid4().hex}")
    served = {f"ep{i}/main": {"model": f"model-{i}:{i}", "image": "sha256:" + "f" * 64, "traffic": 100}
              for i in range(100)}
    acted_on = tuple(f"gone-{i}" for i in range(500))
    ledger.record(commit="c", author="a", summary="s" * 9000, outcome="ok", served=served, acted_on=acted_on)
    [entry] = ledger.entries()
    assert entry.served == served and entry.acted_on == tuple(sorted(acted_on)) and entry.summary == "s" * 9000
    assert [e.id for e in ledger.entries("ep42")] == [1]
