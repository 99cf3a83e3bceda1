"""The Kubernetes target: today only the pure rendering of its manifests (``manifests.py``)."""
