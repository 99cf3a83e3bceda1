"""The mlops.yaml format: its JSON Schema, the loader and the desired-state dataclasses.

The package face names only the dataclasses: ``pipeline.spec.loader.load`` (YAML, JSON Schema)
is imported where a file is read, so a scoring process never loads yaml or jsonschema.
"""

from pipeline.spec.model import ModelRef, Spec

__all__ = ["ModelRef", "Spec"]
