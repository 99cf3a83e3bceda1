"""The Kubernetes target: deployments as Kubernetes objects, applied server-side, read back by label.

Objects are the ones ``manifests.py`` renders (``target_objects`` here adds what ``observe`` reads
back), applied with server-side apply as field manager ``mlops``, never forced: a field someone
changed by hand (``kubectl scale``, ``kubectl edit``) is a 409 conflict naming that manager, for the
user to resolve, not silently overwritten. Transient API failures (429, 5xx, a dropped connection)
are retried with capped backoff; anything else stops at once with the API's message.

``deploy`` keeps the Deployment as it was, applies the new objects, and waits for the rollout; when
it never completes (``ProgressDeadlineExceeded`` or the timeout) the previous spec is applied back,
so the old pods keep serving, and ``HealthCheckFailed`` carries the failing pods' events and logs.

Images: the pods run an image pinned by digest that holds the model at ``MODEL_DIR``: the
``model_image(request)`` hook (``cli/wiring.py`` passes ``builders.model_image``) builds and pushes
it on the request's environment image. Without one, the request's ``image`` must itself be pinned
by digest and hold the model.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pipeline import keys as endpoint_keys
from pipeline.errors import HealthCheckFailed, TargetError
from pipeline.server.events import Event
from pipeline.spec.model import Endpoint
from pipeline.spec.model import Target as TargetSpec
from pipeline.state import DEGRADED, RUNNING, STOPPED, Health, ObservedDeployment, ObservedEndpoint
from pipeline.targets.base import DeployRequest
from pipeline.targets.kubernetes import manifests
from pipeline.targets.kubernetes.client import FIELD_MANAGER, ApiError, Cluster, KubeClient
from pipeline.targets.kubernetes.lease import LeaseLock
from pipeline.targets.kubernetes.manifests import KEYS_FILE, PORT, ROUTER_CONFIG, Meta, label_value, object_name
from pipeline.targets.routed import default_project

RETRIES = 4
BACKOFF_SECONDS, BACKOFF_CAP_SECONDS = 0.5, 8.0
POLL_SECONDS = 2.0
TRANSIENT = {0, 429, 500, 502, 503, 504}
# what is pruned by label, in reverse apply order (what references goes before what it references)
KINDS = (("gateway.networking.k8s.io/v1", "HTTPRoute"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
         ("policy/v1", "PodDisruptionBudget"), ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
         ("v1", "Service"), ("v1", "ConfigMap"),
         ("v1", "Secret"))
ENVIRONMENT, IMAGE, MODEL, COUNT = ("mlops.dev/environment", "mlops.dev/image", "mlops.dev/model-ref",
                                    "mlops.dev/instance-count")
SETTINGS, AUTOSCALED = "mlops.dev/settings-digest", "mlops.dev/autoscaled"
ModelImage = Callable[[DeployRequest], str]


def target_objects(request: DeployRequest, meta: Meta, pinned_image: str) -> list[dict]:
    """The objects of one deployment as applied and rendered: the manifests with the pinned image, and
    on the Deployment what ``observe`` reads back (the planner's image reference, environment, model)."""
    objects = manifests.deployment_manifests(replace(request, image=pinned_image), meta)
    for item in objects:
        if item["kind"] == "Deployment":
            item["metadata"]["annotations"].update({
                IMAGE: request.image or pinned_image, ENVIRONMENT: request.deployment.environment or "",
                MODEL: request.model.ref, COUNT: str(request.deployment.instance_count),
                AUTOSCALED: str(request.deployment.scale_settings.autoscaled).lower()})
    return sorted(objects, key=lambda o: manifests.KIND_ORDER.index(o["kind"]))  # referenced before referencing


def _clean(obj: dict) -> dict:
    """An object as it can be applied again: without status and what the server keeps for itself."""
    metadata = obj.get("metadata", {})
    keep = {key: metadata[key] for key in ("name", "namespace", "labels", "annotations") if metadata.get(key)}
    keep.get("annotations", {}).pop("deployment.kubernetes.io/revision", None)
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": keep,
            **{key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata", "status")}}


def _conflict_managers(message: str) -> list[str]:
    """The other field managers a 409 apply conflict names (``conflict with "kubectl-edit" ...``)."""
    found = []
    for part in message.split('conflict with "')[1:]:
        manager = part.split('"', 1)[0]
        if manager not in found:
            found.append(manager)
    return found


def _pod_image(spec: dict) -> str | None:
    """The image the pods pull (the model image by digest): what garbage collection must keep."""
    containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
    return containers[0].get("image")


class CollectedEvents:
    """The events a sink streamed back, in time order, with its count of files read (as ``EventReader``)."""

    def __init__(self, events: list[Event], files_read: int, skipped: int, truncated: bool):
        self.events, self.files_read, self.skipped, self.truncated = events, files_read, skipped, truncated

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    @classmethod
    def parse(cls, body: bytes) -> CollectedEvents:
        events, summary, skipped = [], {}, 0
        for line in body.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if isinstance(data, dict) and isinstance(data.get("summary"), dict):
                summary = data["summary"]
                continue
            event = Event.from_json(data)
            if event is None:
                skipped += 1
            else:
                events.append(event)
        events.sort(key=lambda e: e.time)  # the sink merges them already: a cheap guarantee
        return cls(events, int(summary.get("files_read", 0)), int(summary.get("skipped", 0)) + skipped,
                   bool(summary.get("truncated", not summary)))


class KubernetesTarget:
    """Deployments as Deployments, Services and friends in one namespace (``type: kubernetes``)."""

    def __init__(self, spec: TargetSpec, state_dir: Path, project: str | None = None, *,
                 client: Cluster | None = None, model_image: ModelImage | None = None,
                 spec_digest: str = "", commit: str = "", rollout_timeout: float | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.name = spec.name
        self.spec = spec
        self.project = project or default_project(state_dir)
        self.namespace = spec.namespace or "default"
        self.client: Cluster = client or KubeClient(self.namespace, spec.context)
        self.model_image = model_image or self._digest_image
        self.meta = Meta(self.project, self.namespace, spec.routing, spec.gateway, spec_digest, commit,
                         spec.collection)
        self.rollout_timeout = rollout_timeout
        self.sleep, self.clock = sleep, clock
        self._endpoints: dict[str, Endpoint] = {}  # as last ensured: set_traffic renders from them

    def lock(self, operation: str, notice: Callable[[str], None] | None = None) -> LeaseLock:
        """The namespace's Lease: applies from any machine or state store wait for each other here."""
        return LeaseLock(self.client, operation=operation, notice=notice,
                         scope=f"kubernetes {self.spec.context or '(current context)'} namespace {self.namespace}")

    # -- API calls -------------------------------------------------------------------------

    def _call(self, doing: str, action: Callable[[], object]):
        """Retry transient failures with capped backoff; anything else is a ``TargetError`` at once."""
        for attempt in range(RETRIES + 1):
            try:
                return action()
            except ApiError as error:
                transient = error.status in TRANSIENT
                if transient and attempt < RETRIES:
                    self.sleep(min(BACKOFF_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS))
                    continue
                raise self._error(doing, error, transient) from None
        raise AssertionError("unreachable")

    def _error(self, doing: str, error: ApiError, transient: bool) -> TargetError:
        where = f"target '{self.name}' (namespace {self.namespace})"
        if error.status == 409 and "conflict" in error.message.lower():
            managers = _conflict_managers(error.message) or ["another field manager"]
            failure = TargetError(
                f"{where}: cannot {doing}: fields mlops manages were changed by {', '.join(managers)} "
                f"({error.message}). mlops does not overwrite them: undo the change, or remove those fields "
                f"from {', '.join(managers)}'s management, then apply again")
        else:
            status = f"HTTP {error.status}" if error.status else "no connection"
            failure = TargetError(f"{where}: cannot {doing} ({status}): {error.message}")
        failure.transient = transient
        return failure

    def _apply(self, obj: dict) -> dict:
        return self._call(f"apply {obj['kind']} {obj['metadata']['name']}", lambda: self.client.apply(obj))

    def _get(self, api: str, kind: str, name: str) -> dict | None:
        return self._call(f"read {kind} {name}", lambda: self.client.get(api, kind, name))

    def _list(self, api: str, kind: str, labels: Mapping[str, str] | None = None, *, extra: str = "") -> list[dict]:
        terms = [f"{key}={value}" for key, value in self._labels(**(labels or {})).items()]
        selector = ",".join(terms + ([extra] if extra else []))
        return self._call(f"list {kind}s", lambda: self.client.list(api, kind, selector))

    def _delete(self, api: str, kind: str, name: str) -> None:
        self._call(f"delete {kind} {name}", lambda: self.client.delete(api, kind, name))

    def _labels(self, **labels: str) -> dict[str, str]:
        """This project's objects (narrowed by endpoint, deployment, component)."""
        prefixed = {("app.kubernetes.io/" if key == "component" else "mlops.dev/") + key: label_value(value)
                    for key, value in labels.items()}
        return {"mlops.dev/project": label_value(self.project), **prefixed}

    # -- images ----------------------------------------------------------------------------

    def _digest_image(self, request: DeployRequest) -> str:
        """Until the builder bakes the model into the image: the request's image, if pinned by digest."""
        image = request.image or ""
        if "@sha256:" not in image:
            raise TargetError(f"deployment {request.deployment.key} on kubernetes target '{self.name}': image "
                              f"{image!r} is not pinned by digest and holds no model; building images with the "
                              "model inside is not supported yet")
        return image

    # -- endpoints -------------------------------------------------------------------------

    def ensure_endpoint(self, endpoint: Endpoint, router_image: str | None = None) -> ObservedEndpoint:
        """Apply the endpoint's keys Secret, Service and traffic layer, keeping the keys and the traffic
        it has now (only ``set_traffic`` moves traffic). The router runs any image holding mlops: the
        one it runs already (a model update must not restart it and drop the connections it holds), else
        the one given; with neither it waits for the first deploy."""
        self._endpoints[endpoint.name] = endpoint
        traffic, mirror = self._traffic(endpoint.name)
        current = replace(endpoint, traffic=traffic, mirror_traffic=mirror)
        keys = self._keys(endpoint.name) if endpoint.auth_mode == "key" else None
        if endpoint.auth_mode == "key" and not keys:
            keys = {name: endpoint_keys._new_key() for name in endpoint_keys.KEY_NAMES}
        router = object_name(endpoint.name, "router")
        if self.spec.routing == "router":
            running = self._get("apps/v1", "Deployment", router)
            if running:
                router_image = running["spec"]["template"]["spec"]["containers"][0]["image"]
        if self.spec.routing == "router" and router_image is None:
            objects = [o for o in manifests.endpoint_manifests(current, self.meta, keys, "x@sha256:" + "0" * 64)
                       if o["kind"] in ("Secret", "Service")]
        else:
            objects = manifests.endpoint_manifests(current, self.meta, keys, router_image)
        for item in sorted(objects, key=lambda o: manifests.KIND_ORDER.index(o["kind"])):
            self._apply(item)
        return ObservedEndpoint(name=endpoint.name, target=self.name, url=self.url(endpoint.name),
                                auth_mode=endpoint.auth_mode, traffic=traffic, mirror_traffic=mirror)

    def _traffic(self, endpoint: str) -> tuple[dict[str, int], dict[str, int]]:
        """The live weights: the router's ConfigMap, or the HTTPRoute's backends and mirror filters."""
        if self.spec.routing == "router":
            config = self._get("v1", "ConfigMap", object_name(endpoint, "router"))
            if not config:
                return {}, {}
            data = json.loads((config.get("data") or {}).get(ROUTER_CONFIG) or "{}")
            return dict(data.get("traffic") or {}), dict(data.get("mirror") or {})
        route = self._get(f"{manifests.GATEWAY_GROUP}/v1", "HTTPRoute", object_name(endpoint))
        if not route or not route.get("spec", {}).get("rules"):
            return {}, {}
        names = {object_name(endpoint, d): d for d in self._deployment_names(endpoint)}
        live = route["spec"]["rules"][-1]
        traffic = {names.get(ref["name"], ref["name"]): int(ref.get("weight", 1))
                   for ref in live.get("backendRefs") or []}
        mirror = {names.get(f["requestMirror"]["backendRef"]["name"], f["requestMirror"]["backendRef"]["name"]):
                  int(f["requestMirror"].get("percent", 100))
                  for f in live.get("filters") or [] if f.get("type") == "RequestMirror"}
        return traffic, mirror

    def _deployment_names(self, endpoint: str) -> list[str]:
        return sorted({d["metadata"]["labels"].get("mlops.dev/deployment", "")
                       for d in self._list("apps/v1", "Deployment", {"endpoint": endpoint, "component": "scoring"})})

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> None:
        known = self._endpoints.get(endpoint)
        if known is not None:
            wanted = replace(known, traffic=dict(traffic), mirror_traffic=dict(mirror))
            layer = "ConfigMap" if self.spec.routing == "router" else "HTTPRoute"
            router_image = "x@sha256:" + "0" * 64  # not applied: only the traffic object is taken
            for item in manifests.endpoint_manifests(wanted, self.meta, None, router_image):
                if item["kind"] == layer and item["metadata"]["name"] in (object_name(endpoint),
                                                                          object_name(endpoint, "router")):
                    self._apply(item)
            return
        if self.spec.routing != "router":  # the route is rendered from the endpoint's declared deployments
            raise TargetError(f"target '{self.name}': set the traffic of endpoint '{endpoint}' with mlops apply")
        config = self._get("v1", "ConfigMap", object_name(endpoint, "router"))
        if config is None:
            raise TargetError(f"endpoint '{endpoint}' does not exist on target '{self.name}'")
        data = json.loads(config["data"][ROUTER_CONFIG])
        data["traffic"], data["mirror"] = dict(sorted(traffic.items())), dict(sorted(mirror.items()))
        config = _clean(config)
        config["data"] = {ROUTER_CONFIG: json.dumps(data, indent=2, sort_keys=True)}
        self._apply(config)

    def delete_endpoint(self, endpoint: str) -> None:
        """Everything of the endpoint (its deployments too) carrying this project's label."""
        self._prune({"endpoint": endpoint})
        self._endpoints.pop(endpoint, None)

    def _prune(self, labels: Mapping[str, str], keep: Iterable[tuple[str, str]] = ()) -> None:
        kept = set(keep)
        for api, kind in KINDS:
            for item in self._list(api, kind, labels):
                name = item["metadata"]["name"]
                if (kind, name) not in kept:
                    self._delete(api, kind, name)

    def url(self, endpoint: str) -> str | None:
        """The endpoint Service's name in the cluster's DNS (reachable from inside the cluster)."""
        service = self._get("v1", "Service", object_name(endpoint))
        return f"http://{object_name(endpoint)}.{self.namespace}.svc.cluster.local:{PORT}" if service else None

    # -- keys ------------------------------------------------------------------------------

    def _keys(self, endpoint: str) -> dict[str, str] | None:
        secret = self._get("v1", "Secret", object_name(endpoint, "keys"))
        text = ((secret or {}).get("data") or {}).get(KEYS_FILE)
        return json.loads(base64.b64decode(text)) if text else None

    def keys(self, endpoint: str) -> dict[str, str]:
        found = self._keys(endpoint)
        if not found:
            raise TargetError(f"endpoint '{endpoint}' has no keys on target '{self.name}' (not created yet, or "
                              "auth_mode: none); run mlops apply first")
        return found

    def rotate_key(self, endpoint: str, which: str) -> dict[str, str]:
        """Replace one key in the Secret; the mounted file follows, so the other key stays valid meanwhile."""
        if which not in endpoint_keys.KEY_NAMES:
            raise TargetError(f"no key '{which}': an endpoint's keys are {' and '.join(endpoint_keys.KEY_NAMES)}")
        keys = {**self.keys(endpoint), which: endpoint_keys._new_key()}
        secret = self._get("v1", "Secret", object_name(endpoint, "keys"))
        assert secret is not None  # keys() read it
        secret = _clean(secret)
        secret["data"] = {KEYS_FILE: base64.b64encode(json.dumps(keys, indent=2, sort_keys=True).encode()).decode()}
        self._apply(secret)
        return keys

    # -- deployments -----------------------------------------------------------------------

    def deploy(self, request: DeployRequest) -> ObservedDeployment:
        endpoint, deployment = request.endpoint.name, request.deployment.name
        pinned = self.model_image(request)
        self.ensure_endpoint(request.endpoint, router_image=pinned)
        objects = target_objects(request, self.meta, pinned)
        name = object_name(endpoint, deployment)
        previous = self._get("apps/v1", "Deployment", name)
        for item in objects:
            self._apply(item)
        failure = self._await_rollout(name, objects)
        if failure:
            events = self._failing_pods(endpoint, deployment)
            if previous:
                self._apply(_clean(previous))
                outcome = "the previous version was applied back and keeps serving"
            else:
                self._prune({"endpoint": endpoint, "deployment": deployment})
                outcome = "nothing was deployed"
            raise HealthCheckFailed(f"deployment {endpoint}/{deployment} on target '{self.name}' did not roll out: "
                                    f"{failure}; {outcome}.\n{events}".rstrip())
        # the previous rollout's config (immutable, named by digest) and objects no longer rendered
        self._prune({"endpoint": endpoint, "deployment": deployment},
                    keep=[(o["kind"], o["metadata"]["name"]) for o in objects])
        found = self._get("apps/v1", "Deployment", name)
        return self._observe_deployment(found or {})

    def _await_rollout(self, name: str, objects: list[dict]) -> str:
        """'' once the rollout completed, else why not (the progress deadline passed, or the timeout)."""
        spec = next(o for o in objects if o["kind"] == "Deployment")["spec"]
        timeout = self.rollout_timeout if self.rollout_timeout is not None else spec["progressDeadlineSeconds"] + 30
        deadline = self.clock() + timeout
        while True:
            found = self._get("apps/v1", "Deployment", name) or {}
            status = found.get("status") or {}
            for condition in status.get("conditions") or []:
                if condition.get("reason") == "ProgressDeadlineExceeded":
                    return f"progress deadline exceeded ({condition.get('message', '')})"
            if self._rolled_out(found):
                return ""
            if self.clock() >= deadline:
                return f"not ready after {timeout:g} s ({status.get('availableReplicas') or 0} of " \
                       f"{(found.get('spec') or {}).get('replicas')} instances available)"
            self.sleep(POLL_SECONDS)

    @staticmethod
    def _rolled_out(found: dict) -> bool:
        metadata, spec, status = found.get("metadata") or {}, found.get("spec") or {}, found.get("status") or {}
        replicas = spec.get("replicas", 1)
        return (status.get("observedGeneration", 0) >= metadata.get("generation", 1)
                and status.get("updatedReplicas", 0) == replicas and status.get("availableReplicas", 0) == replicas
                and not status.get("unavailableReplicas"))

    def _pods(self, endpoint: str, deployment: str) -> list[dict]:
        return self._list("v1", "Pod", {"endpoint": endpoint, "deployment": deployment})

    def _failing_pods(self, endpoint: str, deployment: str, lines: int = 20) -> str:
        """Events and last log lines of the pods that are not ready: why the rollout failed."""
        parts = []
        for pod in self._pods(endpoint, deployment):
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                continue
            name = pod["metadata"]["name"]
            events = self._call("list events", functools.partial(self.client.list, "v1", "Event", "",
                                                                  f"involvedObject.name={name}"))
            parts.append(f"Pod {name} events:")
            parts += [f"  {e.get('reason', '')}: {e.get('message', '')}" for e in events] or ["  (none)"]
            try:
                log = self.client.pod_log(name, lines)
            except ApiError as error:
                log = f"(no log: {error.message})"
            parts.append(f"Last lines of its log:\n{log}")
        return "\n".join(parts)

    def delete(self, endpoint: str, deployment: str) -> None:
        self._prune({"endpoint": endpoint, "deployment": deployment})

    def metrics(self, endpoint: str, deployment: str) -> dict[str, str]:
        """Each ready pod's ``/metrics``, through the API server's pod proxy (by pod name)."""
        texts = {}
        for pod in self._pods(endpoint, deployment):
            conditions = (pod.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                continue
            name = pod["metadata"]["name"]
            try:
                texts[name] = self.client.pod_get(name, PORT, "/metrics").decode("utf-8", "replace")
            except ApiError:
                continue  # going away: what it counted is not read
        return texts

    def logs(self, endpoint: str, deployment: str, lines: int = 50) -> str:
        pods = self._pods(endpoint, deployment)
        if not pods:
            raise TargetError(f"no pods of deployment {endpoint}/{deployment} on target '{self.name}'")
        return "\n".join(f"==> {p['metadata']['name']} <==\n"
                         + self._call("read a pod log", functools.partial(self.client.pod_log, p["metadata"]["name"],
                                                                          lines))
                         for p in pods)

    # -- collected data --------------------------------------------------------------------

    def collected(self, endpoint: str, deployment: str | None, since: datetime | None,
                  until: datetime | None) -> CollectedEvents:
        """What the endpoint's sink holds for the window, read through the API server's service proxy.

        The endpoint key goes in ``x-mlops-key`` (the API server keeps ``Authorization`` for itself).
        Events come sorted by time; ``TargetError`` when the sink cannot be reached or refuses.
        """
        query = {key: value for key, value in (
            ("deployment", deployment), ("since", since.isoformat() if since else None),
            ("until", until.isoformat() if until else None)) if value}
        keys = self._keys(endpoint)
        headers = {"x-mlops-key": keys["primary"]} if keys else {}
        name = object_name(endpoint, "collector")
        body = self._call(f"read the collected data of endpoint '{endpoint}' from Service {name}",
                          lambda: self.client.service_get(name, manifests.SINK_PORT, "/v1/events", query, headers))
        return CollectedEvents.parse(body)

    # -- observe ---------------------------------------------------------------------------

    def observe(self) -> tuple[list[ObservedEndpoint], list[ObservedDeployment]]:
        deployments = [self._observe_deployment(d) for d in self._list("apps/v1", "Deployment",
                                                                       {"component": "scoring"})]
        services = [s for s in self._list("v1", "Service", extra="!mlops.dev/deployment")
                    if s["metadata"]["labels"].get("app.kubernetes.io/component") != "collector"]
        secrets = {s["metadata"]["name"] for s in self._list("v1", "Secret", extra="!mlops.dev/deployment")}
        routers = {d["metadata"]["name"]: d for d in self._list("apps/v1", "Deployment", {"component": "router"})}
        endpoints = []
        for service in services:
            name = service["metadata"]["labels"].get("mlops.dev/endpoint", "")
            traffic, mirror = self._traffic(name)
            status: Health = RUNNING
            if self.spec.routing == "router":
                router = routers.get(object_name(name, "router"))
                status = STOPPED if router is None else RUNNING if self._rolled_out(router) else DEGRADED
            endpoints.append(ObservedEndpoint(
                name=name, target=self.name, url=f"http://{object_name(name)}.{self.namespace}.svc.cluster.local:{PORT}",
                auth_mode="key" if object_name(name, "keys") in secrets else "none",
                traffic=traffic, mirror_traffic=mirror, status=status))
        return endpoints, deployments

    def _observe_deployment(self, found: dict) -> ObservedDeployment:
        """A Deployment as the planner compares it: hand-scaled shows as a count (and DEGRADED), hand-edited
        as a settings digest that matches nothing (the field managers say who changed the pods)."""
        metadata, spec, status = found.get("metadata") or {}, found.get("spec") or {}, found.get("status") or {}
        labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
        declared = int(annotations.get(COUNT, 1))
        autoscaled = annotations.get(AUTOSCALED) == "true"  # the HPA owns the replica count
        count = declared if autoscaled else int(spec.get("replicas", 0))
        ready = int(status.get("readyReplicas") or 0)
        health = RUNNING if ready >= count > 0 and self._rolled_out(found) else DEGRADED if ready else STOPPED
        if count != declared:
            health = DEGRADED
        settings = annotations.get(SETTINGS, "")
        editors = self._template_editors(found)
        if editors:
            settings += f" (pods edited by {', '.join(editors)})"
        model = annotations.get(MODEL) or f"{labels.get('mlops.dev/model')}:{labels.get('mlops.dev/version')}"
        return ObservedDeployment(
            endpoint=labels.get("mlops.dev/endpoint", ""), name=labels.get("mlops.dev/deployment", ""),
            target=self.name, model=model, environment=annotations.get(ENVIRONMENT) or None,
            image=annotations.get(IMAGE), instance_count=count, ready_instances=ready, settings_digest=settings,
            status=health, detail={"deployment": metadata.get("name"), "namespace": self.namespace,
                                   "editors": editors, "pinned_image": _pod_image(spec)})

    @staticmethod
    def _template_editors(found: dict) -> list[str]:
        """Field managers other than mlops that changed the pod template (``kubectl edit``, ``set image``)."""
        editors = []
        for entry in (found.get("metadata") or {}).get("managedFields") or []:
            manager = entry.get("manager", "")
            if manager != FIELD_MANAGER and "f:template" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
                editors.append(manager)
        return editors
