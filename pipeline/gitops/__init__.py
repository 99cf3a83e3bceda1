"""Git facts for mlops (via GitPython): lineage of registered models, the spec at a ref, reviews."""
