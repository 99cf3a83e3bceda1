"""The LitServe peer's ``LitAPI`` (``bench/peers.py litserve``): sklearn ``predict`` on JSON rows.

Its own module because LitServe starts its inference worker with ``spawn`` and pickles the API
object: the class must be importable by name.
"""

from __future__ import annotations

import litserve as ls
import numpy as np


class SklearnAPI(ls.LitAPI):
    def __init__(self, model_file: str, **options):
        super().__init__(**options)
        self.model_file = model_file
        self.sizes: list[int] = []

    def setup(self, device):
        from peers import load

        self.model = load(self.model_file)

    def decode_request(self, request):
        return np.asarray(request["data"], dtype=np.float64)

    def batch(self, inputs):  # requests of any row count: stacked here, split again in unbatch
        self.sizes = [len(rows) for rows in inputs]
        return np.concatenate(inputs)

    def predict(self, rows):
        return self.model.predict(rows)

    def unbatch(self, output):
        return np.split(output, np.cumsum(self.sizes)[:-1])

    def encode_response(self, output):
        return {"predictions": output.tolist()}
