"""``mlops export``: the bundle loads and answers on a fresh engine with no network, and its manifests hold
the fields their runners require. The fresh engine is a private ``dockerd`` (no bridge, no iptables) with an
empty data root: the tarball is the only image there. The container runs with ``--network none`` (no
interface but loopback, so nothing can be fetched at start) and is scored from inside with ``docker exec``
and Python's urllib over loopback: publishing a port would need a network, and would prove less."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.builders.export import CREATE_OPTIONS_CHUNK, create_options_chunks, verify_sums

pytestmark = [pytest.mark.slow, pytest.mark.docker]
REPO = Path(__file__).resolve().parents[2]
MODEL = "iris-classifier"


def mlops(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["python", "-m", "pipeline.cli.main", *args], cwd=root, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, f"mlops {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def bundle(docker_engine, tmp_path_factory):
    """The example repository's model exported once (oci-archive)."""
    root = tmp_path_factory.mktemp("edge") / "repo"
    root.mkdir()
    for folder in ("models", "environments"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copy(REPO / "mlops.yaml", root / "mlops.yaml")
    (root / ".gitignore").write_text(".mlops/\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "model"], cwd=root, check=True)
    mlops(root, "models", "register", "models/iris", "--name", MODEL, "--flavor", "sklearn")
    out = root / "bundle"
    base = os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")
    mlops(root, "export", f"{MODEL}:1", "--output", str(out), "--base-image", base)
    yield {"root": root, "out": out, "base": base, "bundle": json.loads((out / "bundle.json").read_text())}
    made = json.loads((out / "bundle.json").read_text())
    for ref in (made["image"], made["environment_image"]):  # this test's project id: its images only
        docker_engine.images.remove(ref, force=True)


@pytest.fixture(scope="module")
def fresh_engine():
    """A private dockerd with an empty data root (its own socket, pid file and exec root), stopped after:
    the one the edge benchmark loads bundles into."""
    if not shutil.which("dockerd"):
        pytest.skip("no dockerd to start a fresh engine")
    spec = importlib.util.spec_from_file_location("bench_edge", REPO / "bench" / "edge.py")
    bench_edge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_edge)
    with bench_edge.empty_engine() as env:
        yield env


PROBE = """
import json, sys, time, urllib.request
def call(path, body=None):
    request = urllib.request.Request("http://127.0.0.1:8080" + path, data=body and json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer edge-key"})
    return json.load(urllib.request.urlopen(request, timeout=5))
deadline = time.time() + 60
while True:
    try:
        call("/v2/health/ready"); break
    except Exception:
        if time.time() > deadline: raise
        time.sleep(0.05)
print(json.dumps({"score": call("/score", {"data": [[5.1, 3.5, 1.4, 0.2]]}),
                  "infer": call("/v2/models/%s/infer" % sys.argv[1], {"inputs": [{"name": "input-0",
                           "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}),
                  "meta": call("/v2/models/%s" % sys.argv[1])}))
"""


def test_the_bundle_loads_and_answers_on_a_fresh_engine_without_network(bundle, fresh_engine):
    out, info = bundle["out"], bundle["bundle"]
    tarball = out / info["tarball"]
    assert verify_sums(out) == []
    sums = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    images = subprocess.run(["docker", "images", "-q"], env=fresh_engine, capture_output=True, text=True, check=True)
    assert images.stdout.strip() == ""  # nothing but what the tarball brings
    started = time.monotonic()
    subprocess.run(["docker", "load", "-i", str(tarball)], env=fresh_engine, check=True, capture_output=True)
    keyless = subprocess.run(["docker", "run", "--rm", "--network", "none", info["image"]], env=fresh_engine,
                             capture_output=True, text=True, timeout=120)
    assert keyless.returncode != 0 and "MLOPS_PRIMARY_KEY is not set" in keyless.stderr  # fails closed
    name = f"edge-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none", "--read-only", "--tmpfs", "/tmp",
                    "-e", "MLOPS_PRIMARY_KEY=edge-key", info["image"]], env=fresh_engine, check=True,
                   capture_output=True)
    try:
        probe = subprocess.run(["docker", "exec", name, "python", "-c", PROBE, MODEL], env=fresh_engine,
                               capture_output=True, text=True, timeout=120)
        first_answer = time.monotonic() - started
        logs = subprocess.run(["docker", "logs", name], env=fresh_engine, capture_output=True, text=True).stderr
        assert probe.returncode == 0, probe.stderr + logs
        answers = json.loads(probe.stdout)
        inspect = json.loads(subprocess.run(["docker", "inspect", name], env=fresh_engine, capture_output=True,
                                            text=True, check=True).stdout)[0]
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=fresh_engine, capture_output=True)
    assert answers["score"] and answers["infer"]["outputs"]
    assert answers["meta"]["name"] == MODEL and [str(v) for v in answers["meta"]["versions"]] == ["1"]
    assert list(inspect["NetworkSettings"]["Networks"]) == ["none"]
    assert "(sklearn, its kept linear form)" in logs  # computed in the environment image when it was built
    print(f"\nexport: tarball {tarball.stat().st_size / 1e6:.1f} MB, image {info['image_size'] / 1e6:.1f} MB; "
          f"docker load -> first answered request {first_answer:.1f} s")


