"""Against a real cluster: skipped unless ``KUBECONFIG`` points at a reachable one and
``MLOPS_K8S_MODEL_IMAGE`` names an image (by digest) holding the example model at ``MODEL_DIR``
(the builder that bakes models into images does not exist yet)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from pipeline.state import RUNNING
from pipeline.targets.kubernetes.adapter import KubernetesTarget
from pipeline.targets.kubernetes.client import ApiError, KubeClient
from tests.targets.kubernetes.test_manifests import example, requests

pytestmark = pytest.mark.cluster
IMAGE = os.environ.get("MLOPS_K8S_MODEL_IMAGE", "")


def _reachable() -> bool:
    if not os.environ.get("KUBECONFIG") or not IMAGE or not shutil.which("kubectl"):
        return False
    try:
        KubeClient("default").list("v1", "Service")
        return True
    except ApiError:
        return False


if not _reachable():
    pytest.skip("no reachable cluster (KUBECONFIG) or no MLOPS_K8S_MODEL_IMAGE", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_apply_score_heal_destroy(tmp_path: Path):
    spec = example(tmp_path)
    adapter = KubernetesTarget(spec.targets["cluster"], spec.state_dir(), project=spec.project_id(),
                               model_image=lambda request: IMAGE)
    endpoint = spec.endpoints["iris"]
    try:
        adapter.ensure_endpoint(endpoint)
        for request in requests(spec, secrets=True):
            assert adapter.deploy(request).status == RUNNING
        adapter.set_traffic("iris", endpoint.traffic, endpoint.mirror_traffic)
        port = _free_port()
        forward = subprocess.Popen(["kubectl", "-n", adapter.namespace, "port-forward", "service/iris",
                                    f"{port}:8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            key = adapter.keys("iris")["primary"]
            answer = None
            for _ in range(60):
                try:
                    answer = httpx.post(f"http://127.0.0.1:{port}/score", headers={"Authorization": f"Bearer {key}"},
                                        json={"data": [[5.1, 3.5, 1.4, 0.2]]}, timeout=5)
                    break
                except httpx.HTTPError:
                    time.sleep(1)
            assert answer is not None and answer.status_code == 200, answer and answer.text
        finally:
            forward.terminate()
        pod = adapter._pods("iris", "blue")[0]["metadata"]["name"]
        adapter.client.delete("v1", "Pod", pod)  # by hand: the Deployment heals it
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            blue = next(d for d in adapter.observe()[1] if d.name == "blue")
            if blue.status == RUNNING and pod not in [p["metadata"]["name"] for p in adapter._pods("iris", "blue")]:
                break
            time.sleep(2)
        else:
            pytest.fail("the deleted pod was not replaced")
    finally:
        adapter.delete_endpoint("iris")
    assert adapter.observe() == ([], [])
    assert not adapter.client.list("apps/v1", "Deployment", f"mlops.dev/project={spec.project_id()}")
