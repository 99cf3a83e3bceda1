"""Benchmark the scoring service against its peers (MLflow, KServe, LitServe, a bare app), in one sitting.

    python bench/serve.py [--duration 5] [--concurrency 1,16] [--models lr,rf] [--servers ...] [--write-readme]

Trains two models on synthetic data (a logistic regression on 20 features and a 50-tree random
forest), saves them with skops (and with ``mlflow.sklearn.save_model`` for MLflow), then for each
server and model starts one process on 127.0.0.1, measures its cold start (process start → ready,
each server alone), then drives them in interleaved rounds (medians reported, so that noise from
other work on the machine hits every server alike) with the same load generator: ``wrk`` with a
Lua script for the POST body, or, when wrk is missing, a bounded Python client (threads with
keep-alive connections; slower, so its numbers only compare with each other). Every cell runs
``--duration`` seconds per round.

Servers (``SERVERS``): ``mlops`` (auth on, collection off; ``/score``), ``mlops-oip`` (the same
on the Open Inference Protocol route), ``mlops-nobatch`` (``request_settings.max_batch_size`` 1),
``mlops+collect`` (collection at sampling 1.0), ``mlops+ship`` (collection, shipped to a collection
sink as on Kubernetes; not in the default set), ``mlflow`` (``mlflow models serve --env-manager
local``), ``bare``, ``kserve-v1`` / ``kserve-oip`` (KServe's model server, its v1 ``:predict`` and
its OIP ``infer`` route) and ``litserve`` / ``litserve-batch`` (without and with its batching); the
peers' code is in ``bench/peers.py``. Every server runs from this Python (``pip install -e
".[bench]"``); one that is not installed or does not start fails the run (exit 1, with the last
lines of its log).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
FEATURES = 20
READY_TIMEOUT = 90.0
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
PEERS = Path(__file__).resolve().parent / "peers.py"
MODEL_NAME = "bench"  # the model's name in the OIP and KServe routes
MLOPS = ("mlops", "mlops-oip", "mlops-nobatch", "mlops+collect", "mlops+ship")
SERVERS = (*MLOPS, "mlflow", "bare", "kserve-v1", "kserve-oip", "litserve", "litserve-batch")
DEFAULT_SERVERS = [label for label in SERVERS if label != "mlops+ship"]
# what each server needs importable beyond the project's own dependencies (the bench extra)
NEEDS = {"mlflow": "mlflow", "bare": "orjson", "kserve-v1": "kserve", "kserve-oip": "kserve",
         "litserve": "litserve", "litserve-batch": "litserve"}
INSTALL = 'pip install -e ".[bench]" (from the project folder)'
LOG_TAIL_LINES = 20
TARGETS = {"collection_cost": 0.05, "p99_ms_lr_c16": 20.0, "cold_start_s": 2.0, "nobatch_p50_c1": 0.05}
# (numerator, denominator, model, minimum ratio of req/s at the highest concurrency): issue #19's targets
RATIO_TARGETS = [("mlops", "mlflow", "lr", 3.0), ("mlops", "bare", "lr", 1.0), ("mlops", "kserve-v1", "lr", 2.5),
                 ("mlops-oip", "kserve-oip", "lr", 3.0), ("mlops", "litserve", "lr", 4.0),
                 ("mlops", "mlflow", "rf", 5.0), ("mlops", "bare", "rf", 3.0), ("mlops", "litserve-batch", "rf", 1.5)]
P99_TARGETS = [("mlops", "bare", "rf")]  # p99 at the highest concurrency: numerator ≤ denominator


class PeerFailed(RuntimeError):
    """A server did not start or did not answer its first request: the run stops (exit 1)."""


# -- models ---------------------------------------------------------------------------------------
def train(folder: Path, with_mlflow: bool) -> dict[str, dict[str, Path]]:
    """Save both models with skops (and MLflow); {model: {"skops": dir, "mlflow": dir}}."""
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)
    models = {"lr": LogisticRegression(max_iter=500).fit(x, y),
              "rf": RandomForestClassifier(n_estimators=50, random_state=0).fit(x, y)}
    saved: dict[str, dict[str, Path]] = {}
    for name, model in models.items():
        skops_dir = folder / name / "skops"
        skops_dir.mkdir(parents=True)
        sio.dump(model, skops_dir / "model.skops")
        trusted = sio.get_untrusted_types(file=skops_dir / "model.skops")  # we made it: we trust it
        (skops_dir / "model.json").write_text(json.dumps({"trusted_types": trusted}))
        saved[name] = {"skops": skops_dir}
        if with_mlflow:
            import mlflow.sklearn

            options = {}
            if "skops_trusted_types" in inspect.signature(mlflow.sklearn.save_model).parameters:
                options["skops_trusted_types"] = trusted  # MLflow 3 saves with skops too
            mlflow.sklearn.save_model(model, str(folder / name / "mlflow"), **options)
            saved[name]["mlflow"] = folder / name / "mlflow"
    return saved


# -- servers --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    label: str
    command: list[str]
    port: int
    path: str  # the scoring route
    ready_path: str
    body: bytes
    headers: dict[str, str]
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, folder: Path) -> float:
        """Start the process; seconds until the ready route answered 200."""
        self.log = folder / f"{self.label}-{self.port}.log"
        began = time.perf_counter()
        with open(self.log, "wb") as log:  # a session of its own: stop() ends its worker processes too
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        deadline = began + READY_TIMEOUT
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise PeerFailed(f"{self.label} exited with code {self.process.returncode}")
            try:
                connection = http.client.HTTPConnection(HOST, self.port, timeout=1)
                connection.request("GET", self.ready_path)
                if connection.getresponse().status == 200:
                    return time.perf_counter() - began
            except OSError:
                pass
            time.sleep(0.02)
        raise PeerFailed(f"{self.label} not ready on {self.ready_path} after {READY_TIMEOUT:g} s")

    def check(self) -> None:
        """One request, so that a wrong body or key fails loudly instead of measuring errors."""
        try:
            connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
            connection.request("POST", self.path, body=self.body, headers=self.headers)
            response = connection.getresponse()
            text = response.read()
        except OSError as error:
            raise PeerFailed(f"{self.label}: POST {self.path} failed: {error}") from None
        if response.status != 200:
            raise PeerFailed(f"{self.label}: POST {self.path} answered {response.status} {text[:300]!r}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the server's whole process group, SIGKILL to what is left after 20 s."""
        if self.process is None:
            return
        for sent in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sent)
            except ProcessLookupError:
                break
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass


