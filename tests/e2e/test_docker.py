"""The Docker target on a real engine: build, deploy, model-only update, drift, a failing build;
two projects on one engine, destroy with the engine down, how containers run.

Tests touch only what they created: containers are found by their project's label, and the
module removes only the environment images that did not exist before it ran.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.docker]

IRIS = [[5.1, 3.5, 1.4, 0.2]]


def env_tags(client) -> set[str]:
    return {tag for image in client.images.list() for tag in image.tags if tag.split("/")[-1].startswith("mlops-env-")}


@pytest.fixture(scope="module")
def docker_env(docker_engine):
    import docker

    client = docker_engine
    before = env_tags(client)
    yield {"base": os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")}
    for tag in env_tags(client) - before:  # only the images these tests built
        try:
            client.images.remove(tag)
        except docker.errors.APIError:
            pass  # in use by someone else's container: theirs now


@pytest.fixture
def docker_repo(repo, docker_env):
    """The conftest repository with its endpoint on a docker target named ``box``."""
    shutil.copytree(Path(__file__).resolve().parents[2] / "environments", repo.root / "environments")
    spec = (repo.root / "mlops.yaml").read_text()
    spec = spec.replace("  local: {type: local}", f'  box: {{type: docker, base_image: "{docker_env["base"]}"}}')
    spec = spec.replace("    target: local", "    target: box")
    spec = spec.replace("        model: iris-classifier\n",
                        "        model: iris-classifier\n        environment: sklearn\n")
    spec = spec.replace("models:\n",
                        "environments:\n  sklearn: {requirements: environments/sklearn/requirements.txt}\nmodels:\n")
    (repo.root / "mlops.yaml").write_text(spec)
    repo.commit("docker target")
    return repo


def containers(repo, **labels) -> list:
    """The containers of ``repo``'s project on its target ``box`` (found by the labels mlops sets)."""
    import docker

    from pipeline.cli.wiring import make_targets
    from pipeline.spec.loader import load

    spec = load(repo.root / "mlops.yaml")
    target = make_targets(spec, spec.state_dir())["box"]
    wanted = {"mlops.project": target.project, "mlops.target": "box", **{f"mlops.{k}": v for k, v in labels.items()}}
    return docker.from_env().containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in wanted.items()]})


def load_loop(url: str, headers: dict, stop: threading.Event, failures: list, sent: list, limit: int = 20000):
    """Score until ``stop`` is set (or ``limit`` requests), recording every failure."""
    with httpx.Client(headers=headers, timeout=10) as client:
        while not stop.is_set() and len(sent) < limit:
            sent.append(1)
            try:
                if client.post(f"{url}/score", json={"data": IRIS}).status_code != 200:
                    failures.append("status")
            except httpx.HTTPError as error:
                failures.append(repr(error))


def test_docker_lifecycle(docker_repo):
    repo = docker_repo
    repo.mlops("apply", "--yes", timeout=600)  # builds the image unless an identical one exists
    assert [c.image.tags[0].split(":")[0] for c in containers(repo)] == ["mlops-env-sklearn"]
    assert repo.score(IRIS).json() == {"predictions": [0]}
    url, headers = repo.endpoint()
    infer = httpx.post(f"{url}/v2/models/iris-classifier/infer", headers=headers, json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": IRIS[0]}]})
    assert infer.status_code == 200 and infer.json()["outputs"][0]["data"] == [0]
    folder, deadline = repo.root / ".mlops" / "data" / "iris" / "blue", time.monotonic() + 10
    while not any(folder.rglob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the collector hands over once a second
    assert any(folder.rglob("*.jsonl"))  # written by the (non-root) container into the host folder

    # a model-only change: no build, a rolling update with no failed request
    (repo.root / "models" / "iris" / "NOTES.md").write_text("v2\n")
    repo.commit("model v2")
    plan = repo.mlops("plan").stdout
    assert "build" not in plan and "register" in plan
    failures, sent, stop = [], [], threading.Event()
    thread = threading.Thread(target=load_loop, args=(url, headers, stop, failures, sent))
    thread.start()
    try:
        updated = repo.mlops("apply", "--yes", timeout=300)
    finally:
        stop.set()
        thread.join()
    assert "✓ build" not in updated.stdout and not failures

    # a container stopped by hand is drift, and apply heals it
    for container in containers(repo, endpoint="iris"):
        container.stop(timeout=2)
    drift = repo.mlops("plan").stdout
    assert "drift" in drift and "stopped outside mlops" in drift
    repo.mlops("apply", "--yes", timeout=300)
    assert repo.score(IRIS).status_code == 200

    # a broken requirements file: the build fails with pip's error, nothing changes
    requirements = repo.root / "environments" / "sklearn" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "no-such-package-mlops==9.9\n")
    broken = repo.mlops("apply", "--yes", check=False, timeout=300)
    assert broken.returncode == 1 and "no-such-package-mlops" in broken.stderr and "Traceback" not in broken.stderr
    assert repo.score(IRIS).status_code == 200


def test_two_projects_with_same_target_name_leave_each_other_alone(docker_repo, tmp_path):
    """Project B applying, updating and destroying its ``box`` never stops project A's containers."""
    a = docker_repo
    b = type(a)(tmp_path / "project-b")
    shutil.copytree(a.root, b.root)  # the same files, another repository (before A has any state)
    a.mlops("apply", "--yes", timeout=600)
    serving = {c.id for c in containers(a)}
    url, headers = a.endpoint()
    failures, sent, stop = [], [], threading.Event()
    thread = threading.Thread(target=load_loop, args=(url, headers, stop, failures, sent))
    thread.start()
    try:
        b.mlops("apply", "--yes", timeout=300)
        b.write("models/iris/NOTES.md", "v2\n")
        b.commit("model v2")
        b.mlops("apply", "--yes", timeout=300)
        b.mlops("destroy", "--yes", timeout=120)
    finally:
        stop.set()
        thread.join()
        b.mlops("destroy", "--yes", check=False)
    assert sent and not failures, f"{len(failures)} of {len(sent)} requests to project A failed: {failures[:3]}"
    assert {c.id for c in containers(a) if c.status == "running"} == serving
    assert containers(b) == []


def test_destroy_with_the_engine_down_keeps_records_and_resumes(docker_repo):
    """Nothing is forgotten while its container may still run; the next destroy finishes the job."""
    repo = docker_repo
    repo.mlops("apply", "--yes", timeout=600)
    down = {**os.environ, "DOCKER_HOST": f"unix://{repo.root}/no-engine.sock"}
    failed = repo.mlops("destroy", "--yes", check=False, env=down)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "no Docker engine reachable" in failed.stderr and "records and routes are kept" in failed.stderr
    assert repo.score(IRIS).status_code == 200  # still routed, still serving, still in status
    assert "iris" in repo.mlops("status").stdout and containers(repo)
    repo.mlops("destroy", "--yes", timeout=120)
    assert containers(repo) == []
    assert "Nothing is deployed" in repo.mlops("status").stdout


def test_containers_come_back_after_an_engine_restart(docker_repo):
    """A host or engine reboot must not leave the endpoint without instances."""
    docker_repo.mlops("apply", "--yes", timeout=600)
    (container,) = containers(docker_repo)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_containers_run_as_a_non_root_user(docker_repo):
    """A compromised model server must not be root on the mounted host folders."""
    docker_repo.mlops("apply", "--yes", timeout=600)
    (container,) = containers(docker_repo)
    uid = container.attrs["Config"]["User"].split(":")[0]
    assert uid and uid != "0" and container.top(ps_args="-o pid,uid")["Processes"][0][1] == uid
