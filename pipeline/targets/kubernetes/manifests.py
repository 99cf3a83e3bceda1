"""The Kubernetes objects of a ``type: kubernetes`` target, as plain dicts: pure, no API calls.

The adapter applies these (server-side apply) and ``mlops render`` prints them, so both must see the
same objects in the same order for the same input. Per deployment: an immutable ``ConfigMap`` with
the scoring service's JSON config (named by its digest, so a rollout never changes the config of the
pods it replaces), a ``Secret`` for the ``${VAR}`` environment variables, a ``Deployment``, a
``Service``, a ``PodDisruptionBudget`` when more than one instance must stay up, and a
``HorizontalPodAutoscaler`` for ``scale_settings.type: target_utilization``. Per endpoint: a
``Secret`` with the endpoint keys (read by the services and the router, which re-read it when the
kubelet updates the file, so rotation needs no restart), a ``Service``, and the traffic layer: the
mlops endpoint router (``routing: router``: its ``Deployment``, ``ConfigMap`` with the weights, read
again on change, and a ``PodDisruptionBudget``) or a Gateway API ``HTTPRoute`` (``routing: gateway``);
and when any of its deployments collects data, the collection sink (``pipeline.server.sink``): a
one-replica ``StatefulSet`` with a ``PersistentVolumeClaim`` (the target's ``collection``: size and
class), its ``ConfigMap`` and ``Service``, to which the scoring pods ship what they collect
(docs/collection-in-kubernetes.md).

Secret values are never written into any object but the two kinds of ``Secret``, and only when the
caller supplies them (``mlops render`` without them renders the Secrets empty). The model is not
mounted as on Docker: the image passed in (pinned by digest) must hold the verified model folder at
``MODEL_DIR``; collected data is spooled in an ``emptyDir`` at ``DATA_DIR`` and shipped to the sink.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import TargetError
from pipeline.registry.base import derived_folder  # the model image keeps its derived files where the registry does
from pipeline.server.router import READY_PATH
from pipeline.spec.model import CollectionStorage, Deployment, Endpoint, GatewayRef, Probe, ResourceAmounts, Spec
from pipeline.spec.model import Target as TargetSpec
from pipeline.targets.base import DeployRequest, server_config

PORT = 8080
UID = 10001  # the service user; also the Docker target's user when mlops runs as root
MODEL_DIR = "/var/lib/mlops/model"
DATA_DIR = "/var/lib/mlops/data"
CONFIG_DIR = "/etc/mlops"
KEYS_DIR = "/etc/mlops-keys"
KEYS_FILE = "keys.json"
SERVER_CONFIG = "server.json"
ROUTER_CONFIG = "router.json"
LIVE_PATH, READY_PATH_SERVICE = "/v2/health/live", "/v2/health/ready"  # the service's open health routes
PIN_HEADERS = ("x-mlops-deployment", "azureml-model-deployment")  # as the router honours them
ROUTER_REPLICAS = 2
STOP_GRACE_SECONDS = 30
SINK_PORT = 8081
SINK_CONFIG = "sink.json"
SHIP_GRACE_SECONDS = 20  # at SIGTERM a collecting pod ships its spool for this long, after its requests
GATEWAY_GROUP = "gateway.networking.k8s.io"
_DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MEMORY_UNITS = {"k": "k", "m": "M", "g": "G"}  # mlops (and Docker) read m as megabytes, Kubernetes as milli
# the order objects are applied in: what is referenced exists before what references it
KIND_ORDER = ("Secret", "ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget",
              "HorizontalPodAutoscaler", "HTTPRoute")
APP_NAMES = {"router": "mlops-router", "collector": "mlops-collector"}  # else mlops-scoring


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def object_name(*parts: str) -> str:
    """A DNS-1035 label (≤63, starts with a letter), valid for every kind including Services;
    too long a name keeps a hash of the whole so two long names stay apart."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if not text[:1].isalpha():
        text = f"mlops-{text}"
    if len(text) > 63:
        text = f"{text[:54].rstrip('-')}-{_short_hash(text)}"
    return text


