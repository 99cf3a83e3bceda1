"""Targets whose endpoints are a router process on this machine in front of instances: the parts
they share (records, routes, the router, drift and healing), with the instances run by a runner.

The local target runs instances as processes (``targets/local.py``), the Docker target as
containers (``targets/docker.py``); each is this class composed with its ``InstanceRunner``.

Each deployment instance is a scoring-service process on 127.0.0.1 with an allocated port; each
endpoint is a router process with one stable URL. Processes outlive the ``mlops`` command that
started them; what runs is recorded under ``<state>/local/``::

    endpoints/<endpoint>/endpoint.json           port, auth mode, traffic, mirror, router pid
    endpoints/<endpoint>/router.json             the router's routes (derived from the records)
    endpoints/<endpoint>/keys.json               the endpoint keys (mode 0600)
    endpoints/<endpoint>/deployments/<name>.json model, settings digest, committed instances
    instances/<id>.json, logs/<id>.log           each process's config and log

Crash safety comes from one rule: the records are the truth, written atomically, and a process
is only ever routed to after it was committed to them. ``observe`` compares what really runs with
the records (each router's live routes, processes started under this folder that no record names)
and reports every divergence as the endpoint's drift, so ``plan`` shows it and ``status`` never
misreports; ``ensure_endpoint`` heals it (re-derives the routes, waits until the router serves
them, then stops the orphans), so an apply killed at any point converges when run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import psutil

from pipeline import keys as endpoint_keys
from pipeline.errors import HealthCheckFailed, TargetError
from pipeline.faults import crash_point
from pipeline.server.router import READY_PATH
from pipeline.spec.model import Endpoint, Probe
from pipeline.spec.model import Target as TargetSpec
from pipeline.state import DEGRADED, RUNNING, STOPPED, ObservedDeployment, ObservedEndpoint
from pipeline.targets.base import DeployRequest
from pipeline.targets.health import READY_ROUTE, free_port, wait_ready

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 15
ROUTER_PROBE = Probe(period=0.05, timeout=1.0, failure_threshold=200)
ROUTER_RELOAD_SECONDS = 0.5  # the router polls its routes file every 50 ms; past this, stale routes are drift


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write(path: Path, data: dict) -> None:
    endpoint_keys.write_atomic(path, data, mode=0o644)
    crash_point(f"record {path.parent.name}/{path.name}")


def _inherited_environment(isolated: bool = False) -> dict[str, str]:
    """This process's environment without fault-injection settings (they are meant for mlops itself),
    and without PYTHONPATH for a process ``isolated`` in its own venv."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith("MLOPS_CRASH_") and not (isolated and key == "PYTHONPATH")}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _config_argument(cmdline: list[str]) -> str | None:
    """The ``--config FILE`` of a router or service command line."""
    for flag, value in zip(cmdline, cmdline[1:], strict=False):
        if flag == "--config":
            return value
    return None


