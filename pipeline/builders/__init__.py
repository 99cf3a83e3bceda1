"""Environment images: an environment becomes a deterministic build context and a content-hash tag.

The context holds a generated Dockerfile, the environment's requirements, the scoring service's
own pinned requirements and the source the scoring service and router run (``pipeline.runtime``,
``pipeline.server`` and the modules they import; no CLI, planner or executor). Its digest covers
all of them, so the tag ``mlops-env-<name>:<12 hex>`` changes exactly when the image would; an unchanged
environment is never rebuilt. Models are not baked in: targets mount the registry's verified,
read-only copy, so a model-only change builds nothing here; targets whose pods pull images
(Kubernetes) get a thin model layer on top (``pipeline.builders.model_image``).

The default base (no ``base_image``, no ``dockerfile``) is the local Debian base of
``pipeline.builders.base`` on a Debian/Ubuntu machine (no registry needed), else
``python:<python>-slim``. Wheels are downloaded into a cache keyed by the requirements
(``pipeline.builders.wheels``) and installed offline in a first stage; the image copies only the
virtual environment, so no layer holds the wheels. Every image and intermediate image carries
``mlops.project=<Spec.project_id()>``: a failed build's leftovers and old environment images are
removed by that label, never another project's. Builds use the Docker SDK (``docker``, imported
lazily) on the engine of the target's ``host`` (default ``DOCKER_HOST``), with host networking.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import tarfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import pipeline
from pipeline.builders import base as local_base
from pipeline.builders.base import image_exists
from pipeline.builders.progress import BuildProgress
from pipeline.builders.wheels import cached_wheels, pip_errors
from pipeline.errors import BuildError, MlopsError
from pipeline.spec.model import Environment, Spec
from pipeline.spec.target_kinds import EnvironmentKind

SLIM_BASE = "python:{python}-slim"
SERVICE_PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "prometheus-client", "orjson", "numpy",
                    "pyyaml", "jsonschema", "httpx")
IMAGE_PACKAGES = ("runtime", "server")  # what a scoring image runs; see _source_files
LABEL_PREFIX = "mlops."
PROJECT_LABEL = "mlops.project"
ENVIRONMENT_LABEL = "mlops.environment"
MODEL_LABEL = "mlops.model"  # model images (builders.model_image) inherit the environment label
_FROM = re.compile(r"^(\s*FROM\s+\S+)(\s+AS\s+(\S+))?\s*$", re.IGNORECASE)


def image_ref(environment: str, digest: str, repository: str | None = None) -> str:
    """The content-hash tag of an environment image: ``[repo/]mlops-env-<env>:<12 hex>``."""
    tag = digest.split(":", 1)[-1][:12]
    name = f"mlops-env-{environment}:{tag}"
    return f"{repository.rstrip('/')}/{name}" if repository else name


def service_requirements() -> str:
    """The scoring service's dependencies, pinned to the versions this mlops runs with."""
    lines = []
    for package in SERVICE_PACKAGES:
        try:
            lines.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(package)
    return "\n".join(lines) + "\n"


def _package_imports(path: Path) -> set[str]:
    """The ``pipeline`` modules a source file imports, also lazily (inside functions) or for typing only."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule, or a name in it
    return {name for name in names if name.split(".")[0] == "pipeline"}


def _module_files(root: Path, module: str) -> list[Path]:
    """The files importing ``module`` runs: its own and its parent packages' ``__init__.py``."""
    parts = module.split(".")[1:]
    files = [root / "__init__.py"]
    for depth in range(1, len(parts) + 1):
        base = root.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
                break
    return files


