"""The Docker target: each deployment instance is a container on a Docker engine.

A ``RoutedTarget`` (records, rolling updates, the endpoint router: one stable URL per endpoint, a
process on this machine) composed with a ``ContainerRunner`` that runs instances as containers:
host networking (the service bound to 127.0.0.1 on an allocated port), the registry's verified
model folder mounted read-only, the endpoint keys and the data folder mounted, CPU/memory limits
from the deployment. Containers run as a non-root user (the invoking user, or 10001 when mlops runs
as root, which then hands it the keys file and the data folder) and restart with the engine
(``unless-stopped``). Containers carry labels (project, target, endpoint, deployment, model,
settings digest, image), so actual state is read back from the engine: a container stopped or
removed by hand shows as drift. Every listing and cleanup matches the project label as well as the
target's name, so two projects with identically named targets on one engine never touch each
other's containers. Deleting stops the containers before the records forget them: with the engine
unreachable nothing is forgotten and a later delete resumes. The engine comes from ``DOCKER_HOST``
or the target's ``host``;
the SDK (``docker``) is imported only here. The router reaches instances on 127.0.0.1, so the
engine must run on this machine (a remote engine would need the router in a container too).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import TargetError
from pipeline.spec.model import Target as TargetSpec
from pipeline.spec.model import cpu_cores
from pipeline.targets.base import DeployRequest, server_config
from pipeline.targets.health import free_port
from pipeline.targets.routed import HOST, STOP_GRACE_SECONDS, RoutedTarget

CONFIG_IN_CONTAINER = "/etc/mlops"
KEYS_IN_CONTAINER = "/etc/mlops-keys"
MODEL_IN_CONTAINER = "/var/lib/mlops/model"
DATA_IN_CONTAINER = "/var/lib/mlops/data"
_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|k|m|g)?$")
_UNITS = {None: 1, "k": 1000, "m": 1000**2, "g": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
SERVICE_UID = SERVICE_GID = 10001  # who containers run as when mlops itself runs as root


def memory_bytes(text: str) -> int:
    match = _MEMORY.match(text)
    if match is None:  # the schema's pattern admits only these forms
        raise ValueError(f"{text!r} is not a memory size like 512Mi")
    number, unit = match.groups()
    return int(number) * _UNITS[unit]


def service_user() -> tuple[int, int]:
    """The invoking user (the mounted data folder stays theirs), or a fixed non-root uid for root."""
    uid = os.getuid()
    return (uid, os.getgid()) if uid != 0 else (SERVICE_UID, SERVICE_GID)


def _hand_over(path: Path, uid: int, gid: int, recursive: bool = True) -> None:
    """Make ``path`` (and what is below it) the service user's: only needed, and possible, as root."""
    if os.getuid() != 0 or not path.exists():
        return
    os.chown(path, uid, gid)
    for folder, names, files in os.walk(path) if recursive else ():
        for name in names + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


