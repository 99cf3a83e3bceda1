"""Benchmark how fast a scoring service starts, and its memory: a linear model loaded through scikit-learn
against the same model from its kept linear form (``pipeline.runtime.linear``), in one run.

    python bench/start.py [--model models/iris] [--rounds 5]

Starts ``python -m pipeline.server`` on the model folder as the local target does, alternating the two
ways (the linear form removed before each scikit-learn start), and times process start → first 200 from
``/v2/health/ready``; RSS is read once ready. Prints the median of ``--rounds`` starts of each, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: Path, model: Path, derived: Path) -> tuple[float, float, str]:
    """(seconds to ready, RSS in MB once ready, the service's ready line) of one start."""
    import httpx
    import psutil

    port = free_port()
    baseline = next(iter(sorted(model.glob("baseline*.csv"))), None)
    config = {"model_dir": str(model), "flavor": "sklearn", "model_name": "bench", "model_version": 1,
              "port": port, "log_level": "info", "derived_dir": str(derived),
              "baseline": str(baseline) if baseline else None}
    folder.mkdir(parents=True)
    (folder / "server.json").write_text(json.dumps(config))
    began = time.perf_counter()
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "pipeline.server", "--config", str(folder / "server.json")],
                                   stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the service exited {process.returncode}:\n{(folder / 'server.log').read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        seconds = time.perf_counter() - began
        rss = psutil.Process(process.pid).memory_info().rss / 2**20
    finally:
        process.terminate()
        process.wait(20)
    ready = next(line for line in (folder / "server.log").read_text().splitlines() if "ready:" in line)
    return seconds, rss, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "iris")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-start-"))
    derived = work / "derived"
    results: dict[str, list[tuple[float, float]]] = {"scikit-learn": [], "kept linear form": []}
    try:
        for round_ in range(args.rounds):
            shutil.rmtree(derived, ignore_errors=True)
            for way in results:  # scikit-learn first: it keeps the form the second start reads
                seconds, rss, ready = start(work / f"{round_}-{len(results[way])}-{way[:4]}", args.model, derived)
                expected = "its kept linear form" in ready
                if expected != (way == "kept linear form"):
                    raise SystemExit(f"{way}: the service did not load that way: {ready}")
                results[way].append((seconds, rss))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nscoring service start, {args.model.name}; median of {args.rounds} starts each; "
          f"{os.cpu_count()} CPU cores\n")
    print(f"{'loaded through':<20} {'start → ready':>14} {'RSS':>8}")
    medians = {way: (statistics.median(s for s, _ in runs), statistics.median(r for _, r in runs))
               for way, runs in results.items()}
    for way, (seconds, rss) in medians.items():
        print(f"{way:<20} {seconds:>12.2f} s {rss:>5.0f} MB")
    (slow, big), (fast, small) = medians["scikit-learn"], medians["kept linear form"]
    print(f"\nkept linear form: {slow / fast:.1f}x faster to ready, {big / small:.1f}x less memory")


if __name__ == "__main__":
    main()