def label_value(text: str) -> str:
    """A valid label value: ≤63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    value = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)
    if len(value) > 63:
        value = f"{value[:54].rstrip('-_.')}-{_short_hash(text)}"
    return value


def quantity_cpu(value: float | str) -> str:
    """Kubernetes CPU quantity: millicores for fractions, whole cores as they are."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def quantity_memory(value: str) -> str:
    return value[:-1] + _MEMORY_UNITS[value[-1]] if value[-1] in _MEMORY_UNITS else value


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _is_secret(value: str) -> bool:
    return bool(_VAR.search(value))


@dataclass(frozen=True)
class Meta:
    """What every object of one target carries: owner, place, and the commit it was rendered from."""

    project: str
    namespace: str
    routing: str
    gateway: GatewayRef | None
    spec_digest: str
    commit: str
    collection: CollectionStorage = CollectionStorage()

    @classmethod
    def of(cls, spec: Spec, target: TargetSpec, spec_digest: str, commit: str) -> Meta:
        return cls(spec.project_id(), target.namespace or "default", target.routing, target.gateway,
                   spec_digest, commit, target.collection)

    def labels(self, name: str, component: str, version: str, endpoint: str, deployment: str = "",
               model: str = "", model_version: str = "") -> dict[str, str]:
        labels = {
            "app.kubernetes.io/name": APP_NAMES.get(component, "mlops-scoring"),
            "app.kubernetes.io/instance": label_value(name),
            "app.kubernetes.io/version": label_value(version),
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "mlops",
            "mlops.dev/project": label_value(self.project),
            "mlops.dev/endpoint": label_value(endpoint),
            "mlops.dev/deployment": label_value(deployment),
            "mlops.dev/model": label_value(model),
            "mlops.dev/version": label_value(model_version),
        }
        return {key: value for key, value in labels.items() if value}

    def object(self, api: str, kind: str, name: str, labels: Mapping[str, str],
               annotations: Mapping[str, str] | None = None, **body: Any) -> dict:
        metadata = {"name": name, "namespace": self.namespace, "labels": dict(labels),
                    "annotations": {"mlops.dev/spec-digest": self.spec_digest, "mlops.dev/git-commit": self.commit,
                                    **(annotations or {})}}
        return {"apiVersion": api, "kind": kind, "metadata": metadata, **body}


def selector(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that pick a workload's pods: stable across versions, so updates roll in place."""
    keep = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "mlops.dev/project", "mlops.dev/endpoint",
            "mlops.dev/deployment")
    return {key: labels[key] for key in keep if key in labels}


# -- pods ---------------------------------------------------------------------------------------


def _probe(path: str, probe: Probe, liveness: bool) -> dict:
    """Azure ML's probe seconds as Kubernetes integers (at least 1 where Kubernetes requires it)."""
    return {"httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
            "initialDelaySeconds": math.ceil(probe.initial_delay),
            "periodSeconds": max(1, math.ceil(probe.period)),
            "timeoutSeconds": max(1, math.ceil(probe.timeout)),
            "successThreshold": 1 if liveness else probe.success_threshold,  # Kubernetes requires 1 for liveness
            "failureThreshold": probe.failure_threshold}


def _amounts(amounts: ResourceAmounts) -> dict[str, str]:
    found = {}
    if amounts.cpu is not None:
        found["cpu"] = quantity_cpu(amounts.cpu)
    if amounts.memory:
        found["memory"] = quantity_memory(amounts.memory)
    return found


def _resources(deployment: Deployment) -> dict:
    requests, limits = (_amounts(deployment.resources.effective_requests),
                        _amounts(deployment.resources.effective_limits))
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                       "runAsUser": UID, "runAsGroup": UID, "capabilities": {"drop": ["ALL"]}}
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                 "seccompProfile": {"type": "RuntimeDefault"}}


