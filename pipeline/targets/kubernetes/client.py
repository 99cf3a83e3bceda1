"""The one place that talks to a Kubernetes API server: exactly the calls the adapter and the Lease need.

Objects go in and come out as plain dicts, and every failure is an ``ApiError`` (HTTP status, the
API's message; status 0 for a connection that failed), so the adapter's logic is tested against a
small in-memory fake of ``Cluster`` instead of the ``kubernetes`` library, which is imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

FIELD_MANAGER = "mlops"


class ApiError(Exception):
    """What the API server answered (or 0: it could not be reached)."""

    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


class Cluster(Protocol):
    """The API calls mlops makes, in one namespace."""

    namespace: str

    def apply(self, obj: dict) -> dict:
        """Server-side apply (``fieldManager=mlops``, never forced); returns the object as stored."""
        ...

    def get(self, api_version: str, kind: str, name: str) -> dict | None: ...

    def list(self, api_version: str, kind: str, labels: str = "", fields: str = "") -> list[dict]: ...

    def delete(self, api_version: str, kind: str, name: str) -> None:
        """Delete (background propagation); an object already gone is not an error."""
        ...

    def create(self, obj: dict) -> dict:
        """Create; 409 when it exists (the Lease's atomic acquire)."""
        ...

    def replace(self, obj: dict) -> dict:
        """Replace guarded by ``metadata.resourceVersion``; 409 when someone changed it meanwhile."""
        ...

    def pod_log(self, pod: str, lines: int) -> str: ...

    def service_get(self, service: str, port: int, path: str, query: Mapping[str, str],
                    headers: Mapping[str, str]) -> bytes:
        """``GET`` on a Service's port through the API server's service proxy (no port-forward); the body."""
        ...

    def pod_get(self, pod: str, port: int, path: str) -> bytes:
        """``GET`` on one pod's port through the API server's pod proxy; the body."""
        ...


class KubeClient:
    """``Cluster`` on a real API server through the official client's ``DynamicClient``.

    Credentials come from where ``kubectl`` finds them: ``KUBECONFIG`` or ``~/.kube/config`` (with
    ``context``), else the pod's service account when mlops runs in the cluster.
    """

    def __init__(self, namespace: str = "default", context: str | None = None):
        self.namespace = namespace
        self.context = context
        self._dynamic: Any = None
        self._core: Any = None

    def _connect(self):
        if self._dynamic is None:
            from kubernetes import client, config, dynamic

            try:
                try:
                    api = config.new_client_from_config(context=self.context)
                except config.ConfigException:
                    if self.context:
                        raise
                    config.load_incluster_config()
                    api = client.ApiClient()
                self._dynamic = dynamic.DynamicClient(api)
                self._core = client.CoreV1Api(api)
            except Exception as error:  # no kubeconfig, unknown context, unreachable server
                raise ApiError(0, f"cannot connect to the cluster ({type(error).__name__}: {error})") from None
        return self._dynamic

    def _call(self, action):
        from kubernetes.client.exceptions import ApiException

        try:
            return action()
        except ApiException as error:
            message = str(error.reason or "")
            try:
                message = json.loads(error.body).get("message") or message
            except (TypeError, ValueError, AttributeError):
                pass
            raise ApiError(int(error.status or 0), message, str(error.reason or "")) from None
        except ApiError:
            raise
        except Exception as error:  # urllib3 connection errors, timeouts
            raise ApiError(0, f"{type(error).__name__}: {error}") from None

    def _resource(self, api_version: str, kind: str):
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        client = self._connect()
        try:
            return self._call(lambda: client.resources.get(api_version=api_version, kind=kind))
        except ResourceNotFoundError:
            raise ApiError(404, f"the cluster does not serve {api_version} {kind}", "NoKind") from None

    def apply(self, obj: dict) -> dict:
        resource = self._resource(obj["apiVersion"], obj["kind"])
        return self._call(lambda: self._dynamic.server_side_apply(
            resource, body=obj, namespace=self.namespace, field_manager=FIELD_MANAGER).to_dict())

    def get(self, api_version: str, kind: str, name: str) -> dict | None:
        try:
            resource = self._resource(api_version, kind)
            return self._call(lambda: resource.get(name=name, namespace=self.namespace).to_dict())
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, labels: str = "", fields: str = "") -> list[dict]:
        try:
            resource = self._resource(api_version, kind)
        except ApiError as error:
            if error.reason == "NoKind":
                return []
            raise
        found = self._call(lambda: resource.get(namespace=self.namespace, label_selector=labels or None,
                                                field_selector=fields or None).to_dict())
        return list(found.get("items") or [])

    def delete(self, api_version: str, kind: str, name: str) -> None:
        try:
            resource = self._resource(api_version, kind)
            self._call(lambda: resource.delete(name=name, namespace=self.namespace,
                                               propagation_policy="Background"))
        except ApiError as error:
            if error.status != 404:
                raise

    def create(self, obj: dict) -> dict:
        resource = self._resource(obj["apiVersion"], obj["kind"])
        return self._call(lambda: resource.create(body=obj, namespace=self.namespace).to_dict())

    def replace(self, obj: dict) -> dict:
        resource = self._resource(obj["apiVersion"], obj["kind"])
        return self._call(lambda: resource.replace(body=obj, namespace=self.namespace).to_dict())

    def pod_log(self, pod: str, lines: int) -> str:
        self._connect()
        return self._call(lambda: self._core.read_namespaced_pod_log(
            pod, self.namespace, tail_lines=lines))

    def service_get(self, service: str, port: int, path: str, query: Mapping[str, str],
                    headers: Mapping[str, str]) -> bytes:
        resource = f"/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        return self._proxy_get(resource, query, headers)

    def pod_get(self, pod: str, port: int, path: str) -> bytes:
        return self._proxy_get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}",
                               {}, {})

    def _proxy_get(self, resource: str, query: Mapping[str, str], headers: Mapping[str, str]) -> bytes:
        self._connect()
        api = self._core.api_client
        response = self._call(lambda: api.call_api(
            resource, "GET", query_params=list(query.items()), header_params=dict(headers),
            auth_settings=["BearerToken"], _return_http_data_only=True, _preload_content=False,
            _request_timeout=120))
        return response.data
