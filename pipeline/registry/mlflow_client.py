"""One way to talk to an MLflow tracking server: the client, its errors in mlops terms, reserved names.

MLflow's own client (``mlflow-skinny`` is enough) is imported only when an MLflow backend is used,
so the embedded registry needs no MLflow at all. Credentials are MLflow's usual environment
variables (``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), read by the
client itself: they never pass through mlops.yaml, messages or logs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import MlopsError, ReferenceNotFound, RegistryError

EXTRA = 'pip install "mlops-pipeline[mlflow]"'
# Registered models whose names start with this belong to mlops itself (state locks), not to users.
RESERVED_PREFIX = "mlops--"
# MLflow's client retries a refused connection for minutes by default; an apply should say at once.
_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
                    # MLflow 3 prints "View run … at: URL" on stdout when a run ends: not in mlops' output.
                    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


# "scheme://user:password@" inside a message MLflow or requests wrote (they repeat the URI they were given).
_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")


class MlflowUnavailable(RegistryError):
    """The tracking server cannot be reached or answered with a server error: worth retrying."""

    transient = True


def redact(uri: str) -> str:
    """The tracking URI without any user:password it may carry (for messages)."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def connect(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for the tracking server and its model registry at ``tracking_uri``."""
    for name, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise MlopsError(f"the mlflow registry needs MLflow's client: {EXTRA}") from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def error_code(error: BaseException) -> str | None:
    """MLflow's error code (``RESOURCE_ALREADY_EXISTS``, ``RESOURCE_DOES_NOT_EXIST`` …) or None."""
    return getattr(error, "error_code", None)


@contextlib.contextmanager
def translated(tracking_uri: str, what: str) -> Iterator[None]:
    """Turn MLflow's failures into mlops errors that say what was being done and where."""
    try:
        yield
    except MlopsError:
        raise
    except Exception as error:
        if not _from_mlflow_or_network(error):
            raise  # a bug, not a server's answer
        code = error_code(error)
        where = redact(tracking_uri)
        detail = _CREDENTIALS.sub("", str(error))[:300]
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise ReferenceNotFound(f"{what}: not found in the MLflow registry at {where}") from error
        if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            raise RegistryError(f"{what}: the MLflow server at {where} refused the credentials "
                                "(set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD)") from error
        if code is None or code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
            raise MlflowUnavailable(f"{what}: the MLflow server at {where} failed: "
                                    f"{type(error).__name__}: {detail}") from error
        raise RegistryError(f"{what}: MLflow at {where} refused it: {detail}") from error


def _from_mlflow_or_network(error: BaseException) -> bool:
    if isinstance(error, OSError):  # ConnectionError, timeouts
        return True
    return any(cls.__module__.startswith(("mlflow.", "requests.", "urllib3.")) for cls in type(error).__mro__)
