"""``mlops export``: one model version as a self-contained bundle for a device without a network.

The image is the environment image (built or reused by its content hash) plus the model layer of
``pipeline.builders.model_image`` and a start script that reads keys and the port from the device's
environment, so no secret is ever in the image or the manifests. It is saved as ONE tarball
(``oci-archive``: an OCI image layout that also carries Docker's ``manifest.json``, so ``docker load``
of any engine and ``skopeo``/``podman`` read it; or ``docker-archive``, what ``docker save`` writes),
beside ``bundle.json``, runner manifests (compose, Azure IoT Edge, AWS Greengrass) and ``SHA256SUMS``.
Every file is written atomically; a folder holding another bundle is refused without ``overwrite``,
and one holding this very content (``content_digest``) is left as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pipeline
from pipeline.builders import ImageBuilder
from pipeline.builders.model_image import ModelImages, ModelLayer
from pipeline.errors import MlopsError
from pipeline.registry.base import derived_folder

FORMATS = ("oci-archive", "docker-archive")
PORT = 8080
MODEL_DIR = "/var/lib/mlops/model"
HEALTH_PATH, READY_PATH = "/v2/health/live", "/v2/health/ready"
ENV_VARS = {  # what the start script reads from the device's environment
    "MLOPS_PRIMARY_KEY": "requests carry Authorization: Bearer <key>; required unless MLOPS_AUTH=none",
    "MLOPS_SECONDARY_KEY": "a second accepted key, for rotation (default: none)",
    "MLOPS_PORT": f"the port served inside the container (default {PORT})",
    "MLOPS_LOG_LEVEL": "debug, info, warning or error (default info)",
    "MLOPS_AUTH": "none: serve without keys (only where the network itself is trusted); default key",
}
SECRET_VARS = ("MLOPS_PRIMARY_KEY", "MLOPS_SECONDARY_KEY")
CREATE_OPTIONS_CHUNK = 512
CREATE_OPTIONS_MAX_CHUNKS = 8
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

START_SCRIPT = f'''"""Start an exported image's scoring service: keys and port from the environment, never the image."""
import json, os, sys, tempfile, urllib.request

config = json.load(open("/etc/mlops/server.json"))
config["port"] = int(os.environ.get("MLOPS_PORT") or config["port"])
if sys.argv[1:] == ["--health"]:
    urllib.request.urlopen("http://127.0.0.1:%d%s" % (config["port"], "{READY_PATH}"), timeout=3)
    sys.exit(0)
config["log_level"] = (os.environ.get("MLOPS_LOG_LEVEL") or config["log_level"]).lower()
folder = tempfile.mkdtemp(prefix="mlops-")
primary = os.environ.get("MLOPS_PRIMARY_KEY")
if not primary and os.environ.get("MLOPS_AUTH") != "none":  # fail closed: a missing secret never opens the model
    sys.exit("mlops: MLOPS_PRIMARY_KEY is not set; set it (requests then carry Authorization: Bearer <key>) "
             "or set MLOPS_AUTH=none to serve without keys")