def _alive(record: dict) -> bool:
    """The recorded process still runs (same pid and start time, so a reused pid doesn't count)."""
    try:
        process = psutil.Process(record["pid"])
        return (abs(process.create_time() - record["create_time"]) < 0.01
                and process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return False


def _stop(records: list[dict], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM (the service finishes in-flight requests and flushes), then SIGKILL after ``grace``."""
    processes = []
    for record in records:
        if _alive(record):
            process = psutil.Process(record["pid"])
            try:
                process.send_signal(signal.SIGTERM)
                processes.append(process)
            except psutil.NoSuchProcess:
                pass
    _, left = psutil.wait_procs(processes, timeout=grace)
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=5)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def default_project(state_dir: Path) -> str:
    """A project identity when the caller gives none: the state folder (one per repository), hashed."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


class InstanceRunner(Protocol):
    """Where a routed target's instances run (processes, containers); records and routing stay the target's."""

    def start(self, request: DeployRequest) -> dict:
        """Start one instance serving 127.0.0.1 on a free port; returns its record (with ``port``)."""
        ...

    def alive(self, instance: dict) -> bool: ...

    def stop(self, instances: list[dict], grace: float) -> None:
        """SIGTERM (in-flight requests finish, collected data is flushed), then kill after ``grace``."""
        ...

    def log(self, instance: dict, lines: int) -> str: ...

    def unrecorded(self, known: list[dict]) -> list[dict]:
        """Instances no record names that a process scan cannot find (containers), with their endpoint."""
        ...

    def before_forget(self, what: str, **labels: str) -> None:
        """Stop what runs for an endpoint or deployment before its records are removed (or refuse)."""
        ...


class RoutedTarget:
    """Endpoints as router processes on this machine, deployments as instances a runner starts."""

    def __init__(self, spec: TargetSpec, state_dir: Path, project: str | None,
                 folder: str, runner: Callable[[RoutedTarget], InstanceRunner]):
        self.name = spec.name
        self.spec = spec
        self.project = project or default_project(state_dir)
        self.root = state_dir / folder
        self.data_dir = state_dir / "data"
        self._http = httpx.Client(timeout=1.0)
        self.runner = runner(self)

    def lock(self, operation: str, notice: Callable[[str], None] | None = None) -> None:
        """None: this machine's records are guarded by the state lock."""
        return None

    def _stop_instances(self, instances: list[dict], grace: float = STOP_GRACE_SECONDS) -> None:
        self.runner.stop(instances, grace)
        if instances:
            crash_point("instances stopped")

    # -- records ---------------------------------------------------------------------------

    def _endpoint_dir(self, endpoint: str) -> Path:
        return self.root / "endpoints" / endpoint

    def _deployment_file(self, endpoint: str, deployment: str) -> Path:
        return self._endpoint_dir(endpoint) / "deployments" / f"{deployment}.json"

    def keys_file(self, endpoint: str) -> Path:
        return self._endpoint_dir(endpoint) / "keys.json"

    def _endpoints(self) -> list[str]:
        folder = self.root / "endpoints"
        return sorted(p.name for p in folder.iterdir() if (p / "endpoint.json").exists()) \
            if folder.exists() else []

    def _deployments(self, endpoint: str) -> dict[str, dict]:
        folder = self._endpoint_dir(endpoint) / "deployments"
        records = {}
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            record = _read(path)
            if record:
                records[path.stem] = record
        return records

    # -- observe ---------------------------------------------------------------------------

    def observe(self) -> tuple[list[ObservedEndpoint], list[ObservedDeployment]]:
        endpoints, deployments = [], []
        orphans = self._orphans()
        for name in self._endpoints():
            record = _read(self._endpoint_dir(name) / "endpoint.json") or {}
            router_up = _alive(record.get("router", {}))
            endpoints.append(ObservedEndpoint(
                name=name, target=self.name, url=f"http://{HOST}:{record.get('port')}",
                auth_mode=record.get("auth_mode", "key"), traffic=record.get("traffic", {}),
                mirror_traffic=record.get("mirror", {}), status=RUNNING if router_up else STOPPED,
                drift=self._drift(name, record, router_up, [o for o in orphans if o.get("endpoint") == name])))
            for deployment, state in self._deployments(name).items():
                deployments.append(self._observe_deployment(name, deployment, state))
        return endpoints, deployments

    def _observe_deployment(self, endpoint: str, name: str, state: dict) -> ObservedDeployment:
        instances = state.get("instances", [])
        ready = sum(1 for i in instances if self.runner.alive(i) and self._ready(i["port"]))
        status = RUNNING if instances and ready == len(instances) else DEGRADED if ready else STOPPED
        return ObservedDeployment(
            endpoint=endpoint, name=name, target=self.name, model=state["model"],
            environment=state.get("environment"), image=state.get("image"), instance_count=len(instances),
            ready_instances=ready, settings_digest=state.get("settings_digest", ""), status=status,
            detail={"urls": [f"http://{HOST}:{i['port']}" for i in instances],
                    "instances": [i.get("id") for i in instances], "started": state.get("updated")})

    def _drift(self, endpoint: str, record: dict, router_up: bool, orphans: list[dict]) -> tuple[str, ...]:
        """How what runs differs from the records (left by an interrupted apply or a hand edit)."""
        reasons = []
        text, generation = self._routes(endpoint)
        if _read_text(self._endpoint_dir(endpoint) / "router.json") != text:
            reasons.append("the router's routes do not match the deployment records")
        elif router_up and not self._router_serves(record, generation, ROUTER_RELOAD_SECONDS):
            reasons.append("the router serves routes that do not match the deployment records")
        if orphans:
            reasons.append(f"{len(orphans)} instance(s) that no record names still run")
        return tuple(reasons)

    def _router_serves(self, record: dict, generation: str, wait: float) -> bool:
        """The router answers with ``generation`` within ``wait`` seconds."""
        url = f"http://{HOST}:{record.get('port')}{READY_PATH}"
        deadline = time.monotonic() + wait
        while True:
            try:
                if self._http.get(url).json().get("generation") == generation:
                    return True
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _ready(self, port: int) -> bool:
        try:
            return self._http.get(f"http://{HOST}:{port}{READY_ROUTE}").status_code == 200
        except httpx.HTTPError:
            return False

    # -- endpoints -------------------------------------------------------------------------

    def ensure_endpoint(self, endpoint: Endpoint) -> ObservedEndpoint:
        """Create the endpoint's record, keys and router, or heal it: restart a router that died,
        make it serve the routes the records say, and stop instances no record names."""
        folder = self._endpoint_dir(endpoint.name)
        path = folder / "endpoint.json"
        record = _read(path) or {"name": endpoint.name, "port": self._port(endpoint.name), "traffic": {},
                                 "mirror": {}, "created": _now()}
        record["auth_mode"] = endpoint.auth_mode
        if endpoint.auth_mode == "key":
            endpoint_keys.ensure_keys(self.keys_file(endpoint.name))
        _write(path, record)
        self._sync_routes(endpoint.name)
        if not _alive(record.get("router", {})):
            record["router"] = self._spawn(
                [sys.executable, "-m", "pipeline.server.router", "--config", str(folder / "router.json")],
                folder / "router.log")
            _write(path, record)
            self._wait_router(endpoint.name, record)
        self.reap_orphans()
        return ObservedEndpoint(name=endpoint.name, target=self.name, url=f"http://{HOST}:{record['port']}",
                                auth_mode=endpoint.auth_mode, traffic=record["traffic"],
                                mirror_traffic=record["mirror"])

    def _port(self, endpoint: str) -> int:
        """The port this endpoint had before (kept across destroy and apply unless taken), else the
        target's ``port`` or the next free one above it not given to another endpoint, else any."""
        path = self.root / "ports.json"
        ports = _read(path) or {}
        wanted = ports.get(endpoint)
        base = self.spec.port
        if base and (wanted is None or wanted < base):
            others = {p for name, p in ports.items() if name != endpoint}
            wanted = next((p for p in range(base, min(base + 100, 65536))
                           if p not in others and free_port(HOST, p) == p), None)
        port = free_port(HOST, wanted)
        if port != ports.get(endpoint):
            _write(path, {**ports, endpoint: port})
        return port

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        path = self._endpoint_dir(endpoint) / "endpoint.json"
        record = _read(path)
        if record is None:
            raise TargetError(f"endpoint '{endpoint}' does not exist on target '{self.name}'")
        record["traffic"], record["mirror"] = dict(traffic), dict(mirror)
        _write(path, record)
        self._switch(endpoint)

    def delete_endpoint(self, endpoint: str) -> None:
        """Stop every instance of the endpoint (also ones no record names), then its records and router."""
        self.runner.before_forget(f"endpoint {endpoint}", endpoint=endpoint)
        folder = self._endpoint_dir(endpoint)
        for deployment in self._deployments(endpoint):
            self.delete(endpoint, deployment)
        record = _read(folder / "endpoint.json")
        if record:
            _stop([record.get("router", {})])
            (folder / "endpoint.json").unlink()
        self._stop_orphans([o for o in self._orphans() if o.get("endpoint") == endpoint])

    def url(self, endpoint: str) -> str | None:
        record = _read(self._endpoint_dir(endpoint) / "endpoint.json")
        return f"http://{HOST}:{record['port']}" if record else None

    def keys(self, endpoint: str) -> dict[str, str]:
        """The endpoint's keys, from its keys file (created by ``ensure_endpoint``)."""
        path = self.keys_file(endpoint)
        if not path.exists():
            raise TargetError(f"endpoint '{endpoint}' has no keys yet on target '{self.name}'; run mlops apply first")
        return endpoint_keys.read_keys(path)

    def rotate_key(self, endpoint: str, which: str) -> dict[str, str]:
        """Replace one key; services and the router re-read the file, so the other stays valid meanwhile."""
        if which not in endpoint_keys.KEY_NAMES:
            raise TargetError(f"no key '{which}': an endpoint's keys are {' and '.join(endpoint_keys.KEY_NAMES)}")
        self.keys(endpoint)  # an endpoint without keys gets none by rotating
        return endpoint_keys.regenerate(self.keys_file(endpoint), which)

    # -- routing ---------------------------------------------------------------------------

    def _routes(self, endpoint: str) -> tuple[str, str]:
        """The router's routes as the records say (file text) and their generation."""
        folder = self._endpoint_dir(endpoint)
        record = _read(folder / "endpoint.json") or {}
        deployments = self._deployments(endpoint)
        backends = {name: [f"http://{HOST}:{i['port']}" for i in state.get("instances", [])]
                    for name, state in deployments.items()}
        limits = [state["max_body_bytes"] for state in deployments.values() if state.get("max_body_bytes")]
        routes = {"endpoint": endpoint, "host": HOST, "port": record.get("port"), "backends": backends,
                  "traffic": record.get("traffic", {}), "mirror": record.get("mirror", {}),
                  # the router checks keys and sizes before any body is read, and rotates its own log
                  "keys_file": str(self.keys_file(endpoint)) if record.get("auth_mode") == "key" else None,
                  "max_body_bytes": max(limits) if limits else None,
                  # where the router collects the requests it refuses itself, when the endpoint collects
                  "data_dir": str(self.data_dir) if any(s.get("collects") for s in deployments.values()) else None,
                  "log": {"file": str(folder / "router.log")}}
        text = json.dumps(routes, indent=2, sort_keys=True)
        return text, hashlib.sha256(text.encode()).hexdigest()[:16]

    def _sync_routes(self, endpoint: str) -> str:
        """Write the router's routes from the records; returns the generation to wait for."""
        folder = self._endpoint_dir(endpoint)
        text, generation = self._routes(endpoint)
        current = folder / "router.json"
        if _read_text(current) != text:
            folder.mkdir(parents=True, exist_ok=True)
            temp = folder / ".router.json.tmp"
            temp.write_text(text)
            os.replace(temp, current)
            crash_point("routes written")
        return generation

    def _switch(self, endpoint: str) -> None:
        """Re-derive the routes and wait until the router serves them (if the router runs)."""
        generation = self._sync_routes(endpoint)
        record = _read(self._endpoint_dir(endpoint) / "endpoint.json") or {}
        if _alive(record.get("router", {})):
            self._wait_router(endpoint, record, generation)
            crash_point("router switched")

    def _wait_router(self, endpoint: str, record: dict, generation: str | None = None) -> None:
        url = f"http://{HOST}:{record['port']}{READY_PATH}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                answer = self._http.get(url).json()
                if generation is None or answer.get("generation") == generation:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if not _alive(record.get("router", {})):
                break
            time.sleep(0.02)
        raise TargetError(f"the router of endpoint '{endpoint}' did not take its new routes:\n"
                          + _tail(self._endpoint_dir(endpoint) / "router.log", 20))

    # -- deployments -----------------------------------------------------------------------

    def _spawn(self, command: list[str], log_path: Path, env: Mapping[str, str] | None = None,
               isolated: bool = False) -> dict:
        """Start a detached process (its own session: it outlives mlops) logging to ``log_path``.

        ``isolated``: it runs in an environment's venv, so mlops's own PYTHONPATH is not passed on.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
                env={**_inherited_environment(isolated), **(env or {})})
        return {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time(),
                "command": command, "log": str(log_path), "started": _now()}

    def deploy(self, request: DeployRequest) -> ObservedDeployment:
        """Rolling replacement: start new instances, wait ready, commit, switch routes, stop old."""
        endpoint, deployment = request.endpoint.name, request.deployment
        self.ensure_endpoint(request.endpoint)  # also routes by the records and stops what no record names
        path = self._deployment_file(endpoint, deployment.name)
        old = _read(path) or {}
        new = [self.runner.start(request) for _ in range(deployment.instance_count)]
        failures = [why for why in (self._await(i, deployment.readiness_probe) for i in new) if why]
        if failures:
            tail = self.runner.log(new[0], 30)
            self._stop_instances(new, grace=2)
            raise HealthCheckFailed(
                f"deployment {endpoint}/{deployment.name} did not become ready: {failures[0]}; "
                f"{'the previous version keeps serving' if old else 'nothing was deployed'}.\n"
                f"Last lines of its log:\n{tail}")
        state = {"model": request.model.ref, "model_digest": request.model.digest, "image": request.image,
                 "environment": deployment.environment, "settings_digest": request.settings_digest,
                 "max_body_bytes": deployment.request_settings.max_body_bytes,
                 "collects": deployment.data_collector.enabled, "instances": new, "updated": _now()}
        _write(path, state)  # commit: from here on, the new instances are the deployment
        self._switch(endpoint)  # the router sends no new request to the old instances
        self._stop_instances(old.get("instances", []))
        return self._observe_deployment(endpoint, deployment.name, state)

    def _await(self, instance: dict, probe: Probe) -> str:
        ready, why = wait_ready(f"http://{HOST}:{instance['port']}{READY_ROUTE}", probe,
                                alive=lambda: self.runner.alive(instance))
        return "" if ready else why

    def delete(self, endpoint: str, deployment: str) -> None:
        """Stop the deployment's instances, then forget it (a runner that cannot stop them refuses)."""
        self.runner.before_forget(f"deployment {endpoint}/{deployment}", endpoint=endpoint, deployment=deployment)
        path = self._deployment_file(endpoint, deployment)
        state = _read(path)
        if state is None:
            return
        path.unlink()
        self._switch(endpoint)
        self._stop_instances(state.get("instances", []))

    def metrics(self, endpoint: str, deployment: str) -> dict[str, str]:
        state = _read(self._deployment_file(endpoint, deployment)) or {}
        texts = {}
        for instance in state.get("instances", []):
            try:
                answer = self._http.get(f"http://{HOST}:{instance['port']}/metrics")
            except httpx.HTTPError:
                continue  # stopping or restarting: what it counted is not read
            if answer.status_code == 200:
                texts[instance["id"]] = answer.text
        return texts

    def logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        state = _read(self._deployment_file(endpoint, deployment))
        if state is None:
            raise TargetError(f"no deployment {endpoint}/{deployment} on target '{self.name}'")
        return "\n".join(f"==> {i['id']} <==\n{self.runner.log(i, lines)}" for i in state["instances"])

    # -- crash recovery --------------------------------------------------------------------

    def reap_orphans(self) -> list[int]:
        """Route by the records, then stop what no record names (left by an interrupted apply)."""
        for endpoint in self._endpoints():
            self._switch(endpoint)
        orphans = self._orphans()
        self._stop_orphans(orphans)
        return [o["pid"] for o in orphans if "pid" in o]

    def _stop_orphans(self, orphans: list[dict]) -> None:
        """Processes by pid, other instances (containers) the way this target stops them."""
        _stop([o for o in orphans if "pid" in o], grace=5)
        self._stop_instances([o for o in orphans if "pid" not in o], grace=5)
        if orphans:
            crash_point("orphans stopped")

    def _orphans(self) -> list[dict]:
        """Processes started under this folder that no record names, with the endpoint they served."""
        known = {json.dumps(r.get("command")) for r in self._records()}
        marker = str(self.root)
        orphans = []
        for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
            cmdline = process.info["cmdline"] or []
            if any(marker in part for part in cmdline) and json.dumps(cmdline) not in known:
                orphans.append({"pid": process.info["pid"], "create_time": process.info["create_time"],
                                "endpoint": self._endpoint_of(_config_argument(cmdline))})
        return orphans + self.runner.unrecorded(self._records())

    def _endpoint_of(self, config: str | None) -> str | None:
        """The endpoint a router (endpoints/<name>/router.json) or an instance config belongs to."""
        if config is None:
            return None
        path = Path(config)
        if path.name == "router.json":
            return path.parent.name
        return (_read(path) or {}).get("endpoint") if path.suffix == ".json" else None

    def _records(self) -> list[dict]:
        records = []
        for endpoint in self._endpoints():
            record = _read(self._endpoint_dir(endpoint) / "endpoint.json") or {}
            records.append(record.get("router", {}))
            for state in self._deployments(endpoint).values():
                records.extend(state.get("instances", []))
        return records