def mlops_server(label: str, model_dir: Path, folder: Path, collect: bool, execution: str,
                 sink: str | None = None) -> Server:
    from pipeline.server.auth import generate_keys

    port = free_port()
    keys = generate_keys(folder / f"keys-{port}.json")
    config = {"model_dir": str(model_dir), "flavor": "sklearn", "model_name": MODEL_NAME, "model_version": 1,
              "host": HOST, "port": port, "keys_file": str(folder / f"keys-{port}.json"),
              "data_collector": {"enabled": collect, "sampling_rate": 1.0, "rolling_rate": "minute"},
              "data_dir": str(folder / "collected") if collect else None, "log_level": "warning",
              "execution": execution}
    if sink:
        config["collection_sink"] = sink
    if label == "mlops-nobatch":
        config["request_settings"] = {"max_batch_size": 1}  # adaptive batching off: every request alone
    path = folder / f"server-{port}.json"
    path.write_text(json.dumps(config))
    route, payload = ("/score", body())
    if label == "mlops-oip":
        route, payload = f"/v2/models/{MODEL_NAME}/infer", oip_body("predict")
    return Server(label, [sys.executable, "-m", "pipeline.server", "--config", str(path)], port, route,
                  "/v2/health/ready", payload, {"Content-Type": "application/json",
                                                "Authorization": f"Bearer {keys['primary']}"})