class ContainerRunner:
    """Instances as this project's labelled containers on a Docker engine (host network)."""

    def __init__(self, target: RoutedTarget):
        self.target = target
        self.name, self.spec, self.project = target.name, target.spec, target.project
        self._client = None

    @property
    def engine(self) -> str:
        return self.spec.host or os.environ.get("DOCKER_HOST") or "the default socket"

    @property
    def client(self):
        if self._client is None:
            import docker

            try:
                self._client = docker.DockerClient(base_url=self.spec.host) if self.spec.host else docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as error:
                raise TargetError(f"target '{self.name}': no Docker engine reachable at {self.engine}: "
                                  f"{error}") from None
        return self._client

    @contextmanager
    def _engine_call(self, doing: str):
        """Engine and connection errors become one ``TargetError`` saying what was being done."""
        import docker
        import requests

        try:
            yield
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise TargetError(f"target '{self.name}': cannot {doing} on the Docker engine at {self.engine}: "
                              f"{getattr(error, 'explanation', None) or error}") from None

    def _labels(self, **labels: str) -> dict[str, str]:
        """The labels that say a container is this project's, on this target (plus ``labels``)."""
        return {"mlops.managed": "true", "mlops.project": self.project, "mlops.target": self.name,
                **{f"mlops.{key}": value for key, value in labels.items()}}

    def _owned(self, name: str | None = None, **labels: str) -> list:
        """This project's containers on this target, running or not, narrowed by ``labels``."""
        filters: dict[str, str | list[str]] = {
            "label": [f"{key}={value}" for key, value in self._labels(**labels).items()]}
        if name:
            filters["name"] = name
        with self._engine_call("list containers"):
            return self.client.containers.list(all=True, filters=filters)

    def _container(self, instance: dict):
        import docker

        with self._engine_call(f"look up container {instance.get('container')}"):
            try:
                return self.client.containers.get(instance["container"])
            except (docker.errors.NotFound, KeyError):
                return None

    def alive(self, instance: dict) -> bool:
        container = self._container(instance)
        if container is None:
            return False
        import docker

        with self._engine_call(f"inspect container {container.short_id}"):
            try:
                container.reload()
            except docker.errors.NotFound:
                return False
        return container.status == "running"

    def start(self, request: DeployRequest) -> dict:
        if request.image is None:
            raise TargetError(f"deployment {request.deployment.key} on docker target '{self.name}' has no image")
        instance = f"{request.endpoint.name}-{request.deployment.name}-{uuid.uuid4().hex[:8]}"
        port = free_port(HOST)
        keys = self.target.keys_file(request.endpoint.name)
        config = server_config(request, port=port, model_dir=Path(MODEL_IN_CONTAINER),
                               keys_file=Path(KEYS_IN_CONTAINER) / keys.name,
                               data_dir=Path(DATA_IN_CONTAINER), host=HOST)
        folder = self.target.root / "instances" / instance
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.json").write_text(json.dumps(config, indent=2))
        uid, gid = service_user()
        data = self.target.data_dir / request.endpoint.name / request.deployment.name
        data.mkdir(parents=True, exist_ok=True)
        for path in (self.target.data_dir, data.parent):
            _hand_over(path, uid, gid, recursive=False)
        _hand_over(data, uid, gid)  # the collector writes here from inside the container
        if request.endpoint.auth_mode == "key":
            _hand_over(keys, uid, gid)  # 0600: readable by its owner only
        labels = self._labels(endpoint=request.endpoint.name, deployment=request.deployment.name,
                              model=request.model.ref, settings=request.settings_digest, image=request.image)
        import docker

        try:
            container = self._run(request, instance, folder, keys, labels, f"{uid}:{gid}")
        except docker.errors.DockerException as error:
            for leftover in self._owned(name=f"mlops-{instance}"):
                with self._engine_call(f"remove container {leftover.name}"):
                    leftover.remove(force=True)
            raise TargetError(f"target '{self.name}': cannot start a container for {request.deployment.key}: "
                              f"{getattr(error, 'explanation', None) or error}") from None
        return {"id": instance, "container": container.id, "port": port, "image": request.image,
                "started": container.attrs.get("Created")}

    def _run(self, request: DeployRequest, instance: str, folder: Path, keys: Path, labels: dict, user: str):
        limits = request.deployment.resources.effective_limits
        return self.client.containers.run(
            request.image, ["python", "-m", "pipeline.server", "--config", f"{CONFIG_IN_CONTAINER}/server.json"],
            name=f"mlops-{instance}", detach=True, network_mode="host", labels=labels, user=user,
            environment=dict(request.environment_variables),
            volumes={str(folder): {"bind": CONFIG_IN_CONTAINER, "mode": "ro"},
                     str(keys.parent): {"bind": KEYS_IN_CONTAINER, "mode": "ro"},
                     str(request.model.path): {"bind": MODEL_IN_CONTAINER, "mode": "ro"},
                     str(self.target.data_dir): {"bind": DATA_IN_CONTAINER, "mode": "rw"}},
            restart_policy={"Name": "unless-stopped"},  # back after an engine or host restart
            nano_cpus=int(cpu_cores(limits.cpu) * 1e9) if limits.cpu is not None else None,
            mem_limit=memory_bytes(limits.memory) if limits.memory else None)

    def stop(self, instances: list[dict], grace: float = STOP_GRACE_SECONDS) -> None:
        self._stop_containers([c for c in map(self._container, instances) if c is not None], grace)

    def _stop_containers(self, containers: list, grace: float = STOP_GRACE_SECONDS) -> None:
        import docker

        for container in containers:
            with self._engine_call(f"stop container {container.name}"):
                try:
                    container.stop(timeout=int(grace))  # SIGTERM: in-flight requests finish, data is flushed
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass

    def log(self, instance: dict, lines: int) -> str:
        container = self._container(instance)
        if container is None:
            return "(the container is gone)"
        with self._engine_call(f"read the log of container {container.name}"):
            return container.logs(tail=lines).decode("utf-8", "replace")

    def unrecorded(self, known: list[dict]) -> list[dict]:
        """This project's containers that no record names (left by an interrupted apply), as instances."""
        ids = {record.get("container") for record in known}
        return [{"id": container.name, "container": container.id, "endpoint": container.labels.get("mlops.endpoint")}
                for container in self._owned() if container.id not in ids]

    def before_forget(self, what: str, **labels: str) -> None:
        """Stop the containers first: with the engine unreachable nothing is forgotten, so a rerun resumes."""
        try:
            self._stop_containers(self._owned(**labels))
        except TargetError as error:
            raise TargetError(f"{error}; nothing of {what} was forgotten: its records and routes are kept, "
                              "so running the command again once the engine is reachable finishes it") from None


class DockerTarget(RoutedTarget):
    """Deployments as containers on a Docker engine (``type: docker``), behind the endpoint router."""

    def __init__(self, spec: TargetSpec, state_dir: Path, project: str | None = None):
        super().__init__(spec, state_dir, project, folder=f"docker-{spec.name}", runner=ContainerRunner)