if primary:
    keys = {{"primary": primary, "secondary": os.environ.get("MLOPS_SECONDARY_KEY") or primary}}
    config["keys_file"] = os.path.join(folder, "keys.json")
    with os.fdopen(os.open(config["keys_file"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump(keys, out)
path = os.path.join(folder, "server.json")
with open(path, "w") as out:
    json.dump(config, out)
os.execv(sys.executable, [sys.executable, "-m", "pipeline.server", "--config", path])
'''


@dataclass(frozen=True)
class ExportRequest:
    """What to export: a registered model version (materialized) on an environment of the spec."""

    model: ModelLayer  # its flavor too
    environment: str
    output: Path
    format: str = "oci-archive"
    base_image: str | None = None
    signature: dict = field(default_factory=dict)
    baseline: str | None = None  # relative to the model folder
    overwrite: bool = False
    endpoint: str | None = None  # the names the service reports (metrics, collected events); None: the model's
    deployment: str = "edge"
    labels: dict[str, str] = field(default_factory=dict)  # more image labels (an edge target's ownership)


@dataclass
class ExportResult:
    bundle: dict
    tarball: Path
    exported: bool  # False: the folder already held this content
    image_size: int = 0
    seconds: float = 0.0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "model"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def server_config(request: ExportRequest) -> dict:
    """The ServerConfig JSON baked in: no keys file (the start script adds one from the environment)."""
    return {"model_dir": MODEL_DIR, "flavor": request.model.flavor, "model_name": request.model.name,
            "model_version": request.model.version,
            "endpoint": request.endpoint or _slug(request.model.name), "deployment": request.deployment,
            "host": "0.0.0.0", "port": PORT, "keys_file": None, "data_dir": None,
            "baseline": f"{MODEL_DIR}/{request.baseline}" if request.baseline else None, "log_level": "info",
            "derived_dir": str(derived_folder(Path(MODEL_DIR)))}  # the image's linear form, when it has one


def image_files(request: ExportRequest) -> tuple[dict[str, bytes], str]:
    """The start script and server config beside the model, and the Dockerfile lines that run them."""
    files = {"edge/server.json": json.dumps(server_config(request), indent=2, sort_keys=True).encode(),
             "edge/start.py": START_SCRIPT.encode()}
    tail = ("COPY edge /etc/mlops\n"
            f"EXPOSE {PORT}\n"
            'HEALTHCHECK --interval=10s --timeout=5s --start-period=30s CMD ["python", "/etc/mlops/start.py", '
            '"--health"]\n'
            'CMD ["python", "/etc/mlops/start.py"]\n')
    return files, tail


def content_digest(request: ExportRequest, env_ref: str, files: dict[str, bytes], tail: str) -> str:
    """What the bundle is made of: environment (its content-hash tag), model digest, start files, format, and
    the extra labels (the image is found by a tag made of this digest, so two owners never share one)."""
    digest = hashlib.sha256(f"{env_ref}\0{request.model.digest}\0{request.format}\0{tail}".encode())
    for name, data in sorted(files.items()):
        digest.update(f"\0{name}\0".encode() + hashlib.sha256(data).digest())
    for label, value in sorted(request.labels.items()):  # an edge target's ownership: its own image, never another's
        digest.update(f"\0label\0{label}\0{value}".encode())
    return "sha256:" + digest.hexdigest()


def write_atomic(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in its folder and a rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if callable(data):
            data(Path(tmp))
        else:
            Path(tmp).write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sums(folder: Path) -> list[str]:
    """The files of ``SHA256SUMS`` that are missing or differ (empty: the bundle is intact)."""
    bad = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        hexdigest, _, name = line.partition("  ")
        path = folder / name
        if not path.is_file() or sha256_file(path) != hexdigest:
            bad.append(name)
    return bad


def docker_to_oci(docker_tar: Path, out: Path, ref: str, annotations: dict[str, str]) -> None:
    """``docker save`` output → an OCI image layout tarball that keeps Docker's ``manifest.json``.

    Config and layers are copied byte for byte (the image id stays the same); the manifest carries the
    OCI annotations; engines before 25, which only read ``manifest.json``, load it as well."""
    with tarfile.open(docker_tar) as src, tarfile.open(out, "w") as dst:
        entry = json.load(src.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config_bytes = src.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        config = json.loads(config_bytes)
        written: set[str] = set()

        def add(data: bytes | None, digest: str, size: int, member: tarfile.TarInfo | None = None) -> str:
            name = f"blobs/sha256/{digest.split(':', 1)[1]}"
            if name not in written:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = size, 0o444, 0
                dst.addfile(info, io.BytesIO(data) if data is not None else src.extractfile(member))  # type: ignore
                written.add(name)
            return name

        def blob(data: bytes) -> tuple[str, int]:
            return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)

        for name in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            dst.addfile(info)
        config_digest, config_size = blob(config_bytes)
        config_name = add(config_bytes, config_digest, config_size)
        layers, layer_names = [], []
        for path, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"], strict=True):
            member = src.getmember(path)
            while member.issym() or member.islnk():  # engines 25+ link repeated layers
                member = src.getmember(os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
                                       if member.issym() else member.linkname)
            layer_names.append(add(None, diff_id, member.size, member))
            layers.append({"mediaType": OCI_LAYER, "digest": diff_id, "size": member.size})
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
                               "layers": layers, "annotations": annotations}, sort_keys=True).encode()
        manifest_digest, manifest_size = blob(manifest)
        add(manifest, manifest_digest, manifest_size)
        tag = ref.rpartition(":")[2]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": config.get("architecture", "amd64"), "os": config.get("os", "linux")},
            "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": ref}}]}
        for name, data in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index),
                           ("manifest.json", [{"Config": config_name, "RepoTags": [ref], "Layers": layer_names}])):
            raw = json.dumps(data, sort_keys=True).encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(raw), 0o444, 0
            dst.addfile(info, io.BytesIO(raw))


def create_options_chunks(options: dict) -> dict[str, str]:
    """IoT Edge's ``createOptions`` as a JSON string in 512-character parts: ``createOptions``,
    ``createOptions01``, … (the twin limits a property's length)."""
    text = json.dumps(options, separators=(",", ":"), sort_keys=True)
    parts = [text[i:i + CREATE_OPTIONS_CHUNK] for i in range(0, len(text), CREATE_OPTIONS_CHUNK)] or ["{}"]
    if len(parts) > CREATE_OPTIONS_MAX_CHUNKS:
        raise MlopsError(f"the module's createOptions are {len(text)} characters: more than IoT Edge's "
                         f"{CREATE_OPTIONS_MAX_CHUNKS} parts of {CREATE_OPTIONS_CHUNK}")
    return {("createOptions" if i == 0 else f"createOptions{i:02d}"): part for i, part in enumerate(parts)}


def compose_file(name: str, ref: str) -> dict:
    """A compose service: restart always, read-only root, the port on the host, keys from the host's environment."""
    return {"services": {name: {
        "image": ref, "restart": "always", "read_only": True, "tmpfs": ["/tmp"],
        "ports": [f"${{MLOPS_HOST_PORT:-{PORT}}}:{PORT}"],
        "environment": {var: f"${{{var}:-}}" for var in (*SECRET_VARS, "MLOPS_LOG_LEVEL")}}}}


def iotedge_deployment(name: str, ref: str) -> dict:
    """An Azure IoT Edge deployment manifest (schema 1.1): the system modules and this one.

    The image comes from ``docker load`` on the device (no registry credentials); the keys are
    ``${VAR}`` placeholders the deploying tool fills from its environment (never written here)."""
    create = {"ExposedPorts": {f"{PORT}/tcp": {}},
              "HostConfig": {"PortBindings": {f"{PORT}/tcp": [{"HostPort": str(PORT)}]},
                             "ReadonlyRootfs": True, "Tmpfs": {"/tmp": ""}, "RestartPolicy": {"Name": "always"}}}
    return {"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25", "registryCredentials": {}}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5",
                                                             "createOptions": "{}"}},
                "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5",
                                         **create_options_chunks({"HostConfig": {"PortBindings": {
                                             "443/tcp": [{"HostPort": "443"}], "5671/tcp": [{"HostPort": "5671"}],
                                             "8883/tcp": [{"HostPort": "8883"}]}}})}}},
            "modules": {name: {
                "version": "1.0", "type": "docker", "status": "running", "restartPolicy": "always",
                "startupOrder": 1,
                "settings": {"image": ref, **create_options_chunks(create)},
                "env": {var: {"value": f"${{{var}}}"} for var in SECRET_VARS}}}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {},
                                            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}}}


def greengrass_recipe(name: str, ref: str, tarball: str, sha256: str, version: int, description: str) -> dict:
    """An AWS IoT Greengrass v2 component recipe: the tarball as the artifact, ``docker load`` at
    install, ``docker run`` with the keys passed from the device's environment (``-e VAR``)."""
    env = " ".join(f"-e {var}" for var in (*SECRET_VARS, "MLOPS_LOG_LEVEL"))
    container = f"mlops-{name}"
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": f"com.mlops.{name}",
        "ComponentVersion": f"{version}.0.0",
        "ComponentDescription": description,
        "ComponentPublisher": "mlops",
        "ComponentConfiguration": {"DefaultConfiguration": {"HostPort": str(PORT)}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {
                "Install": {"RequiresPrivilege": True, "Script": f"docker load -i {{artifacts:path}}/{tarball}"},
                "Run": {"RequiresPrivilege": True,
                        "Script": f"docker rm -f {container} >/dev/null 2>&1; docker run --rm --name {container} "
                                  f"--read-only --tmpfs /tmp -p {{configuration:/HostPort}}:{PORT} {env} {ref}"},
                "Shutdown": {"RequiresPrivilege": True, "Script": f"docker stop {container}"}},
            "Artifacts": [{"URI": f"s3://REPLACE-BUCKET/mlops/{name}/{tarball}", "Unarchive": "NONE",
                           "Digest": sha256, "Algorithm": "SHA-256"}]}]}


def export(builder: ImageBuilder, request: ExportRequest, progress: Callable[[str], None] = print) -> ExportResult:
    """Build (or reuse) the image and write the bundle into ``request.output``."""
    import yaml

    if request.format not in FORMATS:
        raise MlopsError(f"--format must be one of {', '.join(FORMATS)}")
    started = time.monotonic()
    output = request.output
    env_ref = builder.ensure(request.environment, request.base_image)
    files, tail = image_files(request)
    content = content_digest(request, env_ref, files, tail)
    name = _slug(request.model.name)
    ref = f"mlops-edge-{name}:{request.model.version}-{content.split(':', 1)[1][:12]}"
    suffix = "oci.tar" if request.format == "oci-archive" else "docker.tar"
    tarball = output / f"{name}-{request.model.version}.{suffix}"
    old = output / "bundle.json"
    if old.is_file():
        try:
            previous = json.loads(old.read_text())
        except ValueError:
            previous = {}
        if previous.get("content_digest") == content and (output / "SHA256SUMS").is_file() \
                and not verify_sums(output):
            return ExportResult(previous, output / previous["tarball"], False, previous.get("image_size", 0),
                                time.monotonic() - started)
    if output.exists() and any(output.iterdir()) and not request.overwrite:
        raise MlopsError(f"{output} is not empty (another bundle, or another version); --overwrite replaces it")
    output.mkdir(parents=True, exist_ok=True)
    stale = [line.partition("  ")[2] for line in (output / "SHA256SUMS").read_text().splitlines()] \
        if (output / "SHA256SUMS").is_file() else []

    root = builder.spec.root
    revision = _git(root, "rev-parse", "HEAD") or "unknown"
    source = _git(root, "remote", "get-url", "origin") or root.resolve().as_uri()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    oci = {"org.opencontainers.image.title": request.model.name,
           "org.opencontainers.image.version": str(request.model.version),
           "org.opencontainers.image.revision": revision, "org.opencontainers.image.source": source,
           "org.opencontainers.image.created": created,
           "org.opencontainers.image.description": f"mlops scoring service for {request.model.name}",
           "mlops.model.name": request.model.name, "mlops.model.version": str(request.model.version),
           "mlops.model.digest": request.model.digest, "mlops.content-digest": content, **request.labels}
    images = ModelImages(builder, "", None, MODEL_DIR)
    progress(f"image {ref} (environment {env_ref})")
    images.build_local(ref, env_ref, request.model, labels=oci, files=files, tail=tail)
    image = builder.client_for(None).images.get(ref)
    labels = image.labels or {}
    annotations = {k: v for k, v in labels.items() if k.startswith("org.opencontainers.") or k.startswith("mlops.")}

    def save(path: Path) -> None:
        with open(path, "wb") as out:
            for chunk in image.save(named=True):
                out.write(chunk)

    progress(f"saving {tarball.name} ({request.format})")
    if request.format == "docker-archive":
        write_atomic(tarball, save)
    else:
        with tempfile.TemporaryDirectory(dir=output, prefix=".save-") as tmp:
            saved = Path(tmp) / "docker.tar"
            save(saved)
            write_atomic(tarball, lambda path: docker_to_oci(saved, path, ref, annotations))
    tar_sha = sha256_file(tarball)
    bundle = {
        "format_version": 1, "model": request.model.name, "version": request.model.version,
        "digest": request.model.digest, "flavor": request.model.flavor, "environment": request.environment,
        "environment_image": env_ref, "image": ref, "image_id": image.id, "image_size": image.attrs.get("Size", 0),
        "platform": f"{image.attrs.get('Os', 'linux')}/{image.attrs.get('Architecture', 'amd64')}",
        "format": request.format, "tarball": tarball.name, "tarball_size": tarball.stat().st_size,
        "content_digest": content, "mlops_version": pipeline.__version__,
        "ports": [{"container": PORT, "protocol": "tcp"}], "health_path": HEALTH_PATH, "readiness_path": READY_PATH,
        "score_path": "/score", "infer_path": f"/v2/models/{request.model.name}/infer",
        "metadata_path": f"/v2/models/{request.model.name}", "env": ENV_VARS, "signature": request.signature,
        "labels": annotations}
    manifests = {
        "docker-compose.yaml": yaml.safe_dump(compose_file(name, ref), sort_keys=False).encode(),
        "iotedge.deployment.json": json.dumps(iotedge_deployment(name, ref), indent=2).encode() + b"\n",
        "greengrass.recipe.yaml": yaml.safe_dump(greengrass_recipe(
            name, ref, tarball.name, tar_sha, request.model.version,
            f"mlops scoring service for {request.model.name}:{request.model.version}"), sort_keys=False).encode(),
        "bundle.json": json.dumps(bundle, indent=2).encode() + b"\n"}
    for file_name, data in manifests.items():
        write_atomic(output / file_name, data)
    sums = [f"{tar_sha}  {tarball.name}"] + [f"{hashlib.sha256(d).hexdigest()}  {n}" for n, d in manifests.items()]
    write_atomic(output / "SHA256SUMS", ("\n".join(sums) + "\n").encode())
    for old_name in set(stale) - {tarball.name, *manifests}:  # the replaced bundle's tarball (--overwrite)
        if "/" not in old_name and old_name:
            (output / old_name).unlink(missing_ok=True)
    return ExportResult(bundle, tarball, True, bundle["image_size"], time.monotonic() - started)
