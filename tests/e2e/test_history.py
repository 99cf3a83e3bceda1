"""The deployment ledger after two applies, and a rollback that is a change to mlops.yaml."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_history_and_rollback_after_two_applies(repo):
    repo.mlops("apply", "--yes")
    first_commit = repo.mlops("models", "show", "iris-classifier:1", "--format", "json").stdout
    (repo.root / "models" / "iris" / "NOTES.md").write_text("v2\n")
    repo.commit("second model")
    repo.mlops("apply", "--yes")

    history = json.loads(repo.mlops("history", "iris", "--format", "json").stdout)
    assert [entry["served"]["iris/blue"]["model"] for entry in history] == ["iris-classifier:1", "iris-classifier:2"]
    assert history[1]["commit"] != history[0]["commit"] and history[0]["commit"] in first_commit
    assert history[0]["outcome"] == "ok" and "to add" in history[0]["summary"]

    preview = repo.mlops("rollback", "iris", "--to", "1")
    assert "-        model: iris-classifier\n+        model: iris-classifier:1" in preview.stdout
    assert "model: iris-classifier\n" in (repo.root / "mlops.yaml").read_text()  # unchanged without --write

    repo.mlops("rollback", "iris", "--to", history[0]["commit"][:8], "--write")
    text = (repo.root / "mlops.yaml").read_text()
    assert "model: iris-classifier:1" in text
    plan = repo.mlops("plan").stdout
    assert "iris-classifier:2 → iris-classifier:1" in plan