def test_the_oci_archive_carries_the_annotations(bundle):
    if not shutil.which("skopeo"):
        pytest.skip("no skopeo")
    out, info = bundle["out"], bundle["bundle"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out / info['tarball']}"], capture_output=True,
                         text=True, check=True).stdout
    annotations = json.loads(raw)["annotations"]
    for key in ("version", "revision", "source", "created"):
        assert annotations[f"org.opencontainers.image.{key}"]
    assert annotations["org.opencontainers.image.version"] == "1"
    assert annotations["mlops.model.name"] == MODEL and annotations["mlops.model.digest"] == info["digest"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=bundle["root"], capture_output=True, text=True).stdout
    assert annotations["org.opencontainers.image.revision"] == head.strip()
    labels = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{out / info['tarball']}"],
                                       capture_output=True, text=True, check=True).stdout)["Labels"]
    assert labels["mlops.model.version"] == "1"


def test_bundle_json_describes_how_to_run_it(bundle):
    info = bundle["bundle"]
    assert info["model"] == MODEL and info["version"] == 1 and info["flavor"] == "sklearn"
    assert info["digest"].startswith("sha256:") and info["image_id"].startswith("sha256:")
    assert info["ports"] == [{"container": 8080, "protocol": "tcp"}]
    assert info["health_path"] == "/v2/health/live" and info["readiness_path"] == "/v2/health/ready"
    assert "MLOPS_PRIMARY_KEY" in info["env"] and info["signature"]["inputs"]


def test_an_unchanged_model_and_environment_exports_nothing(bundle):
    out = bundle["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = mlops(bundle["root"], "export", f"{MODEL}:1", "--output", str(out), "--base-image", bundle["base"])
    assert "nothing exported" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert json.loads((out / "bundle.json").read_text())["content_digest"] == bundle["bundle"]["content_digest"]


def test_another_format_into_the_same_folder_needs_overwrite(bundle):
    result = subprocess.run(["python", "-m", "pipeline.cli.main", "export", f"{MODEL}:1", "--output",
                             str(bundle["out"]), "--format", "docker-archive", "--base-image", bundle["base"]],
                            cwd=bundle["root"], capture_output=True, text=True, env={**os.environ,
                                                                                   "PYTHONPATH": str(REPO)})
    assert result.returncode != 0 and "--overwrite" in result.stderr


def test_iotedge_deployment_has_the_required_fields(bundle):
    manifest = json.loads((bundle["out"] / "iotedge.deployment.json").read_text())
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert agent["schemaVersion"] and agent["runtime"]["type"] == "docker"
    assert {"edgeAgent", "edgeHub"} <= set(agent["systemModules"])
    assert manifest["modulesContent"]["$edgeHub"]["properties.desired"]["routes"] == {}
    module = agent["modules"]["iris-classifier"]
    assert module["type"] == "docker" and module["status"] == "running" and module["restartPolicy"] == "always"
    settings = module["settings"]
    assert settings["image"] == bundle["bundle"]["image"]
    options = json.loads("".join(settings[k] for k in sorted(settings) if k.startswith("createOptions")))
    assert options["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostPort": "8080"}]
    assert module["env"]["MLOPS_PRIMARY_KEY"]["value"] == "${MLOPS_PRIMARY_KEY}"  # filled on deploy, never here


def test_create_options_are_split_in_512_character_parts():
    big = {"Env": ["X=" + "y" * 1500]}
    parts = create_options_chunks(big)
    assert list(parts) == ["createOptions", "createOptions01", "createOptions02"]
    assert all(len(p) == CREATE_OPTIONS_CHUNK for p in list(parts.values())[:-1])
    assert json.loads("".join(parts.values())) == big


def test_greengrass_recipe_has_the_required_fields(bundle):
    recipe = yaml.safe_load((bundle["out"] / "greengrass.recipe.yaml").read_text())
    for key in ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests"):
        assert recipe[key]
    assert recipe["RecipeFormatVersion"] == "2020-01-25" and recipe["ComponentVersion"] == "1.0.0"
    manifest = recipe["Manifests"][0]
    tarball = bundle["bundle"]["tarball"]
    assert manifest["Lifecycle"]["Install"]["Script"] == f"docker load -i {{artifacts:path}}/{tarball}"
    assert "docker run" in manifest["Lifecycle"]["Run"]["Script"] and "-e MLOPS_PRIMARY_KEY" in \
        manifest["Lifecycle"]["Run"]["Script"]
    artifact = manifest["Artifacts"][0]
    assert artifact["URI"].endswith(tarball)
    assert artifact["Digest"] == hashlib.sha256((bundle["out"] / tarball).read_bytes()).hexdigest()


def test_compose_file_is_accepted(bundle):
    out = bundle["out"]
    text = (out / "docker-compose.yaml").read_text()
    assert "edge-key" not in text and "MLOPS_PRIMARY_KEY" in text
    tool = ["docker-compose"] if shutil.which("docker-compose") else None
    if tool is None:
        compose = yaml.safe_load(text)["services"]["iris-classifier"]
        assert compose["image"] == bundle["bundle"]["image"] and compose["restart"] == "always"
        return
    result = subprocess.run([*tool, "-f", str(out / "docker-compose.yaml"), "config"], capture_output=True, text=True,
                            env={**os.environ, "MLOPS_PRIMARY_KEY": "k"})
    assert result.returncode == 0, result.stderr
    assert bundle["bundle"]["image"] in result.stdout
