"""Fault injection: ``mlops apply`` killed at every commit point, then run again, converges.

A traced apply lists the commit points an update passes (journal lines, record writes, router
switches, registry commits: ``pipeline.faults``). Then, for each point in turn, the model changes,
an apply is SIGKILLed exactly there, and the checks run on what it left and after a plain re-run.
"""

from __future__ import annotations

import json
import os
import signal

import httpx
import psutil
import pytest

from pipeline.registry.local import LocalRegistry

pytestmark = pytest.mark.slow

ROW = [5.1, 3.5, 1.4, 0.2]


def _env(**values: str) -> dict[str, str]:
    return {**os.environ, **values}


def _served_versions(repo, requests: int = 6) -> set[str]:
    """The model versions that answer requests sent to the endpoint's URL (through its router)."""
    url, headers = repo.endpoint()
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
    answers = [httpx.post(f"{url}/v2/models/iris-classifier/infer", json=body, headers=headers, timeout=10)
               for _ in range(requests)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return {a.json()["model_version"] for a in answers}


def _recorded_pids(local) -> set[int]:
    pids = set()
    for endpoint in (local / "endpoints").iterdir():
        record = json.loads((endpoint / "endpoint.json").read_text())
        pids.add(record["router"]["pid"])
        for deployment in (endpoint / "deployments").glob("*.json"):
            pids.update(i["pid"] for i in json.loads(deployment.read_text())["instances"])
    return pids


def _running_pids(local) -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(local) in part for part in p.info["cmdline"] or [])}


def _check_converged(repo, contents: int) -> None:
    """The endpoint serves the version status shows, one version per content, no orphan, no change left."""
    status = json.loads(repo.mlops("status", "--format", "json").stdout)[0]
    assert status["drift"] == []
    (blue,) = status["deployments"]
    assert blue["ready"] == "1/1"
    registry = LocalRegistry(repo.root / ".mlops" / "registry")
    versions = [v.version for v in registry.list_versions("iris-classifier")]
    assert len(versions) == contents  # registering is exactly once per content
    assert blue["model"] == f"iris-classifier:{max(versions)}"
    assert _served_versions(repo) == {str(max(versions))}
    assert registry.users("iris-classifier", max(versions))  # the serving version cannot be deleted
    local = repo.root / ".mlops" / "local"
    assert _running_pids(local) == _recorded_pids(local)
    assert repo.mlops("plan", "--detailed-exitcode", check=False).returncode == 0


def test_apply_killed_at_every_commit_point_converges(repo, tmp_path):
    repo.mlops("apply", "--yes")
    trace = tmp_path / "trace.tsv"
    repo.write("models/iris/NOTES.md", "traced\n")
    repo.mlops("apply", "--yes", env=_env(MLOPS_CRASH_TRACE=str(trace)))
    points = [line.split("\t")[1] for line in trace.read_text().splitlines()]
    assert {"journal begin", "registry version committed", "record deployments/blue.json", "router switched",
            "instances stopped", "journal end"} <= set(points)
    contents = 2
    for number, point in enumerate(points, start=1):
        repo.write("models/iris/NOTES.md", f"version killed at {point} ({number})\n")
        contents += 1
        killed = repo.mlops("apply", "--yes", check=False, env=_env(MLOPS_CRASH_AT=str(number)))
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout, killed.stderr)
        if repo.mlops("plan", "--detailed-exitcode", check=False).returncode == 0:
            _check_converged(repo, contents)  # "no changes" only when it is true
        rerun = repo.mlops("apply", "--yes", "--lock-timeout", "0")
        assert "Traceback" not in rerun.stderr
        _check_converged(repo, contents)
