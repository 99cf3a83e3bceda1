"""The local target (the embedded default): deployments as detached processes on this machine.

A ``RoutedTarget`` (records, routes, the endpoint router, drift and healing) composed with a
``ProcessRunner``: each instance is ``python -m pipeline.server`` on 127.0.0.1, in the
environment's venv when the deployment names one, else in the Python that runs mlops. Processes
outlive the ``mlops`` command; the target's process scan finds those no record names.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from pipeline.spec.model import Target as TargetSpec
from pipeline.targets.base import DeployRequest, server_config
from pipeline.targets.health import free_port
from pipeline.targets.routed import HOST, RoutedTarget, _alive, _stop, _tail, _write


class ProcessRunner:
    """Instances as processes started under the target's folder."""

    def __init__(self, target: RoutedTarget):
        self.target = target

    def start(self, request: DeployRequest) -> dict:
        target = self.target
        instance = f"{request.endpoint.name}-{request.deployment.name}-{uuid.uuid4().hex[:8]}"
        port = free_port(HOST)
        config = server_config(request, port=port, model_dir=request.model.path,
                               keys_file=target.keys_file(request.endpoint.name),
                               data_dir=target.data_dir, host=HOST, derived_dir=request.model.derived_dir)
        config_path = target.root / "instances" / f"{instance}.json"
        log = target.root / "logs" / f"{instance}.log"
        _write(config_path, {**config, "log_file": str(log)})  # the service rotates it; stdout gets only a crash
        python = str(request.interpreter or sys.executable)
        record = target._spawn([python, "-m", "pipeline.server", "--config", str(config_path)],
                               log.with_suffix(".out"), request.environment_variables,
                               isolated=request.interpreter is not None)
        return {**record, "id": instance, "port": port, "config": str(config_path)}

    def alive(self, instance: dict) -> bool:
        return _alive(instance)

    def stop(self, instances: list[dict], grace: float) -> None:
        _stop(instances, grace)

    def log(self, instance: dict, lines: int) -> str:
        """The service's own log, then whatever it printed outside logging (a crash before it started)."""
        text = _tail(Path(instance["log"]).with_suffix(".log"), lines)
        crash = _tail(Path(instance["log"]).with_suffix(".out"), lines)
        return "\n".join(part for part in (text, crash) if part)

    def unrecorded(self, known: list[dict]) -> list[dict]:
        return []  # processes: the target's process scan finds them

    def before_forget(self, what: str, **labels: str) -> None:
        """Nothing first: the records name every process, and the scan finds the rest."""


class LocalTarget(RoutedTarget):
    """Deployments as processes on this machine (``type: local``)."""

    def __init__(self, spec: TargetSpec, state_dir: Path, project: str | None = None):
        super().__init__(spec, state_dir, project, folder="local", runner=ProcessRunner)
