"""The Docker target on a real engine: build, deploy, model-only update, drift, a failing build."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.docker]

IRIS = [[5.1, 3.5, 1.4, 0.2]]


def engine_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory):
    if not engine_available():
        if os.environ.get("MLOPS_REQUIRE_DOCKER") == "1":
            pytest.fail("no Docker engine reachable, but MLOPS_REQUIRE_DOCKER=1 (CI starts one: .ci/docker.sh)")
        pytest.skip("no Docker engine reachable (set DOCKER_HOST)")
    from pipeline.build import ensure_wheelhouse

    repo = Path(__file__).resolve().parents[2]
    wheels = ensure_wheelhouse(tmp_path_factory.mktemp("wheels"), [repo / "environments/sklearn/requirements.txt"])
    return {"MLOPS_WHEELHOUSE": str(wheels),
            "base": os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")}


def test_docker_lifecycle(repo, docker_env, monkeypatch):
    monkeypatch.setenv("MLOPS_WHEELHOUSE", docker_env["MLOPS_WHEELHOUSE"])
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

    repo.mlops("apply", "--yes", timeout=600)  # builds the image unless an identical one exists
    import docker

    images = [tag for image in docker.from_env().images.list() for tag in image.tags]
    assert any(tag.startswith("mlops-env-sklearn:") for tag in images)
    assert repo.score(IRIS).json() == {"predictions": [0]}
    url, headers = repo.endpoint()
    infer = httpx.post(f"{url}/v2/models/iris-classifier/infer", headers=headers, json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": IRIS[0]}]})
    assert infer.status_code == 200 and infer.json()["outputs"][0]["data"] == [0]
    collected = list((repo.root / ".mlops" / "data" / "iris" / "blue").rglob("*.jsonl"))
    assert collected  # written by the container into the host folder

    # a model-only change: no build, a rolling update with no failed request
    (repo.root / "models" / "iris" / "NOTES.md").write_text("v2\n")
    repo.commit("model v2")
    plan = repo.mlops("plan").stdout
    assert "build" not in plan and "register" in plan
    failures, stop = [], threading.Event()

    def load():
        with httpx.Client(headers=headers, timeout=10) as client:
            while not stop.is_set():
                try:
                    if client.post(f"{url}/score", json={"data": IRIS}).status_code != 200:
                        failures.append("status")
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        updated = repo.mlops("apply", "--yes", timeout=300)
    finally:
        stop.set()
        thread.join()
    assert "✓ build" not in updated.stdout and not failures

    # a container stopped by hand is drift, and apply heals it
    for container in docker.from_env().containers.list(filters={"label": "mlops.endpoint=iris"}):
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
