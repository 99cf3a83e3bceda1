"""mlops: a declarative GitOps pipeline for machine-learning models."""

from pipeline.errors import MlopsError

__version__ = "0.1.0"

__all__ = ["MlopsError", "__version__"]