def _source_files() -> list[tuple[str, bytes]]:
    """The part of the package the image runs: ``pipeline.runtime`` and ``pipeline.server`` whole, and
    every module they import (found in their source, so a new import ships its module), nothing else:
    no CLI, planner, executor or spec loader in a scoring image."""
    root = Path(pipeline.__file__).parent
    chosen = {p for package in IMAGE_PACKAGES for p in (root / package).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    pending = sorted(p for p in chosen if p.suffix == ".py")
    while pending:
        for module in _package_imports(pending.pop()):
            for path in _module_files(root, module):
                if path not in chosen:
                    chosen.add(path)
                    pending.append(path)
    return [(f"pipeline/{p.relative_to(root).as_posix()}", p.read_bytes()) for p in sorted(chosen)]


def default_base(environment: Environment) -> str:
    """The base of an environment that names none: the local Debian base, or the official slim image."""
    return local_base.default_base() or SLIM_BASE.format(python=environment.python)


def _base_stage(header: str, label: str) -> tuple[str, str]:
    """Label every stage of a Dockerfile and name its last one; returns (text, last stage name)."""
    lines: list[str] = []
    last: int | None = None
    for line in header.splitlines():
        match = _FROM.match(line)
        if match:
            last = len(lines)
        lines.append(line)
        if match:
            lines.append(label)
    if last is None:
        raise MlopsError("the environment's dockerfile has no FROM line")
    match = _FROM.match(lines[last])
    assert match is not None  # the line was found by this very pattern
    name = match.group(3) or "mlops-base"
    if not match.group(3):
        lines[last] = f"{match.group(1)} AS {name}"
    return "\n".join(lines) + "\n", name


class Context:
    """The files of one environment's build context, in a fixed order."""

    def __init__(self, spec: Spec, environment: Environment, base_image: str):
        self.environment = environment
        self.base_image = base_image
        self.project = spec.project_id()
        self.requirements = (spec.root / environment.requirements).read_text() if environment.requirements else ""
        label = f'LABEL {PROJECT_LABEL}="{self.project}"'
        header = (spec.root / environment.dockerfile).read_text() if environment.dockerfile else f"FROM {base_image}"
        stages, name = _base_stage(header, label)
        self.dockerfile = stages + (
            f"FROM {name} AS mlops-venv\n"
            "RUN python3 -m venv /opt/mlops\n"
            "COPY service-requirements.txt requirements.txt /tmp/\n"
            "COPY wheels /tmp/wheels\n"
            "RUN /opt/mlops/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels"
            " -r /tmp/service-requirements.txt -r /tmp/requirements.txt\n"
            f"FROM {name}\n"
            "COPY --from=mlops-venv /opt/mlops /opt/mlops\n"
            "ENV PATH=/opt/mlops/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/mlops-src\n"
            "COPY pipeline /opt/mlops-src/pipeline\n")
        self.files: list[tuple[str, bytes]] = [("requirements.txt", self.requirements.encode()),
                                               ("service-requirements.txt", service_requirements().encode())]
        self.files += _source_files()

    def digest(self) -> str:
        digest = hashlib.sha256(self.dockerfile.encode())
        for name, data in self.files:
            digest.update(f"\0{name}\0".encode() + hashlib.sha256(data).digest())
        return "sha256:" + digest.hexdigest()

    def tarball(self, labels: dict[str, str], wheels: Path | None = None) -> io.BytesIO:
        buffer = io.BytesIO()
        dockerfile = self.dockerfile + "".join(f'LABEL {k}="{v}"\n' for k, v in sorted(labels.items()))
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in [("Dockerfile", dockerfile.encode()), *self.files]:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo("wheels")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
            for wheel in sorted(wheels.iterdir()) if wheels else []:
                tar.add(wheel, arcname=f"wheels/{wheel.name}")
        buffer.seek(0)
        return buffer


def connect(host: str | None):
    """A Docker client for ``host`` (a target's engine URL), or for ``DOCKER_HOST`` when None."""
    import docker

    try:
        client = docker.DockerClient(base_url=host) if host else docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        where = f"at {host} (the target's host)" if host else "(DOCKER_HOST, or the target's host:)"
        raise MlopsError(f"no Docker engine reachable {where}: {error}") from None
    return client


def remove_leftovers(client, project: str) -> None:
    """Remove this project's untagged images (a failed build's steps, the wheel-installing stage)."""
    import docker

    try:
        client.images.prune(filters={"dangling": True, "label": f"{PROJECT_LABEL}={project}"})
    except docker.errors.APIError:
        pass  # another prune is running on this engine: the next build cleans up


class ImageBuilder:
    """Builds environment images on the targets' Docker engines; knows which ones already exist."""

    def __init__(self, spec: Spec, state_dir: Path, *, progress: Callable[[str], None] | None = None):
        self.spec = spec
        self.state_dir = state_dir
        self.progress = progress or BuildProgress()
        self._clients: dict[str | None, object] = {}
        self.builds = 0

    def client_for(self, host: str | None):
        if host not in self._clients:
            self._clients[host] = connect(host)
        return self._clients[host]

    @property
    def client(self):
        """The engine of the first target that builds images (``DOCKER_HOST`` when none names a host)."""
        hosts = self.hosts()
        return self.client_for(hosts[0] if hosts else None)

    def hosts(self, targets: Iterable | None = None) -> list[str | None]:
        targets = self.targets() if targets is None else targets
        return list(dict.fromkeys(target.host for target in targets)) or [None]

    def targets(self, data=None) -> list:
        """The image-building targets endpoints use (those a build step's settings match, when given)."""
        used = {endpoint.target for endpoint in self.spec.endpoints.values()}
        found = [self.spec.targets[name] for name in sorted(used)
                 if self.spec.targets[name].kind.environment is EnvironmentKind.IMAGE]
        if data is not None:
            found = [t for t in found if t.base_image == data.base_image
                     and t.environment_repository == data.repository]
        return found

    def base_image(self, environment: Environment, target_base: str | None) -> str:
        return environment.base_image or target_base or default_base(environment)

    def context(self, name: str, target_base: str | None) -> Context:
        environment = self.spec.environments[name]
        return Context(self.spec, environment, self.base_image(environment, target_base))

    def observe(self, spec: Spec) -> tuple[dict, dict, frozenset]:
        """Build digests of the environments image targets use, the image each target wants for each,
        and which of those images exist."""
        digests: dict[str, dict[str, str]] = {}
        refs: dict[str, dict[str, str]] = {}
        images = set()
        wanted: dict[str, set] = {}
        for endpoint in spec.endpoints.values():
            target = spec.targets[endpoint.target]
            if target.kind.environment is not EnvironmentKind.IMAGE:
                continue
            for deployment in endpoint.deployments.values():
                if deployment.environment is None:  # the validator requires one on image targets
                    continue
                digest = self.context(deployment.environment, target.base_image).digest()
                digests.setdefault(target.type, {})[deployment.environment] = digest
                ref = image_ref(deployment.environment, digest, target.environment_repository)
                refs.setdefault(target.name, {})[deployment.environment] = ref
                wanted.setdefault(ref, set()).add(target.host)
        for ref, hosts in wanted.items():
            if all(image_exists(self.client_for(host), ref) for host in hosts):
                images.add(ref)
        return digests, refs, frozenset(images)

    def exists(self, ref: str) -> bool:
        return image_exists(self.client, ref)

    def build(self, environment: str, data) -> str:
        """Build the image a plan's build step names on every engine that lacks it."""
        ref = data.image
        for host in self.hosts(self.targets(data)):
            client = self.client_for(host)
            if not image_exists(client, ref):
                self._build_on(client, environment, data)
        if data.repository:
            self.push(ref)
        return ref

    def ensure(self, environment: str, base_image: str | None = None, host: str | None = None) -> str:
        """The environment image by its content-hash tag on one engine, built there only when missing
        (``mlops export``: no plan, no target, nothing pushed)."""
        context = self.context(environment, base_image)
        ref = image_ref(environment, context.digest())
        client = self.client_for(host)
        if not image_exists(client, ref):
            data = type("Build", (), {"image": ref, "base_image": base_image, "repository": None})()
            self._build_on(client, environment, data)
        return ref

    def _python(self, context: Context) -> str:
        """The Python of the image, checked against the environment's ``python``."""
        suite = local_base.host_suite()
        if context.environment.dockerfile or context.base_image != local_base.default_base():
            return context.environment.python
        shipped = local_base.SUITE_PYTHON.get(suite or "", context.environment.python)
        if shipped != context.environment.python:
            raise MlopsError(f"environment '{context.environment.name}' asks for Python "
                             f"{context.environment.python}, but the local base ({suite}) has {shipped}: set "
                             f"python: \"{shipped}\", or base_image: python:{context.environment.python}-slim "
                             "(needs an image registry)")
        return shipped

    def _ensure_base(self, client, context: Context) -> None:
        if context.environment.dockerfile or image_exists(client, context.base_image):
            return
        if context.base_image == local_base.default_base():
            local_base.ensure_base(client, progress=self.progress)
            return
        import docker

        try:
            self.progress(f"pulling {context.base_image}")
            client.images.pull(context.base_image)
        except docker.errors.DockerException as error:
            raise BuildError(f"the base image {context.base_image} is not on the engine and cannot be pulled "
                             f"({getattr(error, 'explanation', None) or error}); without a registry, leave "
                             "base_image unset to use the local base (mlops images base)") from None

    def _build_on(self, client, environment: str, data) -> None:
        ref = data.image
        context = self.context(environment, data.base_image)
        python = self._python(context)
        self._ensure_base(client, context)
        try:
            wheels = cached_wheels(local_base.cache_dir() / "wheels", python,
                                   [service_requirements(), context.requirements], self.progress)
        except BuildError as error:
            raise BuildError(f"environment '{environment}': {error}") from None
        labels = {ENVIRONMENT_LABEL: environment, f"{LABEL_PREFIX}digest": context.digest(),
                  f"{LABEL_PREFIX}version": pipeline.__version__}
        self.builds += 1
        step, output = "", list[str]()
        try:
            for chunk in client.api.build(fileobj=context.tarball(labels, wheels), custom_context=True, tag=ref,
                                          network_mode="host", rm=True, forcerm=True, decode=True):
                for line in chunk.get("stream", "").splitlines():
                    if line.startswith("Step "):
                        step, output = line, []
                    elif line.strip():
                        output.append(line.rstrip())
                    if line.strip():
                        self.progress(line.rstrip())
                if "error" in chunk:
                    raise BuildError(f"building {ref} for environment '{environment}' failed at {step}\n"
                                     f"{chunk['error'].strip()}\n{pip_errors(chr(10).join(output))}")
        except BuildError:
            raise
        except Exception as error:  # the SDK's API and connection errors
            raise BuildError(f"building {ref} failed: {getattr(error, 'explanation', None) or error}") from None
        finally:
            getattr(self.progress, "end", lambda: None)()
            remove_leftovers(client, context.project)

    def push(self, ref: str, client=None) -> str:
        """Push an image to its repository (targets such as kubernetes pull from there); returns the
        manifest digest the registry reported (``sha256:...``)."""
        repository, _, tag = ref.rpartition(":")
        digest = ""
        try:
            for chunk in (client or self.client).api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise BuildError(f"pushing {ref} failed: {chunk['error'].strip()} (are you logged in to "
                                     "the image repository?)")
                digest = (chunk.get("aux") or {}).get("Digest") or digest
                if chunk.get("status"):
                    self.progress(f"{chunk['status']} {chunk.get('progress', '')}".rstrip())
        except BuildError:
            raise
        except Exception as error:
            raise BuildError(f"pushing {ref} failed: {error}") from None
        if not digest:
            raise BuildError(f"pushing {ref}: the image repository reported no digest")
        return digest


def collect_garbage(spec: Spec, client, serving_images: Iterable[str], keep: int = 2) -> list[str]:
    """Remove this project's images that no deployment serves, keeping the newest ``keep`` per environment
    (environment images) and per model (model images, ``builders.model_image``); returns the removed
    references. An image serves when a deployment names it by tag, id or ``repository@digest``. Model
    images go first, so the environment images under them can go in the same pass. Other projects'
    images are never listed; the image repository keeps what was pushed (its own retention rules)."""
    import docker

    serving = set(serving_images)
    images = client.images.list(filters={"label": [f"{PROJECT_LABEL}={spec.project_id()}", ENVIRONMENT_LABEL]})
    groups: dict[tuple[int, str], list] = {}
    for image in images:
        labels = image.labels or {}
        key = (0, labels[MODEL_LABEL]) if MODEL_LABEL in labels else (1, labels.get(ENVIRONMENT_LABEL, ""))
        groups.setdefault(key, []).append(image)
    removed = []
    for key in sorted(groups):
        found = groups[key]
        found.sort(key=lambda image: image.attrs.get("Created", ""), reverse=True)
        for image in found[keep:]:
            names = set(image.tags or []) | set(image.attrs.get("RepoDigests") or []) | {image.id}
            if serving & names:
                continue
            try:
                for tag in image.tags or [image.id]:
                    client.images.remove(tag)
                    removed.append(tag)
            except docker.errors.APIError:
                continue  # a container still uses it (stopped by hand, or another target's), or a child image
    return removed
