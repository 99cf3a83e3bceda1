"""``type: edge`` through the real CLI and the real Docker engine: apply writes the bundle (and pushes its image to a
loopback image repository when the ``docker-registry`` server is installed), a second plan sees no change, a new
model version is planned as an export step and apply rewrites the bundle, ``status`` lists it, ``destroy`` removes
it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.builders.export import verify_sums
from pipeline.targets.health import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]
REPO = Path(__file__).resolve().parents[2]
BASE = os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")

SPEC = """\
version: 1
registry: .mlops/registry
models:
  iris-classifier: {{path: models/iris, flavor: sklearn, baseline: models/iris/baseline.csv}}
environments:
  sklearn: {{python: "3.11", requirements: environments/sklearn/requirements.txt}}
targets:
  devices: {{type: edge, output: dist/edge, base_image: "{base}"{push}}}
endpoints:
  iris:
    target: devices
    deployments:
      edge: {{model: iris-classifier, environment: sklearn}}
"""


@pytest.fixture
def image_repository(tmp_path):
    """A loopback image registry (the ``docker-registry`` server) for this test, or None where it is not installed."""
    if not shutil.which("docker-registry"):
        yield None
        return
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog: {{level: warn}}\nhttp: {{addr: 127.0.0.1:{port}}}\n"
                      f"storage: {{filesystem: {{rootdirectory: {tmp_path}/images}}}}\n")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_apply_writes_the_bundle_and_rewrites_it_only_when_the_model_changes(repo, docker_engine, image_repository):
    root = repo.root
    shutil.copytree(REPO / "environments", root / "environments")
    push = f", image_repository: {image_repository}/edge" if image_repository else ""
    (root / "mlops.yaml").write_text(SPEC.format(base=BASE, push=push))
    (root / ".gitignore").write_text(".mlops/\ndist/\n")
    repo.commit("edge")
    folder = root / "dist" / "edge" / "iris-edge"
    made: set[str] = set()
    try:
        first = repo.mlops("plan")
        assert "+ export   deployment.iris/edge  (new bundle of iris-classifier:1 → dist/edge/iris-edge)" \
            in first.stdout
        repo.mlops("apply", "--yes", timeout=900)
        bundle = json.loads((folder / "bundle.json").read_text())
        made |= {bundle["image"], bundle["environment_image"]}
        assert bundle["model"] == "iris-classifier" and bundle["version"] == 1 and verify_sums(folder) == []
        assert "MLOPS_PRIMARY_KEY" not in json.dumps(docker_engine.images.get(bundle["image"]).attrs["Config"]["Env"])
        if image_repository:
            pushed = json.loads((folder / "pushed.json").read_text())
            assert pushed["image"] == f"{image_repository}/edge/{bundle['image']}"
            catalog = json.load(urllib.request.urlopen(f"http://{image_repository}/v2/_catalog", timeout=5))
            assert catalog["repositories"] == ["edge/mlops-edge-iris-classifier"]
        assert repo.mlops("plan", "--detailed-exitcode").stdout.startswith("No changes.")

        status = json.loads(repo.mlops("status", "--format", "json").stdout)
        assert status == [{"endpoint": "iris", "target": "devices", "bundles": [{
            "name": "edge", "model": "iris-classifier:1", "status": "running", "folder": str(folder),
            "tarball": "iris-classifier-1.oci.tar",
            "tarball_size": (folder / "iris-classifier-1.oci.tar").stat().st_size,
            "image_size": bundle["image_size"], "content_digest": bundle["content_digest"], "image": bundle["image"],
            "pushed": f"{image_repository}/edge/mlops-edge-iris-classifier@{pushed['digest']}" if image_repository
            else None, "damaged": []}]}]

        (root / "models" / "iris" / "NOTES.md").write_text("retrained on more data\n")
        repo.commit("retrained")
        changed = repo.mlops("plan", "--detailed-exitcode", check=False)
        assert changed.returncode == 2
        assert "± export   deployment.iris/edge  (rewrite dist/edge/iris-edge: model iris-classifier:1 → " \
               "iris-classifier:2)" in changed.stdout
        assert "build" not in changed.stdout  # the environment image is reused
        repo.mlops("apply", "--yes", timeout=900)
        rewritten = json.loads((folder / "bundle.json").read_text())
        made.add(rewritten["image"])
        assert rewritten["version"] == 2 and rewritten["content_digest"] != bundle["content_digest"]
        assert sorted(p.name for p in folder.glob("*.tar")) == ["iris-classifier-2.oci.tar"]  # the old one is gone
        assert repo.mlops("plan", "--detailed-exitcode").stdout.startswith("No changes.")
        repo.mlops("destroy", "--yes")
        assert not folder.exists() and (root / "dist" / "edge").is_dir()  # the bundle goes, the output folder stays
    finally:
        for ref in made:  # this test's images only
            try:
                docker_engine.images.remove(ref, force=True)
            except Exception:
                pass
