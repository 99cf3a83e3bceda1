"""The model registry: versioned, content-addressed, with lineage and delete protection.

``open_registry`` picks the backend from where ``registry:`` in mlops.yaml points; callers talk to
the ``Registry`` protocol. ``InMemoryRegistry`` (``pipeline.registry.memory``) is a fake for tests.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import RegistryError
from pipeline.registry.base import ModelSummary, ModelVersion, Registry
from pipeline.registry.local import LocalRegistry

__all__ = ["SUPPORTED", "LocalRegistry", "ModelSummary", "ModelVersion", "Registry", "open_registry"]

SUPPORTED = ("a folder path (the embedded registry, like .mlops/registry), or an MLflow tracking server: "
             "{type: mlflow, tracking_uri: ${MLFLOW_TRACKING_URI}}")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_registry(location: str | Path, *, root: Path | None = None) -> Registry:
    """The registry at ``location`` (``spec.registry``): a folder path, relative to ``root`` (the folder
    of mlops.yaml), is the embedded ``LocalRegistry``; a URI names a backend by its scheme, and one
    this version does not know is a ``RegistryError`` naming what is supported."""
    text = str(location)
    scheme = _SCHEME.match(text)
    if scheme:
        raise RegistryError(f"registry '{text}': the scheme '{scheme.group(1)}://' is not supported by this "
                            f"version of mlops; supported: {SUPPORTED}")
    path = Path(text)
    if root is not None:
        path = Path(root) / path
    return LocalRegistry(path.resolve())
