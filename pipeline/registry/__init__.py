"""The model registry: versioned, content-addressed, with lineage and delete protection."""

from pipeline.registry.base import ModelSummary, ModelVersion, Registry
from pipeline.registry.local import LocalRegistry

__all__ = ["LocalRegistry", "ModelSummary", "ModelVersion", "Registry"]
