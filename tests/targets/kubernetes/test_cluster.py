"""The real CLI against a real cluster, end to end: apply, score, a model-only update under load, a pod
deleted by hand, a rollout that never gets ready, destroy.

Skipped unless ``KUBECONFIG`` points at a reachable cluster, ``MLOPS_K8S_IMAGE_REPOSITORY`` names a
registry the cluster pulls from and this machine pushes to (kind: a local registry, see README
"Deploying to Kubernetes"), ``kubectl`` is installed and a Docker engine builds the images
(``DOCKER_HOST``). ``MLOPS_TEST_BASE_IMAGE`` overrides the environments' base (``python:3.11-slim``).
Everything happens in a namespace of its own, deleted at the end. Slow: the never-ready rollout waits
for the Deployment's progress deadline (10 minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.spec.loader import load
from pipeline.targets.kubernetes.client import ApiError, KubeClient
from pipeline.targets.kubernetes.manifests import PORT, object_name

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
IMAGE_REPOSITORY = os.environ.get("MLOPS_K8S_IMAGE_REPOSITORY", "")
ROW = {"data": [[5.1, 3.5, 1.4, 0.2]]}
BROKEN_SCORE = "def init():\n    raise RuntimeError('this model never loads')\n\n\ndef run(data):\n    return data\n"
# everything mlops creates in the namespace, by kind (what destroy must leave none of)
KINDS = "deployments,replicasets,pods,services,configmaps,secrets,poddisruptionbudgets,horizontalpodautoscalers"


def _reachable() -> bool:
    if not os.environ.get("KUBECONFIG") or not IMAGE_REPOSITORY or not shutil.which("kubectl"):
        return False
    try:
        KubeClient("default").list("v1", "Service")
        return True
    except ApiError:
        return False


if not _reachable():
    pytest.skip("no reachable cluster (KUBECONFIG), no MLOPS_K8S_IMAGE_REPOSITORY or no kubectl",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kubectl(*args: str, check: bool = True) -> str:
    done = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


class Project:
    """A copy of the repository's example whose endpoint runs on the cluster, driven through the CLI."""

    def __init__(self, root: Path, namespace: str):
        self.root, self.namespace = root, namespace
        for folder in ("models", "environments"):
            shutil.copytree(REPO / folder, root / folder)
        (root / "models" / "broken").mkdir()
        (root / "models" / "broken" / "score.py").write_text(BROKEN_SCORE)
        data = yaml.safe_load((REPO / "mlops.yaml").read_text())
        data["targets"] = {"cluster": {"type": "kubernetes", "namespace": namespace,
                                       "image_repository": IMAGE_REPOSITORY, "routing": "router",
                                       "base_image": os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")}}
        endpoint = data["endpoints"]["iris"]
        endpoint.update(target="cluster", traffic={"blue": 100})
        # two instances (an update rolls one at a time); readiness waits 15 s, so a pod deleted by hand is
        # missing long enough for the plan to see it
        endpoint["deployments"]["blue"].update(instance_count=2, readiness_probe={"initial_delay": 15, "period": 1})
        self.data = data
        self.write()
        self.file = root / "mlops.yaml"

    def write(self) -> None:
        (self.root / "mlops.yaml").write_text(yaml.safe_dump(self.data, sort_keys=False))

    def mlops(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        env.pop("CI", None)  # the embedded registry is this test's own
        return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "-f", str(self.root / "mlops.yaml"),
                               *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)

    def apply(self) -> subprocess.CompletedProcess:
        done = self.mlops("apply", "--yes", "--lock-timeout", "5m")
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def plan_code(self) -> tuple[int, str]:
        done = self.mlops("plan", "--detailed-exitcode")
        assert done.returncode in (0, 2), done.stdout + done.stderr
        return done.returncode, done.stdout

    def served(self) -> str:
        rows = json.loads(self.mlops("status", "--format", "json").stdout)
        return next(d["model"] for row in rows for d in row["deployments"] if d["name"] == "blue")

    def key(self) -> str:
        done = self.mlops("endpoints", "keys", "iris", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["primary"]


class Forward:
    """``kubectl port-forward`` of the endpoint's Service: the endpoint as a client outside the cluster sees it."""

    def __init__(self, namespace: str, key: str):
        self.port = _free_port()
        self.process = subprocess.Popen(
            ["kubectl", "-n", namespace, "port-forward", f"service/{object_name('iris')}", f"{self.port}:{PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}",
                                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.score().status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise AssertionError("the endpoint never answered through kubectl port-forward")
            time.sleep(1)

    def score(self) -> httpx.Response:
        return self.client.post("/score", json=ROW)

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    namespace = f"mlops-test-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    try:
        yield Project(tmp_path, namespace)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.timeout(3600)
def test_apply_update_under_load_heal_roll_back_destroy(project: Project):
    # apply: environment image + model image built, pushed and pinned; the endpoint serves
    project.apply()
    assert project.served() == "iris-classifier:1"
    forward = Forward(project.namespace, project.key())
    try:
        assert forward.score().status_code == 200

        # a model-only update while a client scores continuously: not one request fails
        failures: list[str] = []
        answered = 0
        stop = threading.Event()

        def keep_scoring() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    response = forward.score()
                    if response.status_code != 200:
                        failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    answered += 1
                except httpx.HTTPError as error:
                    failures.append(repr(error))
                time.sleep(0.02)

        scorer = threading.Thread(target=keep_scoring)
        scorer.start()
        try:
            (project.root / "models" / "iris" / "NOTES.md").write_text("retrained on more data\n")
            code, plan = project.plan_code()
            assert code == 2 and "iris-classifier" in plan, plan
            project.apply()
        finally:
            stop.set()
            scorer.join()
        assert project.served() == "iris-classifier:2"
        assert not failures and answered > 50, (failures[:5], answered)

        # a pod deleted by hand: the plan shows the drift, the next apply heals it
        pods = kubectl("-n", project.namespace, "get", "pods", "-o", "jsonpath={.items[0].metadata.name}",
                       "-l", "mlops.dev/endpoint=iris,mlops.dev/deployment=blue")
        kubectl("-n", project.namespace, "delete", "pod", pods, "--wait=false")
        code, plan = project.plan_code()
        assert code == 2 and "iris/blue" in plan, plan
        project.apply()
        assert project.plan_code()[0] == 0

        # a model whose init raises never gets ready: apply exits 1 with the pods' events and logs,
        # the previous spec is applied back and keeps serving
        good = yaml.safe_dump(project.data, sort_keys=False)
        project.data["models"]["broken"] = {"path": "models/broken", "flavor": "python"}
        project.data["endpoints"]["iris"]["deployments"]["blue"]["model"] = "broken"
        project.write()
        failed = project.mlops("apply", "--yes")
        output = failed.stdout + failed.stderr
        assert failed.returncode == 1, output
        assert "did not roll out" in output and "applied back" in output, output
        assert "events:" in output and "Last lines of its log" in output, output
        assert forward.score().status_code == 200
        assert project.served() == "iris-classifier:2"
        (project.root / "mlops.yaml").write_text(good)
        project.data = yaml.safe_load(good)
        assert project.plan_code()[0] == 0
    finally:
        forward.close()

    # destroy: nothing with the project's label is left, and no apply holds the namespace's Lease
    project_id = load(project.file).project_id()
    done = project.mlops("destroy", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 120
    while kubectl("-n", project.namespace, "get", KINDS, "-l", f"mlops.dev/project={project_id}", "-o", "name"):
        assert time.monotonic() < deadline, "objects of the project are left after destroy"
        time.sleep(2)
    assert not kubectl("-n", project.namespace, "get", "leases", "-o", "name").strip()