def sink_server(folder: Path) -> Server:
    """A collection sink (no key file: loopback only) for ``mlops+ship``; never driven with load."""
    port = free_port()
    path = folder / f"sink-{port}.json"
    path.write_text(json.dumps({"endpoint": "default", "data_dir": str(folder / "shipped"), "port": port,
                                "host": HOST, "log_level": "warning"}))
    return Server("sink", [sys.executable, "-m", "pipeline.server.sink", "--config", str(path)], port,
                  "/v1/events", "/v1/ready", b"", {})


def mlflow_server(model_dir: Path) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
               "-h", HOST, "-p", str(port), "-w", "1"]
    row = json.loads(body())["data"]
    return Server("mlflow", command, port, "/invocations", "/ping", json.dumps({"inputs": row}).encode(),
                  {"Content-Type": "application/json"})


def peer_server(label: str, model_dir: Path) -> Server:
    """A peer from ``bench/peers.py`` on the model's skops file, with the body its route takes."""
    port = free_port()
    peer = "kserve" if label.startswith("kserve") else label
    command = [sys.executable, str(PEERS), peer, str(model_dir / "model.skops"), str(port)]
    json_headers = {"Content-Type": "application/json"}
    if label == "kserve-v1":
        row = json.loads(body())["data"]
        return Server(label, command, port, f"/v1/models/{MODEL_NAME}:predict", "/v2/health/ready",
                      json.dumps({"instances": row}).encode(), json_headers)
    if label == "kserve-oip":  # its one output is named output-0: asking for it changes nothing
        return Server(label, command, port, f"/v2/models/{MODEL_NAME}/infer", "/v2/health/ready", oip_body(None),
                      json_headers)
    if label == "bare":
        return Server(label, command, port, "/score", "/ready", body(), json_headers)
    return Server(label, command, port, "/predict", "/health", body(), json_headers)  # litserve[-batch]


def start_servers(model: str, labels: list[str], saved: dict[str, dict[str, Path]], folder: Path,
                  execution: str, cold: dict[str, float], running: list[Server]) -> None:
    """Start each server alone (its cold start is timed), then leave them all idle and ready in
    ``running`` (the caller stops them, also when one fails: PeerFailed, with its log's last lines)."""
    for label in labels:
        if label == "mlops+ship":  # its sink first: a process of its own, stopped with the others
            sink = sink_server(folder)
            running.append(sink)
            start_one(sink, model, folder)
            server = mlops_server(label, saved[model]["skops"], folder, True, execution,
                                  sink=f"http://{HOST}:{sink.port}")
        elif label in MLOPS:
            server = mlops_server(label, saved[model]["skops"], folder, label == "mlops+collect", execution)
        elif label == "mlflow":
            server = mlflow_server(saved[model]["mlflow"])
        else:
            server = peer_server(label, saved[model]["skops"])
        running.append(server)
        seconds = start_one(server, model, folder)
        if model == "lr":
            cold[label] = seconds


def start_one(server: Server, model: str, folder: Path) -> float:
    try:
        seconds = server.start(folder)
        server.check()
        return seconds
    except (PeerFailed, OSError) as error:
        tail = server.log_tail()
        raise PeerFailed(f"{server.label} on {model} failed to start: {error}"
                         + (f"\n--- the last lines of its log ---\n{tail}" if tail else "")) from None


def body() -> bytes:
    """The 1-row body of /score, the bare app and LitServe."""
    row = [round(0.1 * (i + 1) - 1.0, 2) for i in range(FEATURES)]
    return json.dumps({"data": [row]}).encode()


def oip_body(output: str | None) -> bytes:
    """The same row as an Open Inference Protocol infer request, asking only for ``output``."""
    row = json.loads(body())["data"]
    request = {"inputs": [{"name": "input-0", "shape": [1, FEATURES], "datatype": "FP64", "data": row}]}
    if output is not None:  # the mlops server answers predict and predict_proba unless asked for one
        request["outputs"] = [{"name": output}]
    return json.dumps(request).encode()


