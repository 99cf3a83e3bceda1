"""Fixtures for the scoring service: small models of every flavor, and real server processes.

Servers run as ``python -m pipeline.server --config FILE`` on a free loopback port, exactly as the
targets start them; ``serve()`` waits for readiness and stops the process (SIGTERM) afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FEATURES = 4
FEATURE_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
READY_SECONDS = 60.0

SCORE_PY = textwrap.dedent("""
    import json, os, time

    def init():
        global factor
        with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "factor.txt")) as handle:
            factor = float(handle.read())

    def run(raw_data):
        data = json.loads(raw_data)["data"]
        if data == "boom":
            raise RuntimeError("the model blew up")
        if data == "sleep":
            time.sleep(1.0)
            return []
        return [sum(row) * factor for row in data]
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def training_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, FEATURES))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model folders by flavor (sklearn, onnx, python; mlflow only when MLflow is installed)."""
    import pandas as pd
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("models")
    x, y = training_data()
    estimator = LogisticRegression().fit(pd.DataFrame(x, columns=FEATURE_NAMES), y)  # knows its columns
    folders = {}
    folders["sklearn"] = root / "sklearn"
    folders["sklearn"].mkdir()
    sio.dump(estimator, folders["sklearn"] / "model.skops")

    from skl2onnx import to_onnx

    folders["onnx"] = root / "onnx"
    folders["onnx"].mkdir()
    onnx_model = to_onnx(estimator, x[:1].astype(np.float32), options={"zipmap": False})
    (folders["onnx"] / "model.onnx").write_bytes(onnx_model.SerializeToString())

    folders["python"] = root / "python"
    folders["python"].mkdir()
    (folders["python"] / "score.py").write_text(SCORE_PY)
    (folders["python"] / "factor.txt").write_text("2")

    try:
        import mlflow.sklearn
    except ImportError:
        pass
    else:
        mlflow.sklearn.save_model(estimator, str(root / "mlflow"), input_example=x[:2])
        folders["mlflow"] = root / "mlflow"
    return folders


@pytest.fixture(scope="session")
def estimator_predictions() -> Callable[[np.ndarray], np.ndarray]:
    """What the served logistic regression must answer (the same fit, in-process)."""
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    return LogisticRegression().fit(x, y).predict


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    config: dict
    folder: Path
    keys: dict[str, str] | None = None
    log: Path = field(default=Path())

    @property
    def keys_file(self) -> Path:
        return Path(self.config["keys_file"])

    def headers(self, which: str = "primary") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[which]}"} if self.keys else {}

    def client(self, which: str = "primary") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(which), timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(folder: Path, model_dir: Path, flavor: str, *, auth: bool = True, wait: bool = True,
                 **settings) -> Served:
    """Start a real service process for ``model_dir``; ``settings`` override ServerConfig fields."""
    from pipeline.server.auth import generate_keys

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    keys_file = folder / "keys.json"
    keys = generate_keys(keys_file) if auth else None
    config = {"model_dir": str(model_dir), "flavor": flavor, "model_name": "iris", "model_version": 3,
              "endpoint": "ep", "deployment": "blue", "host": "127.0.0.1", "port": port,
              "keys_file": str(keys_file) if auth else None, "data_dir": str(folder / "data"),
              "log_level": "info", **settings}
    config_file = folder / "server.json"
    config_file.write_text(json.dumps(config))
    log = folder / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "pipeline.server", "--config", str(config_file)],
                                   stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    served = Served(f"http://127.0.0.1:{port}", process, config, folder, keys, log)
    if wait:
        wait_ready(served)
    return served


def wait_ready(served: Served, seconds: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"server exited {served.process.returncode}:\n{served.log.read_text()}")
        try:
            if httpx.get(served.url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    served.stop()
    raise AssertionError(f"server not ready after {seconds} s:\n{served.log.read_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start servers for one test; every one is stopped afterwards."""
    started: list[Served] = []

    def factory(model_dir: Path, flavor: str, **options) -> Served:
        served = start_server(tmp_path / f"server{len(started)}", model_dir, flavor, **options)
        started.append(served)
        return served

    yield factory
    for served in started:
        served.stop()


@pytest.fixture(scope="module")
def sklearn_server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One shared sklearn service with key auth and data collection on (sampling 1.0)."""
    served = start_server(tmp_path_factory.mktemp("sklearn-server"), models["sklearn"], "sklearn",
                          data_collector={"enabled": True, "sampling_rate": 1.0, "rolling_rate": "minute"})
    yield served
    served.stop()
