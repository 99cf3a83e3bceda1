"""The deployment ledger after two applies, and a rollback that is a valid change to mlops.yaml."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.apply.ledger import Entry, Ledger
from pipeline.cli.history import resolve_reference
from pipeline.cli.main import cli
from pipeline.errors import ReferenceNotFound

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

    repo.mlops("rollback", "iris", "--to", f"commit:{history[0]['commit'][:8]}", "--write")
    text = (repo.root / "mlops.yaml").read_text()
    assert "model: iris-classifier:1" in text
    plan = repo.mlops("plan").stdout
    assert "iris-classifier:2 → iris-classifier:1" in plan

DIGITS = "42588020" + "a" * 32
OTHER = "1234abcd" + "b" * 32
SERVED = {"iris/blue": {"model": "iris:1", "traffic": 100, "mirror": 0}}
ENTRIES = [Entry(1, "t", DIGITS, "me", "s", "ok", SERVED), Entry(2, "t", OTHER, "me", "s", "ok", SERVED)]


def no_repo(reference: str) -> None:
    return None


def test_all_digit_short_sha_is_a_commit_not_an_entry_number():
    assert resolve_reference("42588020", ENTRIES, "iris", no_repo).id == 1


def test_small_number_is_an_entry():
    assert resolve_reference("2", ENTRIES, "iris", no_repo).id == 2


def test_reference_that_is_both_an_entry_and_a_commit_is_refused_naming_both():
    entries = [*ENTRIES, *(Entry(i, "t", None, None, "s", "ok", SERVED) for i in range(3, 4259))]
    with pytest.raises(ReferenceNotFound, match=r"both ledger entry #4258 and commit 42588020aaaa.*entry:4258"):
        resolve_reference("4258", entries, "iris", no_repo)
    assert resolve_reference("entry:4258", entries, "iris", no_repo).id == 4258
    assert resolve_reference("commit:4258", entries, "iris", no_repo).id == 1


def test_commit_known_to_the_repository_but_never_applied_is_reported():
    with pytest.raises(ReferenceNotFound, match="never applied"):
        resolve_reference("9999", ENTRIES, "iris", lambda ref: "9999" + "c" * 36)


SPEC = """\
version: 1
models:
  iris: {path: m, flavor: sklearn}
targets:
  local: {type: local}
endpoints:
  iris:
    target: local
    traffic: {blue: 90, green: 10}   # canary
    deployments:
      blue: {model: iris}
      green: {model: iris}
"""


def rollback(tmp_path, spec: str, served: dict, *args: str):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.skops").write_text("x")
    (tmp_path / "mlops.yaml").write_text(spec)
    ledger = Ledger(tmp_path / ".mlops" / "registry")
    ledger.record(commit=None, author="me", summary="s", outcome="ok", served=served)
    ledger.close()
    return CliRunner().invoke(cli, ["--file", str(tmp_path / "mlops.yaml"), "rollback", "iris", "--to", "1", *args])


def test_deployment_added_since_gets_no_traffic_so_the_split_adds_up(tmp_path):
    result = rollback(tmp_path, SPEC, SERVED, "--write")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "mlops.yaml").read_text()
    assert "    traffic: {blue: 100, green: 0}   # canary\n" in text and "blue: {model: iris:1}" in text


def test_rollback_that_cannot_be_valid_is_refused_and_nothing_written(tmp_path):
    served = {"iris/blue": {"model": "iris:1", "traffic": 50}, "iris/red": {"model": "iris:1", "traffic": 50}}
    result = rollback(tmp_path, SPEC, served, "--write")
    assert result.exit_code == 1
    assert "would make mlops.yaml invalid" in result.output and "add up to 50" in result.output
    assert "'red' served iris:1" in result.output
    assert (tmp_path / "mlops.yaml").read_text() == SPEC


def test_rollback_restores_the_mirror_served_then(tmp_path):
    served = {"iris/blue": {"model": "iris:1", "traffic": 100, "mirror": 0},
              "iris/green": {"model": "iris:1", "traffic": 0, "mirror": 10}}
    result = rollback(tmp_path, SPEC, served, "--write")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "mlops.yaml").read_text()
    assert "traffic: {blue: 100, green: 0}" in text and "    mirror_traffic: {green: 10}\n" in text
