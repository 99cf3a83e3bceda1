"""The Docker target: each deployment instance is a container on a Docker engine.

It shares the local target's records, rolling updates and endpoint router (a process on this
machine, one stable URL per endpoint), and runs instances as containers instead of processes:
host networking (the service bound to 127.0.0.1 on an allocated port), the registry's verified
model folder mounted read-only, the endpoint keys and the data folder mounted, restart policy and
CPU/memory limits from the deployment. Containers carry labels (endpoint, deployment, model,
settings digest, image), so actual state is read back from the engine: a container stopped or
removed by hand shows as drift. The engine comes from ``DOCKER_HOST`` or the target's ``host``;
the SDK (``docker``) is imported only here. The router reaches instances on 127.0.0.1, so the
engine must run on this machine (a remote engine would need the router in a container too).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from pipeline.errors import TargetError
from pipeline.spec.model import Target as TargetSpec
from pipeline.targets.base import DeployRequest, server_config
from pipeline.targets.health import free_port
from pipeline.targets.local import HOST, STOP_GRACE_SECONDS, LocalTarget

CONFIG_IN_CONTAINER = "/etc/mlops"
KEYS_IN_CONTAINER = "/etc/mlops-keys"
MODEL_IN_CONTAINER = "/var/lib/mlops/model"
DATA_IN_CONTAINER = "/var/lib/mlops/data"
_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|k|m|g)?$")
_UNITS = {None: 1, "k": 1000, "m": 1000**2, "g": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def memory_bytes(text: str) -> int:
    number, unit = _MEMORY.match(text).groups()
    return int(number) * _UNITS[unit]


class DockerTarget(LocalTarget):
    builds_images = True

    def __init__(self, name: str, spec: TargetSpec, state_dir: Path):
        super().__init__(spec, state_dir, folder=f"docker-{name}")
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import docker

            try:
                self._client = docker.DockerClient(base_url=self.spec.host) if self.spec.host else docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as error:
                raise TargetError(f"target '{self.name}': no Docker engine reachable: {error}") from None
        return self._client

    def _container(self, instance: dict):
        import docker

        try:
            return self.client.containers.get(instance["container"])
        except (docker.errors.NotFound, KeyError):
            return None

    def _instance_alive(self, instance: dict) -> bool:
        container = self._container(instance)
        if container is None:
            return False
        container.reload()
        return container.status == "running"

    def _start_instance(self, request: DeployRequest) -> dict:
        if request.image is None:
            raise TargetError(f"deployment {request.deployment.key} on docker target '{self.name}' has no image")
        instance = f"{request.endpoint.name}-{request.deployment.name}-{uuid.uuid4().hex[:8]}"
        port = free_port(HOST)
        keys = self.keys_file(request.endpoint.name)
        config = server_config(request, port=port, model_dir=Path(MODEL_IN_CONTAINER),
                               keys_file=Path(KEYS_IN_CONTAINER) / keys.name,
                               data_dir=Path(DATA_IN_CONTAINER), host=HOST)
        folder = self.root / "instances" / instance
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.json").write_text(json.dumps(config, indent=2))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        resources = request.deployment.resources
        labels = {"mlops.managed": "true", "mlops.target": self.name, "mlops.endpoint": request.endpoint.name,
                  "mlops.deployment": request.deployment.name, "mlops.model": request.model.ref,
                  "mlops.settings": request.settings_digest, "mlops.image": request.image}
        import docker

        try:
            container = self._run(request, instance, folder, keys, labels, resources)
        except docker.errors.DockerException as error:
            stale = self.client.containers.list(all=True, filters={"name": f"mlops-{instance}"})
            for leftover in stale:
                leftover.remove(force=True)
            raise TargetError(f"target '{self.name}': cannot start a container for {request.deployment.key}: "
                              f"{getattr(error, 'explanation', None) or error}") from None
        return {"id": instance, "container": container.id, "port": port, "image": request.image,
                "started": container.attrs.get("Created")}

    def _run(self, request: DeployRequest, instance: str, folder: Path, keys: Path, labels: dict, resources):
        return self.client.containers.run(
            request.image, ["python", "-m", "pipeline.server", "--config", f"{CONFIG_IN_CONTAINER}/server.json"],
            name=f"mlops-{instance}", detach=True, network_mode="host", labels=labels,
            environment=dict(request.environment_variables),
            volumes={str(folder): {"bind": CONFIG_IN_CONTAINER, "mode": "ro"},
                     str(keys.parent): {"bind": KEYS_IN_CONTAINER, "mode": "ro"},
                     str(request.model.path): {"bind": MODEL_IN_CONTAINER, "mode": "ro"},
                     str(self.data_dir): {"bind": DATA_IN_CONTAINER, "mode": "rw"}},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            nano_cpus=int(resources.cpu * 1e9) if resources.cpu else None,
            mem_limit=memory_bytes(resources.memory) if resources.memory else None)

    def _stop_instances(self, instances: list[dict], grace: float = STOP_GRACE_SECONDS) -> None:
        for instance in instances:
            container = self._container(instance)
            if container is not None:
                try:
                    container.stop(timeout=int(grace))  # SIGTERM: in-flight requests finish, data is flushed
                finally:
                    container.remove(force=True)

    def _instance_log(self, instance: dict, lines: int) -> str:
        container = self._container(instance)
        if container is None:
            return "(the container is gone)"
        return container.logs(tail=lines).decode("utf-8", "replace")

    def _reap_instances(self, known: list[dict]) -> None:
        """Remove labelled containers that no record names (left by an interrupted apply)."""
        ids = {record.get("container") for record in known}
        for container in self.client.containers.list(all=True, filters={"label": f"mlops.target={self.name}"}):
            if container.id not in ids:
                container.remove(force=True)
