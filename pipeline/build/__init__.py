"""Environment images: an environment becomes a deterministic build context and a content-hash tag.

The context holds a generated Dockerfile, the environment's requirements, the scoring service's
own pinned requirements and the ``pipeline`` package source. Its digest covers all of them, so
the tag ``mlops-env-<name>:<12 hex>`` changes exactly when the image would; an unchanged
environment is never rebuilt. Models are not baked in: targets mount the registry's verified,
read-only copy, so a model-only change builds nothing. (A Kubernetes target will need a thin
model layer on top instead.)

Builds use the Docker SDK (``docker``, imported lazily) with host networking; a ``wheelhouse``
folder makes them offline and deterministic (``pip install --no-index --find-links``).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pipeline
from pipeline.errors import BuildError, MlopsError
from pipeline.plan.model import image_ref
from pipeline.spec.model import Environment, Spec

DEFAULT_BASE = "python:{python}-slim"
SERVICE_PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "prometheus-client", "orjson", "numpy",
                    "pyyaml", "jsonschema", "httpx")
LABEL_PREFIX = "mlops."


def service_requirements() -> str:
    """The scoring service's dependencies, pinned to the versions this mlops runs with."""
    lines = []
    for package in SERVICE_PACKAGES:
        try:
            lines.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(package)
    return "\n".join(lines) + "\n"


def _source_files() -> list[tuple[str, bytes]]:
    root = Path(pipeline.__file__).parent
    return [(f"pipeline/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


class Context:
    """The files of one environment's build context, in a fixed order."""

    def __init__(self, spec: Spec, environment: Environment, base_image: str, wheelhouse: Path | None):
        self.environment = environment
        requirements = (spec.root / environment.requirements).read_text() if environment.requirements else ""
        offline = "--no-index --find-links /tmp/wheels " if wheelhouse else ""
        if environment.dockerfile:
            header = (spec.root / environment.dockerfile).read_text()
        else:
            header = f"FROM {base_image}\n"
        self.dockerfile = header + (
            "RUN python3 -m venv /opt/mlops\n"
            "ENV PATH=/opt/mlops/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/mlops-src\n"
            "COPY service-requirements.txt requirements.txt /tmp/\n"
            + ("COPY wheels /tmp/wheels\n" if wheelhouse else "")
            + f"RUN pip install --no-cache-dir {offline}-r /tmp/service-requirements.txt -r /tmp/requirements.txt"
            + (" && rm -rf /tmp/wheels\n" if wheelhouse else "\n")
            + "COPY pipeline /opt/mlops-src/pipeline\n")
        self.files: list[tuple[str, bytes]] = [("requirements.txt", requirements.encode()),
                                               ("service-requirements.txt", service_requirements().encode())]
        self.files += _source_files()
        self.wheelhouse = wheelhouse

    def digest(self) -> str:
        digest = hashlib.sha256(self.dockerfile.encode())
        for name, data in self.files:
            digest.update(f"\0{name}\0".encode() + hashlib.sha256(data).digest())
        return "sha256:" + digest.hexdigest()

    def tarball(self, labels: dict[str, str]) -> io.BytesIO:
        buffer = io.BytesIO()
        dockerfile = self.dockerfile + "".join(f'LABEL {k}="{v}"\n' for k, v in sorted(labels.items()))
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in [("Dockerfile", dockerfile.encode()), *self.files]:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
            if self.wheelhouse:
                for wheel in sorted(self.wheelhouse.iterdir()):
                    tar.add(wheel, arcname=f"wheels/{wheel.name}")
        buffer.seek(0)
        return buffer


class ImageBuilder:
    """Builds environment images on a Docker engine; knows which ones already exist."""

    def __init__(self, spec: Spec, state_dir: Path, *, wheelhouse: Path | None = None,
                 progress: Callable[[str], None] | None = None):
        import os

        self.spec = spec
        self.wheelhouse = wheelhouse or (Path(os.environ["MLOPS_WHEELHOUSE"])
                                         if os.environ.get("MLOPS_WHEELHOUSE") else None)
        self.progress = progress or (lambda line: None)
        self._client = None
        self.builds = 0

    @property
    def client(self):
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as error:
                raise MlopsError(f"no Docker engine reachable (DOCKER_HOST): {error}") from None
        return self._client

    def base_image(self, environment: Environment, target_base: str | None) -> str:
        return environment.base_image or target_base or DEFAULT_BASE.format(python=environment.python)

    def context(self, name: str, target_base: str | None) -> Context:
        environment = self.spec.environments[name]
        return Context(self.spec, environment, self.base_image(environment, target_base), self.wheelhouse)

    def observe(self, spec: Spec) -> tuple[dict, frozenset]:
        """Build digests of the environments that docker deployments use, and which images exist."""
        digests: dict[str, dict[str, str]] = {}
        wanted = []
        for endpoint in spec.endpoints.values():
            target = spec.targets[endpoint.target]
            if target.type == "local":
                continue
            for deployment in endpoint.deployments.values():
                digest = self.context(deployment.environment, target.base_image).digest()
                digests.setdefault(target.type, {})[deployment.environment] = digest
                wanted.append(image_ref(deployment.environment, digest, target.image_repository))
        return digests, frozenset(ref for ref in wanted if self.exists(ref))

    def exists(self, ref: str) -> bool:
        import docker

        try:
            self.client.images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    def build(self, environment: str, data) -> str:
        """Build the image a plan's build step names (no-op when it already exists)."""
        ref = data["image"]
        if self.exists(ref):
            return ref
        context = self.context(environment, data.get("base_image"))
        labels = {f"{LABEL_PREFIX}environment": environment, f"{LABEL_PREFIX}digest": context.digest(),
                  f"{LABEL_PREFIX}version": pipeline.__version__}
        log: list[str] = []
        self.builds += 1
        try:
            for chunk in self.client.api.build(fileobj=context.tarball(labels), custom_context=True, tag=ref,
                                               network_mode="host", rm=True, forcerm=True, decode=True):
                if "stream" in chunk and chunk["stream"].strip():
                    line = chunk["stream"].rstrip()
                    log.append(line)
                    self.progress(line)
                if "error" in chunk:
                    tail = "\n".join(log[-25:])
                    raise BuildError(f"building {ref} for environment '{environment}' failed: "
                                     f"{chunk['error'].strip()}\n{tail}")
        except BuildError:
            raise
        except Exception as error:  # the SDK's API and connection errors
            raise BuildError(f"building {ref} failed: {error}") from None
        if data.get("repository"):
            self.push(ref)
        return ref

    def push(self, ref: str) -> None:
        """Push an image to its repository (targets such as kubernetes pull from there)."""
        repository, _, tag = ref.rpartition(":")
        try:
            for chunk in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise BuildError(f"pushing {ref} failed: {chunk['error'].strip()} (are you logged in to "
                                     "the image repository?)")
                if chunk.get("status"):
                    self.progress(f"{chunk['status']} {chunk.get('progress', '')}".rstrip())
        except BuildError:
            raise
        except Exception as error:
            raise BuildError(f"pushing {ref} failed: {error}") from None


def ensure_wheelhouse(folder: Path, requirements: list[Path]) -> Path:
    """Download the wheels of the service and of ``requirements`` (for offline, repeatable builds)."""
    import subprocess
    import sys
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(service_requirements())
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "-d", str(folder),
               "-r", handle.name]
    for path in requirements:
        command += ["-r", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    Path(handle.name).unlink()
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise BuildError(f"downloading wheels failed:\n{result.stderr[-2000:]}")
    return folder
