"""Progressive rollouts on the local target, with real scoring processes and a load generator thread
sending requests through the endpoint's router: promotion, rollback with the ledger's reason, the
latency ratio, no traffic until the deadline, resuming after kill -9, and pause_before_promote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import git
import httpx
import numpy as np
import pytest

SCORE = """\
import json, os, random, time

BEHAVIOUR = {}


def init():
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "behaviour.json")) as handle:
        BEHAVIOUR.update(json.load(handle))


def run(raw):
    rows = json.loads(raw)["data"]
    time.sleep(BEHAVIOUR.get("sleep", 0))
    if random.random() < BEHAVIOUR.get("fail", 0):
        raise RuntimeError("this version fails on some inputs")
    spread = BEHAVIOUR.get("spread", 0)
    return [BEHAVIOUR["answer"] + random.gauss(0, spread) if spread else BEHAVIOUR["answer"] for _ in rows]
"""

SPEC = """\
version: 1
models:
  scorer: {{path: models/scorer, flavor: python}}
targets:
  local: {{type: local}}
endpoints:
  web:
    target: local
    auth_mode: none
    traffic: {{blue: 100}}
    deployments:
      blue:
        model: scorer
        readiness_probe: {{period: 0.2, failure_threshold: 100}}
        rollout:
{rollout}
"""

GATES = "{min_requests: 40, failure_limit: 1, metrics: [{name: error_rate, max: 1%}, {name: latency_p99, max: 2s}]}"
# a ratio of fast answers' p99 is noise (a millisecond either way): the slow test sleeps in both versions, and
# checks at several weights (any failed check rolls back), as a busy machine's jitter can blur one window
RATIO = "{min_requests: 20, failure_limit: 1, metrics: [{name: latency_p99_ratio, max: 1.5}]}"


def rollout(**fields: object) -> str:
    values = {"steps": "[20, 50, 100]", "interval": "2s", "progress_deadline": "20s", "analysis": GATES, **fields}
    return "\n".join(f"          {key}: {value}" for key, value in values.items())


class Project:
    def __init__(self, root: Path, target: str = "local", collect: bool = False):
        self.root, self.target, self.collect = root, target, collect  # collect: and a baseline to compare with

    def mlops(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=self.root,
                                capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"mlops {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", *args], cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def version(self, answer: float, sleep: float = 0.0, fail: float = 0.0, spread: float = 0.0) -> None:
        folder = self.root / "models" / "scorer"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "score.py").write_text(SCORE)
        behaviour = {"answer": answer, "sleep": sleep, "fail": fail, "spread": spread}
        (folder / "behaviour.json").write_text(json.dumps(behaviour))

    def configure(self, rollout_text: str) -> None:
        text = SPEC.format(rollout=rollout_text)
        if self.collect:  # what the drift gates read
            text = text.replace("        rollout:", "        data_collector: {}\n        rollout:")
            text = text.replace("flavor: python}", "flavor: python, baseline: baseline.csv}")
            rows = "\n".join(f"{x:.3f},{y:.3f}" for x, y in np.random.default_rng(1).normal(size=(400, 2)))
            (self.root / "baseline.csv").write_text(f"x,y\n{rows}\n")
        if self.target != "local":  # a Docker target: the service runs in an environment image
            base = os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")
            text = text.replace("  local: {type: local}", f'  box: {{type: docker, base_image: "{base}"}}')
            text = text.replace("    target: local", "    target: box")
            text = text.replace("        model: scorer\n", "        model: scorer\n        environment: plain\n")
            text = text.replace("targets:", "environments:\n  plain: {python: \"3.11\"}\ntargets:")
        (self.root / "mlops.yaml").write_text(text)

    def url(self) -> str:
        status = json.loads(self.mlops("status", "--format", "json").stdout)
        return next(r for r in status if r["endpoint"] == "web")["url"]

    def state(self) -> dict:
        path = self.root / ".mlops" / "rollouts" / "web" / "blue.json"
        return json.loads(path.read_text()) if path.exists() else {}


class Load:
    """Requests through the endpoint's router from a thread, as users would send them."""

    def __init__(self, url: str):
        self.url, self.answers, self.stop = url, [], threading.Event()
        self.seen: set[tuple] = set()  # distinct (status, answer)
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    answer = client.post(f"{self.url}/score", json={"data": [[1.0, 2.0]]})
                    self.answers.append((answer.status_code, answer.json() if answer.status_code == 200 else None))
                    self.seen.add((answer.status_code, tuple(answer.json()) if answer.status_code == 200 else None))
                except httpx.HTTPError:
                    self.answers.append((0, None))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def start(tmp_path: Path, rollout_text: str, target: str = "local", collect: bool = False, **first: float) -> Project:
    project = Project(tmp_path / "repo", target, collect)
    project.version(1, **first)
    project.configure(rollout_text)
    (project.root / ".gitignore").write_text(".mlops/\n")
    git.Repo.init(project.root, initial_branch="main")
    repository = git.Repo(project.root)
    repository.git.add(A=True)
    repository.index.commit("first version")
    project.mlops("apply", "--yes")  # a new deployment: nothing to compare with, it goes live at once
    return project


