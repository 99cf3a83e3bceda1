"""The rendered manifests really run: the example's environment image and model image are built, pushed
to a loopback ``docker-registry``, and its Deployment + ConfigMap are run by ``podman kube play``.

``kube play`` is not a cluster: it ignores Services and cannot read Secrets, and publishes only host
ports. The fixture adapts the rendered objects for it (never the product): the ``${VAR}`` variable as a
plain value, the keys Secret as a host file, a ``hostPort`` on loopback. Podman keeps its storage, run
folder and configuration (``runc``, low default ulimits) under the test's folder, so everything it
made goes with it. Needs a Docker engine (``DOCKER_HOST``) for the builds, and podman, docker-registry.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.builders import ImageBuilder, image_ref
from pipeline.builders.model_image import ModelImages, ModelLayer
from pipeline.plan.model import BuildData
from pipeline.registry.hashing import digest_content
from pipeline.spec.loader import load
from pipeline.spec.model import settings_digest
from pipeline.targets.base import DeployRequest, ResolvedModel
from pipeline.targets.kubernetes import adapter, manifests

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[3]
IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
KEYS = {"primary": "primary-key-0123456789abcdef", "secondary": "secondary-key-fedcba9876543210"}


def _unavailable(reason: str) -> None:
    """Skip where a tool is missing, but fail in CI, which installs it (.ci/run)."""
    if os.environ.get("MLOPS_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason}, but CI requires these tests to run")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url: str, timeout: float, ok=lambda r: r.status_code < 500) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if ok(response):
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's ``docker-registry`` on a loopback port, its own config and storage; yields host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        _unavailable("docker-registry is not installed (apt-get install docker-registry)")
    folder = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{_free_port()}"
    config = folder / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(folder / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": address, "secret": "mlops-test"}}))
    log = open(folder / "registry.log", "wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        _wait(f"http://{address}/v2/", 20, ok=lambda r: r.status_code == 200)
        yield address
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """``podman`` with its storage, run folder and containers.conf under a folder of its own."""
    if shutil.which("podman") is None:
        _unavailable("podman is not installed (apt-get install podman catatonit)")
    folder = tmp_path_factory.mktemp("podman")
    for name in ("root", "run", "tmp"):
        (folder / name).mkdir()
    (folder / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        f'[engine]\nruntime = "runc"\ntmp_dir = "{folder / "tmp"}"\n')
    (folder / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{folder / "root"}"\nrunroot = "{folder / "run"}"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(folder / "containers.conf"),
           "CONTAINERS_STORAGE_CONF": str(folder / "storage.conf")}

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    info = run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode:
        _unavailable(f"podman cannot run here: {info.stderr.strip()[-500:]}")
    try:
        yield run
    finally:
        run("pod", "rm", "--all", "--force", "--time", "5", check=False)
        run("rmi", "--all", "--force", check=False)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(folder))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def example(tmp_path_factory, registry):
    """The repository's example on a kubernetes target pushing to the loopback registry, with one instance."""
    root = tmp_path_factory.mktemp("example")
    for folder in ("models", "environments"):
        shutil.copytree(REPO / folder, root / folder)
    data = yaml.safe_load((REPO / "mlops.yaml").read_text())
    base = os.environ.get("MLOPS_TEST_BASE_IMAGE", "python:3.11-slim")
    data["targets"] = {"cluster": {"type": "kubernetes", "namespace": "ml", "base_image": base,
                                   "image_repository": f"{registry}/ml"}}
    endpoint = data["endpoints"]["iris"]
    endpoint["target"] = "cluster"
    endpoint["deployments"]["blue"].update(instance_count=1, environment_variables={
        "LOG_FORMAT": "json", "DB_PASSWORD": "${DB_PASSWORD}"})
    (root / "mlops.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load(root / "mlops.yaml")


@pytest.fixture(scope="module")
def images(example, docker_engine, registry):
    """The environment image and the model image, built and pushed; removed from the engine afterwards."""
    import docker

    target = example.targets["cluster"]
    builder = ImageBuilder(example, example.state_dir(), progress=lambda line: None)
    environment = "sklearn"
    env_ref = image_ref(environment, builder.context(environment, target.base_image).digest(),
                        target.image_repository)
    started = time.monotonic()
    builder.build(environment, BuildData(environment, env_ref, "", "kubernetes", target.image_repository,
                                         target.base_image))
    env_seconds = time.monotonic() - started
    model_path = example.root / "models" / "iris"
    layer = ModelLayer("iris-classifier", 1, digest_content(model_path).digest, model_path, "sklearn")
    models = ModelImages(builder, target.image_repository, None, manifests.MODEL_DIR)
    started = time.monotonic()
    pinned = models.build(env_ref, layer)
    model_seconds = time.monotonic() - started
    try:
        yield {"env": env_ref, "model": pinned, "layer": layer, "builder": builder, "models": models,
               "seconds": (env_seconds, model_seconds)}
    finally:
        client = builder.client
        for image in client.images.list(filters={"label": f"mlops.project={example.project_id()}"}):
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.APIError:
                pass


def test_model_image_holds_the_model_read_only_and_is_not_rebuilt(images, docker_engine):
    pinned, layer, models = images["model"], images["layer"], images["models"]
    repository = images["env"].rsplit(":", 1)[0].replace("mlops-env-sklearn", "mlops-model-iris-classifier")
    assert pinned.startswith(repository + "@sha256:")
    assert "@sha256:" in pinned and len(pinned.split("@sha256:")[1]) == 64
    builds = models.builds
    started = time.monotonic()
    assert models.build(images["env"], layer) == pinned  # found in the registry: nothing built or pushed
    assert models.builds == builds and time.monotonic() - started < 10
    local = docker_engine.images.get(pinned)
    env = docker_engine.images.get(images["env"])
    assert local.labels["mlops.model"] == "iris-classifier" and local.labels["mlops.model-digest"] == layer.digest
    layers, env_layers = local.attrs["RootFS"]["Layers"], env.attrs["RootFS"]["Layers"]
    # two COPY layers, nothing else: the model, and its linear form computed in the environment image
    assert layers[:-2] == env_layers and len(layers) == len(env_layers) + 2
    derived = f"{manifests.MODEL_DIR}.derived"
    listing = docker_engine.containers.run(
        pinned, ["sh", "-c", f"stat -c '%U %a %n' {manifests.MODEL_DIR} {manifests.MODEL_DIR}/* {derived}/*"],
        remove=True, user=str(manifests.UID)).decode()
    lines = {path: [owner, mode] for owner, mode, path in (line.split(" ", 2) for line in listing.splitlines())}
    assert lines[f"{manifests.MODEL_DIR}/model.skops"] == ["root", "444"]
    assert [mode for path, mode in lines.items() if path.startswith(f"{derived}/linear-")] == [["root", "444"]]
    assert all(owner == "root" and mode in ("444", "555", "755") for owner, mode in lines.values())


def test_podman_kube_play_serves_score_and_open_inference(example, images, podman, tmp_path):
    endpoint = example.endpoints["iris"]
    deployment = endpoint.deployments["blue"]
    model = ResolvedModel("iris-classifier", 1, images["layer"].digest, "sklearn", Path(manifests.MODEL_DIR))
    request = DeployRequest(endpoint, deployment, model, image=images["env"], baseline="baseline.csv",
                            environment_variables={"DB_PASSWORD": "not-a-secret"},
                            settings_digest=settings_digest(endpoint, deployment))
    meta = manifests.Meta.of(example, example.targets["cluster"], "sha256:" + "c" * 64, "d" * 40)
    objects = adapter.target_objects(request, meta, images["model"])
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    workload = next(o for o in objects if o["kind"] == "Deployment")
    assert workload["spec"]["template"]["spec"]["containers"][0]["image"] == images["model"]

    # kube play: no Secrets (the variable as a value, the keys as a host file), a loopback host port
    port = _free_port()
    pod = workload["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["env"] = [{"name": e["name"], "value": "not-a-secret"} if "valueFrom" in e else e
                        for e in container["env"]]
    keys_dir = tmp_path / "keys"  # readable by the service's user, as the Secret's files are
    keys_dir.mkdir(mode=0o755)
    keys_dir.chmod(0o755)
    (keys_dir / manifests.KEYS_FILE).write_text(json.dumps(KEYS))
    (keys_dir / manifests.KEYS_FILE).chmod(0o644)
    for volume in pod["volumes"]:
        if "secret" in volume:
            del volume["secret"]
            volume["hostPath"] = {"path": str(keys_dir), "type": "Directory"}
    container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    play = tmp_path / "play.yaml"
    play.write_text(yaml.safe_dump_all([config, workload], sort_keys=False))

    started = time.monotonic()
    podman("kube", "play", "--tls-verify=false", str(play))
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            ready = _wait(f"{url}/v2/health/ready", 90, ok=lambda r: r.status_code == 200)
        except TimeoutError:
            names = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
            logs = "\n".join(podman("logs", "--tail", "30", n.split()[0], check=False).stderr
                             + podman("logs", "--tail", "30", n.split()[0], check=False).stdout
                             for n in names.splitlines() if n.strip())
            pytest.fail(f"the pod never became ready:\n{names}\n{logs}")
        ready_seconds = time.monotonic() - started
        assert ready.status_code == 200
        headers = {"Authorization": f"Bearer {KEYS['primary']}"}
        assert httpx.post(f"{url}/score", json={"data": IRIS}, timeout=10).status_code == 401
        score = httpx.post(f"{url}/score", json={"data": IRIS}, headers=headers, timeout=10)
        assert score.status_code == 200, score.text
        predictions = score.json()["predictions"]
        assert len(predictions) == 2
        infer = httpx.post(f"{url}/v2/models/iris-classifier/infer", headers=headers, timeout=10, json={
            "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": IRIS}]})
        assert infer.status_code == 200, infer.text
        outputs = infer.json()["outputs"]
        assert outputs and outputs[0]["data"] == predictions
        print(f"\nready after {ready_seconds:.1f} s; builds {images['seconds'][0]:.1f} s (environment), "
              f"{images['seconds'][1]:.1f} s (model)\nPOST /score -> {score.text}\nPOST infer -> {infer.text}")
        running = podman("ps", "--format", "{{.Image}}\t{{.Names}}").stdout.splitlines()
        name = next(line.split("\t")[1] for line in running if line.startswith(images["model"] + "\t"))
        logs = podman("logs", name, check=False)  # the pod runs the model image by digest, as pulled
        assert "(sklearn, its kept linear form)" in logs.stdout + logs.stderr  # the one the image carries
    finally:
        podman("kube", "down", str(play), check=False)
    assert podman("pod", "ps", "-q").stdout.strip() == ""