def _pod(labels: Mapping[str, str], container: dict, volumes: list[dict], annotations: Mapping[str, str],
         grace: int = STOP_GRACE_SECONDS) -> dict:
    return {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": {"automountServiceAccountToken": False, "enableServiceLinks": False,
                     "terminationGracePeriodSeconds": grace, "securityContext": dict(_POD_SECURITY),
                     "containers": [container], "volumes": volumes}}


def _keys_volume(endpoint: Endpoint) -> tuple[list[dict], list[dict]]:
    """The endpoint Secret as a volume (key auth only) and its mount."""
    if endpoint.auth_mode != "key":
        return [], []
    return ([{"name": "keys", "secret": {"secretName": object_name(endpoint.name, "keys"),
                                         "items": [{"key": KEYS_FILE, "path": KEYS_FILE}]}}],
            [{"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}])


# -- per deployment -----------------------------------------------------------------------------


def sink_url(endpoint: str, namespace: str) -> str:
    """Where an endpoint's scoring pods ship what they collect: its collection sink's Service."""
    return f"http://{object_name(endpoint, 'collector')}.{namespace}.svc:{SINK_PORT}"


def scoring_config(request: DeployRequest, namespace: str = "default") -> dict:
    """The service's JSON config, with the paths as they are inside the pod; a collecting deployment
    spools at ``DATA_DIR`` and ships to the endpoint's sink."""
    config = server_config(request, port=PORT, model_dir=Path(MODEL_DIR), keys_file=Path(KEYS_DIR) / KEYS_FILE,
                           data_dir=Path(DATA_DIR), host="0.0.0.0",  # noqa: S104 - the pod's network only
                           collection_sink=sink_url(request.endpoint.name, namespace),
                           derived_dir=derived_folder(Path(MODEL_DIR)))  # the model image's linear form, if any
    if "collection_sink" in config:
        config["collection_grace_seconds"] = SHIP_GRACE_SECONDS
    return config


def _grace(deployment: Deployment) -> int:
    """Long enough to finish the requests in flight, then ship the spool (``SHIP_GRACE_SECONDS``)."""
    if not deployment.data_collector.enabled:
        return STOP_GRACE_SECONDS
    finishing = math.ceil(deployment.request_settings.request_timeout_ms / 1000) + 2
    return max(STOP_GRACE_SECONDS, finishing + SHIP_GRACE_SECONDS + 5)


def deployment_manifests(request: DeployRequest, meta: Meta, progress_deadline_seconds: int = 600) -> list[dict]:
    """The objects of one deployment. ``request.image`` is the image pinned by digest (holding the
    model at ``MODEL_DIR``); ``request.environment_variables`` are the resolved values of the
    ``${VAR}`` variables, written only into the deployment's Secret (empty: a Secret without data)."""
    endpoint, deployment, model = request.endpoint, request.deployment, request.model
    if not request.image or not _DIGEST_REF.match(request.image):
        raise TargetError(f"deployment {deployment.key}: image {request.image!r} is not pinned by digest "
                          "(repository@sha256:<64 hex>); Kubernetes must run exactly the image that was built")
    name = object_name(endpoint.name, deployment.name)
    labels = meta.labels(name, "scoring", str(model.version), endpoint.name, deployment.name, model.name,
                         str(model.version))
    pods = selector(labels)
    config_text = json.dumps(scoring_config(request, meta.namespace), indent=2, sort_keys=True)
    config_name = object_name(name, _short_hash(config_text))
    objects = [meta.object("v1", "ConfigMap", config_name, labels, immutable=True,
                           data={SERVER_CONFIG: config_text})]

    env: list[dict] = []
    secret_name = object_name(name, "env")
    secret_data: dict[str, str] = {}
    for variable, value in sorted(deployment.environment_variables.items()):
        if not _is_secret(value):
            env.append({"name": variable, "value": value})
            continue
        if not _SECRET_KEY.match(variable):
            raise TargetError(f"deployment {deployment.key}: environment variable {variable!r} cannot be a "
                              "Secret key; use letters, digits, '-', '_' and '.'")
        env.append({"name": variable, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": variable}}})
        if variable in request.environment_variables:
            secret_data[variable] = _b64(request.environment_variables[variable])
    if any("valueFrom" in item for item in env):
        objects.append(meta.object("v1", "Secret", secret_name, labels, type="Opaque", data=secret_data))

    keys_volumes, keys_mounts = _keys_volume(endpoint)
    container = {
        "name": "scoring",
        "image": request.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "pipeline.server", "--config", f"{CONFIG_DIR}/{SERVER_CONFIG}"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(deployment),
        "readinessProbe": _probe(READY_PATH_SERVICE, deployment.readiness_probe, liveness=False),
        "livenessProbe": _probe(LIVE_PATH, deployment.liveness_probe, liveness=True),
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *keys_mounts,
                         {"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "config", "configMap": {"name": config_name}}, *keys_volumes,
               {"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    annotations = {"mlops.dev/model-digest": model.digest, "mlops.dev/settings-digest": request.settings_digest}
    scale = deployment.scale_settings
    spec: dict[str, Any] = {} if scale.autoscaled else {"replicas": deployment.instance_count}
    spec.update({
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": progress_deadline_seconds,
        "selector": {"matchLabels": pods},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": _pod(labels, container, volumes, annotations, _grace(deployment)),
    })
    objects.append(meta.object("apps/v1", "Deployment", name, labels, annotations, spec=spec))
    objects.append(_service(meta, name, labels, pods))
    least = scale.min_instances if scale.autoscaled else deployment.instance_count
    if least > 1:
        objects.append(_budget(meta, name, labels, pods))
    if scale.autoscaled:
        objects.append(meta.object("autoscaling/v2", "HorizontalPodAutoscaler", name, labels, spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scale.min_instances,
            "maxReplicas": scale.max_instances,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": scale.target_utilization_percentage}}}]}))
    return objects


def _service(meta: Meta, name: str, labels: Mapping[str, str], pods: Mapping[str, str]) -> dict:
    return meta.object("v1", "Service", name, labels, spec={
        "type": "ClusterIP", "selector": dict(pods),
        "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]})


def _budget(meta: Meta, name: str, labels: Mapping[str, str], pods: Mapping[str, str]) -> dict:
    """Voluntary disruptions (node drains) take one instance at a time."""
    return meta.object("policy/v1", "PodDisruptionBudget", name, labels,
                       spec={"maxUnavailable": 1, "selector": {"matchLabels": dict(pods)}})


# -- per endpoint -------------------------------------------------------------------------------


def _backend(meta: Meta, endpoint: str, deployment: str) -> str:
    return f"http://{object_name(endpoint, deployment)}.{meta.namespace}.svc:{PORT}"


def router_config(endpoint: Endpoint, meta: Meta) -> dict:
    """What ``pipeline.server.router`` reads: each deployment's Service as its one backend."""
    limits = [d.request_settings.max_body_bytes for d in endpoint.deployments.values()]
    return {"endpoint": endpoint.name, "host": "0.0.0.0", "port": PORT,  # noqa: S104 - the pod's network only
            "backends": {d: [_backend(meta, endpoint.name, d)] for d in sorted(endpoint.deployments)},
            "traffic": dict(sorted(endpoint.traffic.items())), "mirror": dict(sorted(endpoint.mirror_traffic.items())),
            "keys_file": f"{KEYS_DIR}/{KEYS_FILE}" if endpoint.auth_mode == "key" else None,
            "max_body_bytes": max(limits) if limits else None}


def endpoint_manifests(endpoint: Endpoint, meta: Meta, keys: Mapping[str, str] | None = None,
                       router_image: str | None = None) -> list[dict]:
    """The objects of one endpoint. ``keys`` (primary, secondary) go only into its Secret;
    ``router_image`` (pinned by digest, any image holding ``pipeline``) runs the router."""
    name = object_name(endpoint.name)
    component = "router" if meta.routing == "router" else "endpoint"
    labels = meta.labels(name, component, __version__, endpoint.name)
    objects = []
    if endpoint.auth_mode == "key":
        data = {KEYS_FILE: _b64(json.dumps(dict(keys), indent=2, sort_keys=True))} if keys else {}
        objects.append(meta.object("v1", "Secret", object_name(endpoint.name, "keys"), labels, type="Opaque",
                                   data=data))
    if meta.routing == "gateway":
        if router_image and _collects(endpoint):
            objects += collector_manifests(endpoint, meta, router_image)
        pods = selector(meta.labels("", "scoring", "", endpoint.name))  # every instance of the endpoint
        objects.append(_service(meta, name, labels, pods))
        objects.append(_route(endpoint, meta, name, labels))
        return objects
    if not router_image or not _DIGEST_REF.match(router_image):
        raise TargetError(f"endpoint {endpoint.name}: router image {router_image!r} is not pinned by digest")
    if _collects(endpoint):
        objects += collector_manifests(endpoint, meta, router_image)
    router = object_name(endpoint.name, "router")
    pods = selector(labels)
    text = json.dumps(router_config(endpoint, meta), indent=2, sort_keys=True)
    objects.append(meta.object("v1", "ConfigMap", router, labels, data={ROUTER_CONFIG: text}))
    keys_volumes, keys_mounts = _keys_volume(endpoint)
    container = {
        "name": "router",
        "image": router_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "pipeline.server.router", "--config", f"{CONFIG_DIR}/{ROUTER_CONFIG}"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        # ready once it has routes; alive while it accepts connections (no routes is not a reason to restart)
        "readinessProbe": {"httpGet": {"path": READY_PATH, "port": "http", "scheme": "HTTP"},
                           "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2,
                          "failureThreshold": 3},
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *keys_mounts,
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "config", "configMap": {"name": router}}, *keys_volumes, {"name": "tmp", "emptyDir": {}}]
    objects.append(meta.object("apps/v1", "Deployment", router, labels, spec={
        "replicas": ROUTER_REPLICAS, "revisionHistoryLimit": 3, "progressDeadlineSeconds": 300,
        "selector": {"matchLabels": pods},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        "template": _pod(labels, container, volumes, {})}))
    objects.append(_budget(meta, router, labels, pods))
    objects.append(_service(meta, name, labels, pods))
    return objects


def _collects(endpoint: Endpoint) -> bool:
    return any(d.data_collector.enabled for d in endpoint.deployments.values())


def collector_manifests(endpoint: Endpoint, meta: Meta, image: str) -> list[dict]:
    """The endpoint's collection sink: ``ConfigMap``, ``Service``, one-replica ``StatefulSet`` whose PVC
    (from ``volumeClaimTemplates``, kept when the StatefulSet is deleted) holds what was shipped."""
    if not _DIGEST_REF.match(image):
        raise TargetError(f"endpoint {endpoint.name}: collection sink image {image!r} is not pinned by digest")
    name = object_name(endpoint.name, "collector")
    labels = meta.labels(name, "collector", __version__, endpoint.name)
    pods = selector(labels)
    config = {"endpoint": endpoint.name, "data_dir": DATA_DIR, "port": SINK_PORT,
              "host": "0.0.0.0",  # noqa: S104 - the pod's network only
              "keys_file": f"{KEYS_DIR}/{KEYS_FILE}" if endpoint.auth_mode == "key" else None, "log_level": "info"}
    keys_volumes, keys_mounts = _keys_volume(endpoint)
    container = {
        "name": "sink",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "pipeline.server.sink", "--config", f"{CONFIG_DIR}/{SINK_CONFIG}"],
        "ports": [{"name": "http", "containerPort": SINK_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/v1/ready", "port": "http", "scheme": "HTTP"},
                           "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/v1/live", "port": "http", "scheme": "HTTP"},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *keys_mounts,
                         {"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes = [{"name": "config", "configMap": {"name": name}}, *keys_volumes, {"name": "tmp", "emptyDir": {}}]
    storage = meta.collection
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage.size}}}
    if storage.storage_class:
        claim["storageClassName"] = storage.storage_class
    return [
        meta.object("v1", "ConfigMap", name, labels, data={SINK_CONFIG: json.dumps(config, indent=2, sort_keys=True)}),
        meta.object("v1", "Service", name, labels, spec={
            "type": "ClusterIP", "selector": dict(pods),
            "ports": [{"name": "http", "port": SINK_PORT, "targetPort": "http", "protocol": "TCP"}]}),
        meta.object("apps/v1", "StatefulSet", name, labels, spec={
            "replicas": 1, "serviceName": name, "revisionHistoryLimit": 3,
            "selector": {"matchLabels": pods},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": _pod(labels, container, volumes, {}),
            "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": dict(pods)}, "spec": claim}]}),
    ]


def _route(endpoint: Endpoint, meta: Meta, name: str, labels: Mapping[str, str]) -> dict:
    """Weights as ``backendRefs``, mirrors as ``RequestMirror`` filters; a pin header picks a deployment."""
    if meta.gateway is None:  # the loader refuses routing: gateway without one
        raise TargetError(f"endpoint {endpoint.name}: routing is gateway but the target names no gateway")

    def ref(deployment: str) -> dict:
        return {"name": object_name(endpoint.name, deployment), "port": PORT}

    pinned = [{"matches": [{"headers": [{"type": "Exact", "name": header, "value": deployment}]}
                           for header in PIN_HEADERS],
               "backendRefs": [ref(deployment)]} for deployment in sorted(endpoint.deployments)]
    mirrors = [{"type": "RequestMirror", "requestMirror": {"backendRef": ref(deployment), "percent": percent}}
               for deployment, percent in sorted(endpoint.mirror_traffic.items()) if percent]
    live: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{**ref(d), "weight": w} for d, w in sorted(endpoint.traffic.items())]}
    if mirrors:
        live["filters"] = mirrors
    parent = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": meta.gateway.name,
              "namespace": meta.gateway.namespace or meta.namespace}
    return meta.object(f"{GATEWAY_GROUP}/v1", "HTTPRoute", name, labels,
                       spec={"parentRefs": [parent], "rules": [*pinned, live]})


# -- everything ---------------------------------------------------------------------------------


def render(spec: Spec, target: str, requests: Iterable[DeployRequest], *, spec_digest: str, commit: str,
           keys: Mapping[str, Mapping[str, str]] | None = None, router_image: str | None = None) -> list[dict]:
    """Every object of ``target`` in apply order (kind, then name). ``requests`` holds one deploy
    request per deployment on the target; ``keys`` the endpoint keys by endpoint name."""
    meta = Meta.of(spec, spec.targets[target], spec_digest, commit)
    objects = [o for e in spec.endpoints.values() if e.target == target
               for o in endpoint_manifests(e, meta, (keys or {}).get(e.name), router_image)]
    objects += [o for request in requests for o in deployment_manifests(request, meta)]
    seen: dict[tuple[str, str], dict] = {}
    for item in objects:
        key = (item["kind"], item["metadata"]["name"])
        if key in seen:
            raise TargetError(f"two objects would both be {key[0]} {key[1]!r} (endpoint "
                              f"{item['metadata']['labels'].get('mlops.dev/endpoint')}); rename an endpoint or "
                              "deployment so that '<endpoint>-<deployment>' names stay apart")
        seen[key] = item
    return sorted(objects, key=lambda o: (KIND_ORDER.index(o["kind"]), o["metadata"]["name"]))
