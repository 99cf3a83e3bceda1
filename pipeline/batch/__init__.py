"""Batch scoring (``mlops score-batch``): a table in, predictions out, with the scoring service's runtime.

``reader`` streams inputs as deterministic chunks, ``scoring`` scores a chunk (here, in spawned
workers, or through an endpoint), ``writer`` writes each part atomically, ``manifest`` records the
lineage and each chunk's state for ``--resume``, and ``run`` ties them together. It sits beside the
data plane: it imports the runtime and the collector's writer, never the registry or the targets —
the CLI resolves the model version and hands over a materialized folder (``ModelInfo``).
"""
