"""An in-memory ``Cluster`` (the adapter's one API boundary): objects by kind and name, label and field
selectors, server-side apply with field-manager conflicts on what is changed by hand, Deployments
that roll out at once (or never, for names in ``never_ready``), pods with events and logs, and
errors injected per call; Services answer through the proxy with ``services`` handlers."""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import Callable

from pipeline.targets.kubernetes.client import FIELD_MANAGER, ApiError


def _matches(labels: dict, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        else:
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
    return True


class FakeCluster:
    def __init__(self, namespace: str = "ml"):
        self.namespace = namespace
        self.objects: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.errors: list[ApiError] = []  # raised by the next calls, one each
        self.apply_errors: list[ApiError] = []  # raised by the next applies, one each
        self.never_ready: set[str] = set()
        self.owners: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)  # field path -> other manager
        self.logs: dict[str, str] = {}
        self.pod_answers: dict[tuple[str, int, str], bytes] = {}  # (pod, port, path) -> body, for pod_get
        # (service, port) -> handler(path, query, headers) -> (status, body): what answers behind the proxy
        self.services: dict[tuple[str, int], Callable[[str, dict, dict], tuple[int, bytes]]] = {}
        self._versions = itertools.count(1)

    def _fail(self) -> None:
        if self.errors:
            raise self.errors.pop(0)

    # -- Cluster ---------------------------------------------------------------------------

    def apply(self, obj: dict) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(("apply", kind, name))
        self._fail()
        if self.apply_errors:
            raise self.apply_errors.pop(0)
        current = self.objects.get((kind, name))
        if current is not None:
            conflicts = [(path, manager) for path, manager in self.owners[(kind, name)].items()
                         if _at(obj, path) is not None and _at(obj, path) != _at(current, path)]
            if conflicts:
                raise ApiError(409, f"Apply failed with {len(conflicts)} conflict(s): " + ", ".join(
                    f'conflict with "{manager}" using apps/v1: {path}' for path, manager in conflicts), "Conflict")
            self.owners.pop((kind, name), None)
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        generation = (current or {}).get("metadata", {}).get("generation", 0)
        changed = current is None or current.get("spec") != obj.get("spec")
        stored["metadata"]["generation"] = generation + 1 if changed else generation
        stored["metadata"]["managedFields"] = [{"manager": FIELD_MANAGER, "operation": "Apply",
                                                "fieldsV1": {"f:spec": {"f:template": {}}}}]
        self.objects[(kind, name)] = stored
        if kind == "Deployment":
            self._roll(stored)
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, name: str) -> dict | None:
        self.calls.append(("get", kind, name))
        self._fail()
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, labels: str = "", fields: str = "") -> list[dict]:
        self.calls.append(("list", kind, labels))
        self._fail()
        found = [o for (k, _), o in self.objects.items() if k == kind
                 and _matches(o["metadata"].get("labels") or {}, labels)]
        if fields:
            key, _, value = fields.partition("=")
            found = [o for o in found if _at(o, key) == value]
        return copy.deepcopy(found)

    def delete(self, api_version: str, kind: str, name: str) -> None:
        self.calls.append(("delete", kind, name))
        self._fail()
        removed = self.objects.pop((kind, name), None)
        if kind == "Deployment" and removed:
            self._remove_pods(name)

    def create(self, obj: dict) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(("create", kind, name))
        self._fail()
        if (kind, name) in self.objects:
            raise ApiError(409, f'{kind.lower()}s "{name}" already exists', "AlreadyExists")
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(kind, name)] = stored
        return copy.deepcopy(stored)

    def replace(self, obj: dict) -> dict:
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(("replace", kind, name))
        self._fail()
        current = self.objects.get((kind, name))
        if current is None:
            raise ApiError(404, f'{kind.lower()}s "{name}" not found', "NotFound")
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified; please apply your changes to the latest version",
                           "Conflict")
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(kind, name)] = stored
        return copy.deepcopy(stored)

    def pod_log(self, pod: str, lines: int) -> str:
        self._fail()
        return "\n".join(self.logs.get(pod, "").splitlines()[-lines:])

    def pod_get(self, pod: str, port: int, path: str) -> bytes:
        """As the API server's pod proxy: the text in ``pod_answers`` for a pod that exists."""
        self._fail()
        self.calls.append(("proxy", "Pod", f"{pod}:{port}{path}"))
        if ("Pod", pod) not in self.objects or (pod, port, path) not in self.pod_answers:
            raise ApiError(503, f'error trying to reach service: pod "{pod}"', "ServiceUnavailable")
        return self.pod_answers[(pod, port, path)]

    def service_get(self, service: str, port: int, path: str, query, headers) -> bytes:
        """As the API server's service proxy: 503 without a backend, the backend's status passed on."""
        self._fail()
        self.calls.append(("proxy", "Service", f"{service}:{port}{path}"))
        handler = self.services.get((service, port))
        if handler is None or ("Service", service) not in self.objects:
            raise ApiError(503, f'no endpoints available for service "{service}"', "ServiceUnavailable")
        status, body = handler(path, dict(query), dict(headers))
        if status != 200:
            raise ApiError(status, body.decode("utf-8", "replace"))
        return body

    # -- what a cluster does by itself, and hands -----------------------------------------

    def _remove_pods(self, deployment: str) -> None:
        for key in [k for k, o in self.objects.items() if k[0] == "Pod" and o.get("owner") == deployment]:
            del self.objects[key]

    def _roll(self, deployment: dict) -> None:
        """Pods of the new template replace the old ones (ready at once unless ``never_ready``)."""
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        replicas = spec.get("replicas", 1)
        image = spec["template"]["spec"]["containers"][0]["image"]
        ready = image not in self.never_ready and name not in self.never_ready
        generation = deployment["metadata"]["generation"]
        if ready:
            self._remove_pods(name)
        for index in range(replicas):
            pod = f"{name}-{generation}-{index}"
            self.objects[("Pod", pod)] = {
                "apiVersion": "v1", "kind": "Pod", "owner": name,
                "metadata": {"name": pod, "labels": dict(spec["template"]["metadata"]["labels"])},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
            if not ready:
                self.objects[("Event", f"{pod}.1")] = {
                    "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{pod}.1"},
                    "involvedObject": {"name": pod}, "reason": "BackOff",
                    "message": "Back-off restarting failed container scoring"}
                self.logs[pod] = "loading model\nModelLoadError: cannot load /var/lib/mlops/model"
        status = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                  "readyReplicas": replicas, "availableReplicas": replicas}
        if not ready:
            status = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": 1,
                      "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": replicas,
                      "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                      "message": f'ReplicaSet "{name}-x" has timed out progressing.'}]}
        deployment["status"] = status

    def scale(self, name: str, replicas: int, manager: str = "kubectl") -> None:
        """``kubectl scale``: another manager now owns ``.spec.replicas``."""
        deployment = self.objects[("Deployment", name)]
        deployment["spec"]["replicas"] = replicas
        deployment["metadata"]["generation"] += 1
        self.owners[("Deployment", name)][".spec.replicas"] = manager
        self._roll(deployment)

    def edit_image(self, name: str, image: str, manager: str = "kubectl-edit") -> None:
        deployment = self.objects[("Deployment", name)]
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
        deployment["metadata"]["managedFields"].append(
            {"manager": manager, "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {}}}})

    def named(self, kind: str) -> list[str]:
        return sorted(name for k, name in self.objects if k == kind)


def _at(obj: dict, path: str):
    """The value at a dotted path (``.spec.replicas``, ``involvedObject.name``), or None."""
    value = obj
    for part in filter(None, path.split(".")):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