# -- load -----------------------------------------------------------------------------------------
@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def run_wrk(server: Server, concurrency: int, duration: float, folder: Path) -> Result:
    script = folder / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{server.body.decode()}]==]"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in server.headers.items()]
    script.write_text("\n".join(lines) + "\n")
    output = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "5s", "--latency", "-s", str(script),
         f"http://{HOST}:{server.port}{server.path}"],
        capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return Result(rps, p50, p99, errors)


def run_python(server: Server, concurrency: int, duration: float, folder: Path) -> Result:
    """Fallback load: ``concurrency`` threads, each a keep-alive connection, until the deadline."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker() -> None:
        connection = http.client.HTTPConnection(HOST, server.port, timeout=5)
        mine: list[float] = []
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                connection.request("POST", server.path, body=server.body, headers=server.headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    errors[0] += 1
            except OSError:
                errors[0] += 1
                connection = http.client.HTTPConnection(HOST, server.port, timeout=5)
                continue
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + 10)
    latencies.sort()
    if not latencies:
        return Result(0.0, 0.0, 0.0, errors[0])
    quantiles = statistics.quantiles(latencies, n=100)
    return Result(len(latencies) / duration, quantiles[49] * 1000, quantiles[98] * 1000, errors[0])


def median(measured: list[Result]) -> Result:
    """The median of each figure over the rounds (errors: the total)."""
    return Result(statistics.median(r.rps for r in measured), statistics.median(r.p50_ms for r in measured),
                  statistics.median(r.p99_ms for r in measured), sum(r.errors for r in measured))


# -- report ---------------------------------------------------------------------------------------
def report(results: dict[tuple[str, str, int], Result], cold: dict[str, float], notes: list[str],
           concurrency: list[int], load: str, duration: float, rounds: int) -> str:
    lines = [f"Load: {load}, {duration:g} s per cell and round, medians of {rounds} interleaved rounds, "
             f"1-row requests, {os.cpu_count()} CPU cores.", "",
             "| server | model | conc. | req/s | p50 ms | p99 ms | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    for (server, model, c), r in results.items():
        lines.append(f"| {server} | {model} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |")
    lines += ["", "| ratio or cost (highest concurrency unless said) | model | value | target | met |",
              "|---|---|---:|---|---|"]
    lines += target_rows(results, concurrency)
    lines += ["", "| cold start (process start → ready, lr) | seconds |", "|---|---:|"]
    lines += [f"| {server} | {seconds:.2f} |" for server, seconds in cold.items()]
    if notes:
        lines += [""] + [f"* {note}" for note in notes]
    return "\n".join(lines)


def target_rows(results: dict[tuple[str, str, int], Result], concurrency: list[int]) -> list[str]:
    """One row per target whose servers were measured: issue #19's ratios, collection cost, p99, p50."""
    top, low = max(concurrency), min(concurrency)
    models = sorted({m for _, m, _ in results})
    rows = []

    def row(name: str, model: str, value: str, target: str, met: bool) -> None:
        rows.append(f"| {name} | {model} | {value} | {target} | {'yes' if met else '**no**'} |")

    for ours, theirs, model, minimum in RATIO_TARGETS:
        a, b = results.get((ours, model, top)), results.get((theirs, model, top))
        if a is not None and b is not None and b.rps:
            ratio = a.rps / b.rps
            row(f"{ours} / {theirs} req/s", model, f"{ratio:.2f}×", f"≥ {minimum:g}", ratio >= minimum)
    for ours, theirs, model in P99_TARGETS:
        a, b = results.get((ours, model, top)), results.get((theirs, model, top))
        if a is not None and b is not None:
            row(f"p99 {ours} vs {theirs}", model, f"{a.p99_ms:.2f} vs {b.p99_ms:.2f} ms", f"≤ {theirs}",
                a.p99_ms <= b.p99_ms)
    for model in models:
        ours = results.get(("mlops", model, top))
        for label, name in (("mlops+collect", "collection cost"), ("mlops+ship", "collection + shipping cost")):
            other = results.get((label, model, top))
            if ours is not None and other is not None and ours.rps:
                cost = 1 - other.rps / ours.rps
                row(name, model, f"{cost:+.1%}", f"≤ {TARGETS['collection_cost']:.0%}",
                    cost <= TARGETS["collection_cost"])
    for model in models:  # batching must not cost a lone caller: p50 at the lowest concurrency
        ours, nobatch = results.get(("mlops", model, low)), results.get(("mlops-nobatch", model, low))
        if ours is not None and nobatch is not None and nobatch.p50_ms:
            change = ours.p50_ms / nobatch.p50_ms - 1
            row(f"mlops / mlops-nobatch p50, {low} conn.", model, f"{change:+.1%}",
                f"within ±{TARGETS['nobatch_p50_c1']:.0%}", abs(change) <= TARGETS["nobatch_p50_c1"])
    return rows


