"""plan → apply → score on the local target, with real processes, HTTP, git and the registry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

pytestmark = pytest.mark.slow

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def test_apply_starts_a_working_endpoint(repo):
    plan = repo.mlops("plan", "--detailed-exitcode", check=False)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "register" in plan.stdout and "iris/blue" in plan.stdout
    repo.mlops("apply", "--yes")
    response = repo.score(IRIS_ROWS)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [0, 2]
    again = repo.mlops("plan", "--detailed-exitcode", check=False)
    assert again.returncode == 0, again.stdout
    assert "No changes" in again.stdout


def test_requests_without_the_key_are_refused(repo):
    repo.mlops("apply", "--yes")
    url, _ = repo.endpoint()
    assert httpx.post(f"{url}/score", json={"data": IRIS_ROWS}).status_code == 401


def test_changed_model_registers_and_updates_without_failed_requests(repo):
    repo.mlops("apply", "--yes")
    (repo.root / "models" / "iris" / "NOTES.md").write_text("retrained on more data\n")
    repo.commit("new model version")
    plan = repo.mlops("plan").stdout
    assert "register" in plan and "update" in plan
    url, headers = repo.endpoint()
    failures, versions, stop = [], Counter(), threading.Event()

    def load():
        with httpx.Client(headers=headers, timeout=10) as client:
            while not stop.is_set():
                try:
                    answer = client.post(f"{url}/v2/models/iris-classifier/infer", json={"inputs": [
                        {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROWS[0]}]})
                    if answer.status_code != 200:
                        failures.append(answer.status_code)
                    else:
                        versions[answer.json()["model_version"]] += 1
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        repo.mlops("apply", "--yes")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures
    assert set(versions) == {"1", "2"}
    assert repo.mlops("plan", "--detailed-exitcode", check=False).returncode == 0


def wait_for_journal(repo, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for journal in (repo.root / ".mlops" / "journal").glob("*.jsonl"):
            if text in journal.read_text():
                return
        time.sleep(0.01)
    raise TimeoutError(text)


def test_killed_apply_converges_on_rerun(repo):
    process = repo.spawn("apply", "--yes")
    wait_for_journal(repo, '"event": "start", "step": "deploy:iris/blue"')
    time.sleep(0.3)  # the new instance is starting
    process.send_signal(signal.SIGKILL)
    process.wait()
    lock = json.loads((repo.root / ".mlops" / "lock.json").read_text())
    rerun = repo.mlops("apply", "--yes", "--lock-timeout", "0")
    assert f"Took over the state lock of apply {lock['id']}" in rerun.stdout  # its holder is provably dead
    assert repo.score(IRIS_ROWS).status_code == 200
    models = json.loads(repo.mlops("models", "list", "--format", "json").stdout)
    assert [m for m in models if m["name"] == "iris-classifier"][0]["latest"] == 1
    status = json.loads(repo.mlops("status", "--format", "json").stdout)
    assert [d["ready"] for d in status[0]["deployments"]] == ["1/1"]
    assert repo.mlops("plan", "--detailed-exitcode", check=False).returncode == 0


def test_second_apply_waits_then_names_the_holder(repo):
    """Another apply holds the lock (a live process on this host) for as long as the test needs."""
    state = repo.root / ".mlops"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import pathlib, sys, time; from pipeline.apply.lock import StateLock; "
         f"StateLock(pathlib.Path({str(state)!r})).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = repo.mlops("apply", "--yes", "--lock-timeout", "0.5s", check=False)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1
    assert "locked by apply" in second.stderr and f"pid {holder.pid}" in second.stderr
    assert "Traceback" not in second.stderr


def test_stale_saved_plan_is_refused(repo):
    repo.mlops("plan", "--out", "plan.json")
    repo.mlops("apply", "--yes")  # the world changed after plan.json was made
    stale = repo.mlops("apply", "plan.json", check=False)
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_saved_plan_applies_exactly(repo):
    repo.mlops("plan", "--out", "plan.json")
    repo.mlops("apply", "plan.json")
    assert repo.score(IRIS_ROWS).status_code == 200


def test_deployment_that_never_gets_ready_leaves_the_old_one_serving(repo):
    repo.mlops("apply", "--yes")
    spec = (repo.root / "mlops.yaml").read_text()
    (repo.root / "mlops.yaml").write_text(spec.replace("model: iris-classifier", "model: broken").replace(
        "failure_threshold: 100", "failure_threshold: 15"))
    result = repo.mlops("apply", "--yes", check=False)
    assert result.returncode == 1
    assert "did not become ready" in result.stderr and "weights missing" in result.stderr
    (repo.root / "mlops.yaml").write_text(spec)
    assert repo.score(IRIS_ROWS).status_code == 200


def test_saved_plan_with_a_step_added_by_hand_is_refused(repo):
    repo.mlops("apply", "--yes")
    spec = (repo.root / "mlops.yaml").read_text()
    (repo.root / "mlops.yaml").write_text(spec.replace("sampling_rate: 1.0", "sampling_rate: 0.5"))
    repo.mlops("plan", "--out", "plan.json")
    plan = json.loads((repo.root / "plan.json").read_text())
    plan["steps"].append({"id": "delete:iris", "kind": "delete", "action": "delete", "address": "endpoint.iris",
                          "reason": "slipped in", "data": {"target": "local", "endpoint": "iris"}})
    (repo.root / "plan.json").write_text(json.dumps(plan))  # the digests are left untouched
    refused = repo.mlops("apply", "plan.json", check=False)
    assert refused.returncode == 1 and "other steps" in refused.stderr
    assert repo.score(IRIS_ROWS).status_code == 200