@pytest.fixture
def made(tmp_path):
    projects: list[Project] = []

    def make(rollout_text: str, target: str = "local", collect: bool = False, **first: float) -> Project:
        projects.append(start(tmp_path, rollout_text, target, collect, **first))
        return projects[-1]

    yield make
    for project in projects:
        project.mlops("destroy", "--yes", check=False)


@pytest.mark.slow
def test_a_good_canary_walks_every_step_and_is_promoted(made):
    project = made(rollout())
    project.version(2)
    plan = project.mlops("plan").stdout
    assert "rollout: 20% →(2s) 50% →(2s) 100% →(2s) promote; gates: error_rate ≤ 1%, latency_p99 ≤ 2s" in plan
    with Load(project.url()) as load:
        applied = project.mlops("apply", "--yes").stdout
        time.sleep(0.5)
    for line in ("step 1/3: 20% to blue-canary", "step 2/3: 50%", "step 3/3: 100%", "promoted scorer:2"):
        assert line in applied
    assert project.state()["phase"] == "promoted"
    assert load.answers[-1] == (200, [2])  # the stable deployment serves the new version
    assert not [a for a in load.answers if a[0] != 200]  # no request failed on the way
    assert "blue-canary" not in project.mlops("status").stdout


@pytest.mark.slow
def test_a_canary_failing_some_inputs_is_rolled_back_at_its_first_step(made):
    project = made(rollout(steps="[50, 100]"))
    project.version(2, fail=0.1)
    with Load(project.url()) as load:
        applied = project.mlops("apply", "--yes", check=False)
    assert applied.returncode == 1
    assert "step 2/2" not in applied.stdout
    assert "rolled back: halted at 50%: error_rate" in applied.stderr
    assert load.answers[-1] == (200, [1])  # back on the stable version
    history = project.mlops("history").stdout
    assert "rolled back" in history and "halted at 50%: error_rate" in history and "> 1%" in history


@pytest.mark.slow
def test_a_canary_whose_predictions_drift_is_rolled_back(made):
    gate = "{min_requests: 40, failure_limit: 1, metrics: [{name: prediction_drift, max: 0.25}]}"
    project = made(rollout(steps="[50, 100]", analysis=gate), collect=True, spread=1.0)
    project.version(2, spread=1.0)  # answers shifted by one standard deviation
    with Load(project.url()) as load:
        applied = project.mlops("apply", "--yes", check=False)
    assert applied.returncode == 1, applied.stdout
    assert "rolled back: halted at 50%: prediction_drift" in applied.stderr and "> 0.25" in applied.stderr
    assert abs(load.answers[-1][1][0] - 1) < 6  # answered, by the stable version again


@pytest.mark.slow
def test_a_canary_whose_traffic_drifts_from_the_baseline_is_rolled_back(made):
    gate = "{min_requests: 40, failure_limit: 1, metrics: [{name: input_drift, max: 0.25}]}"
    project = made(rollout(steps="[50, 100]", analysis=gate), collect=True)
    project.version(2)
    with Load(project.url()):  # every request sends [1.0, 2.0]: far from the baseline's N(0, 1) columns
        applied = project.mlops("apply", "--yes", check=False)
    assert applied.returncode == 1, applied.stdout
    assert "rolled back: halted at 50%: input_drift" in applied.stderr and "> 0.25" in applied.stderr


@pytest.mark.slow
def test_mirror_first_halts_a_failing_canary_before_any_user_gets_it(made):
    project = made(rollout(steps="[50, 100]", mirror_first="2s"))
    project.version(2, fail=1.0)
    with Load(project.url()) as load:
        applied = project.mlops("apply", "--yes", check=False)
    assert applied.returncode == 1 and "mirror: every request copied to blue-canary" in applied.stdout
    assert "rolled back: halted at mirror phase: error_rate" in applied.stderr and "step 1/2" not in applied.stdout
    assert load.answers and load.seen == {(200, (1,))}  # only the stable version ever answered


@pytest.mark.slow
def test_a_canary_twice_as_slow_fails_the_latency_ratio(made):
    project = made(rollout(steps="[25, 50, 75, 100]", analysis=RATIO), sleep=0.06)
    project.version(2, sleep=0.12)
    with Load(project.url()):
        applied = project.mlops("apply", "--yes", check=False)
    assert applied.returncode == 1 and "latency_p99_ratio" in applied.stderr and "> 1.5" in applied.stderr, \
        applied.stdout


@pytest.mark.slow
def test_no_traffic_is_inconclusive_until_the_deadline_then_rolls_back(made):
    project = made(rollout(steps="[50, 100]", progress_deadline="4s"))
    project.version(2)
    begun = time.monotonic()
    applied = project.mlops("apply", "--yes", check=False)
    assert applied.returncode == 1 and time.monotonic() - begun >= 4
    assert "inconclusive, waiting for traffic" in applied.stdout
    assert "no verdict within progress_deadline 4s" in applied.stderr
    assert project.state()["phase"] == "rolled_back"


