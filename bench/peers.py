"""The peer servers ``bench/serve.py`` measures the scoring service against, one process each.

    python bench/peers.py bare|kserve|litserve|litserve-batch MODEL_FILE PORT

Each loads the same skops file and answers 1-row JSON bodies with its framework's idiomatic code:

* ``bare`` — Starlette, uvloop + httptools, ``orjson``: parse, ``predict``, answer (the floor);
* ``kserve`` — a ``kserve.Model`` subclass as KServe's own sklearn server writes it
  (``get_predict_input`` / ``get_predict_response``), so both its v1 ``:predict`` route and its
  Open Inference Protocol ``/v2/models/<name>/infer`` route work; 1 uvicorn worker, no gRPC;
* ``litserve`` / ``litserve-batch`` — a ``LitAPI`` on CPU, ``workers_per_device=1``, without and
  with LitServe's dynamic batching (``max_batch_size`` 16, ``batch_timeout`` 5 ms).

Per-request logging is off everywhere (as it is on the mlops server measured): KServe's latency
and timing lines, uvicorn's access log and a per-request deprecation warning, LitServe's
``log_level``.
"""

from __future__ import annotations

import logging
import sys
import warnings

HOST = "127.0.0.1"
MODEL_NAME = "bench"  # the model's name in KServe's routes, as in the mlops server's config
BATCH = {"max_batch_size": 16, "batch_timeout": 0.005}  # litserve-batch: 16 connections, ≤ 5 ms wait


def load(model_file: str):
    import skops.io as sio

    return sio.load(model_file, trusted=sio.get_untrusted_types(file=model_file))  # our own file


def run_bare(model_file: str, port: int) -> None:
    """The baseline: the least a Python service can do (parse JSON, predict, answer)."""
    import numpy as np
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    model = load(model_file)

    async def score(request):
        rows = np.asarray(orjson.loads(await request.body())["data"], dtype=np.float64)
        return Response(orjson.dumps({"predictions": model.predict(rows).tolist()}), media_type="application/json")

    async def ready(request):
        return Response(b"ok")

    app = Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/ready", ready)])
    uvicorn.run(app, host=HOST, port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning")


def run_kserve(model_file: str, port: int) -> None:
    """KServe's model server with the model as its sklearn server loads and calls it.

    KServe's REST server binds 0.0.0.0 (not configurable); the port is a free one on loopback.
    """
    import kserve
    from kserve.utils.utils import get_predict_input, get_predict_response

    class SklearnModel(kserve.Model):
        def load(self) -> bool:
            self.model = load(model_file)
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None):
            return get_predict_response(payload, self.model.predict(get_predict_input(payload)), self.name)

    model = SklearnModel(MODEL_NAME)
    model.load()
    server = kserve.ModelServer(http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False)
    for per_request in ("uvicorn.access", "kserve.trace"):  # after KServe configured its logging
        logging.getLogger(per_request).setLevel(logging.WARNING)  # kserve.trace: 2 timing lines per request
    # KServe 0.21 answers with FastAPI's ORJSONResponse, which newer FastAPI warns about on every request
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    server.start([model])


def run_litserve(model_file: str, port: int, batched: bool) -> None:
    """LitServe on CPU, one inference worker, with or without its dynamic batching."""
    import litserve as ls
    from litserve_api import SklearnAPI  # a module of its own: LitServe's worker process unpickles it

    api = SklearnAPI(model_file, api_path="/predict", **(BATCH if batched else {}))
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host=HOST, port=port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    peer, model_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    del sys.argv[1:]  # KServe parses the command line when imported
    if peer == "bare":
        run_bare(model_file, port)
    elif peer == "kserve":
        run_kserve(model_file, port)
    elif peer in ("litserve", "litserve-batch"):
        run_litserve(model_file, port, batched=peer == "litserve-batch")
    else:
        sys.exit(f"unknown peer {peer!r}: bare, kserve, litserve or litserve-batch")