def write_readme(table: str, command: str) -> None:
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    block = f"{BEGIN}\nCommand: `{command}`\n\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell (default 5)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell; medians reported")
    parser.add_argument("--models", default="lr,rf", help="comma-separated: lr, rf")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated, of: {', '.join(SERVERS)} (default: all but mlops+ship)")
    parser.add_argument("--execution", default="auto", choices=["auto", "inline", "thread"],
                        help="the mlops server's execution mode")
    parser.add_argument("--python-load", action="store_true", help="use the Python load client even with wrk")
    parser.add_argument("--write-readme", action="store_true", help=f"put the results into {README.name}")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    servers = args.servers.split(",")
    unknown = [label for label in servers if label not in SERVERS]
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    models = args.models.split(",")
    if not set(models) <= {"lr", "rf"}:
        parser.error(f"--models: choose from lr, rf, not {args.models}")
    missing = sorted({NEEDS[label] for label in servers if label in NEEDS
                      and importlib.util.find_spec(NEEDS[label]) is None})
    if missing:
        print(f"error: {', '.join(missing)} not installed for {sys.executable}: {INSTALL}", file=sys.stderr)
        return 1
    notes: list[str] = []
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    load = "wrk -t1 (Lua POST script)" if use_wrk else "bounded Python client (threads, keep-alive)"
    if not use_wrk:
        notes.append("wrk not found: the Python load client is the bottleneck; compare rows only with each other")
    drive = run_wrk if use_wrk else run_python
    results: dict[tuple[str, str, int], Result] = {}
    cold: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as temp:
        folder = Path(temp)
        saved = train(folder, "mlflow" in servers)
        for model in models:
            running: list[Server] = []
            try:
                try:
                    start_servers(model, servers, saved, folder, args.execution, cold, running)
                except PeerFailed as error:
                    print(f"error: {error}", file=sys.stderr)
                    return 1
                rounds: dict[tuple[str, str, int], list[Result]] = {}
                for _ in range(args.rounds):  # interleaved, so that noise from elsewhere hits all alike
                    for server in running:
                        if server.label == "sink":
                            continue
                        for c in concurrency:
                            rounds.setdefault((server.label, model, c), []).append(
                                drive(server, c, args.duration, folder))
                for key, measured in rounds.items():
                    results[key] = median(measured)
                    r = results[key]
                    print(f"{key[0]:14} {model:3} c={key[2]:<3} {r.rps:9,.0f} req/s  p50 {r.p50_ms:6.2f} ms"
                          f"  p99 {r.p99_ms:6.2f} ms  errors {r.errors}", flush=True)
            finally:
                for server in reversed(running):  # a sink after the service that ships to it
                    server.stop()
    table = report(results, cold, notes, concurrency, load, args.duration, args.rounds)
    print()
    print(table)
    if args.write_readme:
        command = "python bench/serve.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_readme(table, command.replace(" --write-readme", "").strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