@pytest.mark.slow
def test_a_rolled_back_version_is_not_tried_again_until_mlops_rollout_retry(made):
    project = made(rollout(steps="[50, 100]", progress_deadline="3s"))
    project.version(2)
    assert project.mlops("apply", "--yes", check=False).returncode == 1  # no traffic: rolled back at 3 s
    again = project.mlops("apply", "--yes", check=False)
    assert again.returncode == 1 and "scorer:2 was rolled back from web/blue" in again.stderr
    assert "mlops rollout retry web --deployment blue" in again.stderr and "inconclusive" not in again.stdout
    assert "not tried again by itself" in project.mlops("rollout", "status", "web").stdout
    outcomes = [line.split("  ")[4] for line in project.mlops("history").stdout.splitlines() if line.startswith("#")]
    assert outcomes[-2:] == ["rolled back", "failed"], outcomes  # the refusal is no second rollback
    project.mlops("rollout", "retry", "web")
    retried = project.mlops("apply", "--yes", check=False)
    assert "canary blue-canary runs scorer:2" in retried.stdout and "no verdict within" in retried.stderr


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def apply_killed_when(project: Project, reached, meanwhile=lambda: None) -> None:
    """An apply killed with SIGKILL once its rollout has ``reached`` (a test of the saved state), after
    ``meanwhile`` ran while it drives the rollout."""
    running = project.spawn("apply", "--yes")
    wait_for(lambda: reached(project.state()))
    meanwhile()
    os.kill(running.pid, signal.SIGKILL)
    running.wait()


@pytest.mark.slow
def test_an_apply_killed_at_step_2_resumes_at_step_2(made):
    project = made(rollout(interval="3s"))
    project.version(2)
    with Load(project.url()) as load:
        apply_killed_when(project, lambda state: state.get("step") == 1 and state.get("weight") == 50)
        resumed = project.mlops("apply", "--yes").stdout
    assert "resuming the rollout of scorer:2 at step 2 (50%)" in resumed
    assert "step 1/3" not in resumed and "step 2/3: 50%" in resumed and "promoted scorer:2" in resumed
    assert load.answers[-1] == (200, [2])


@pytest.mark.slow
def test_a_killed_rollout_shows_as_interrupted_and_a_revert_ends_it(made):
    project = made(rollout(interval="3s"))
    driven: list[str] = []
    project.version(2)
    with Load(project.url()) as load:
        apply_killed_when(project, lambda state: state.get("weight") == 20, meanwhile=lambda: driven.append(
            project.mlops("rollout", "status", "web").stdout))
        assert "interrupted" not in driven[0]  # an apply drove it
        status = project.mlops("rollout", "status", "web").stdout
        assert "scorer:2 step, step 1/3, 20% to blue-canary" in status
        assert "interrupted: no mlops apply is running" in status
        project.version(1)  # the change is reverted before anyone applies again
        reverted = project.mlops("apply", "--yes").stdout
        time.sleep(0.5)
    assert "outlived its rollout" in reverted
    status = project.mlops("rollout", "status", "web").stdout
    assert "scorer:2 abandoned" in status and "interrupted" not in status
    assert "its canary was removed at 20%" in status
    assert load.answers[-1] == (200, [1])
    web = next(r for r in json.loads(project.mlops("status", "--format", "json").stdout) if r["endpoint"] == "web")
    assert [d["name"] for d in web["deployments"]] == ["blue"]


@pytest.mark.slow
def test_pause_before_promote_waits_for_mlops_rollout_promote(made):
    project = made(rollout(steps="[50, 100]", pause_before_promote="true"))
    project.version(2)
    with Load(project.url()):
        running = project.spawn("apply", "--yes")
        wait_for(lambda: project.state().get("phase") == "paused")
        time.sleep(1.5)
        assert running.poll() is None and project.state()["phase"] == "paused"
        assert "waiting for mlops rollout promote" in project.mlops("rollout", "status", "web").stdout
        project.mlops("rollout", "promote", "web")
        output, _ = running.communicate(timeout=120)
    assert running.returncode == 0, output
    assert "promote requested by mlops rollout promote" in output and "promoted scorer:2" in output


def env_images(client) -> set[str]:
    return {tag for image in client.images.list() for tag in image.tags if "mlops-env-plain" in tag}


@pytest.mark.slow
@pytest.mark.docker
def test_the_docker_target_rolls_out_too(made, docker_engine):
    before = env_images(docker_engine)
    project = None
    try:
        project = made(rollout(steps="[50, 100]"), target="box")
        project.version(2)
        with Load(project.url()) as load:
            applied = project.mlops("apply", "--yes").stdout
            time.sleep(0.5)
        assert "step 1/2: 50% to blue-canary" in applied and "promoted scorer:2" in applied
        assert load.answers[-1] == (200, [2])
    finally:
        if project is not None:
            project.mlops("destroy", "--yes", check=False)  # its containers first, then the images it built
        for tag in env_images(docker_engine) - before:
            try:
                docker_engine.images.remove(tag)
            except Exception:  # noqa: BLE001 - in use by someone else's container: theirs now
                pass
