"""The mlops.yaml format: its JSON Schema, the loader and the desired-state dataclasses."""

from pipeline.spec.loader import load
from pipeline.spec.model import ModelRef, Spec

__all__ = ["ModelRef", "Spec", "load"]
