"""`mlops monitor` over many collected events: wall time and peak memory of the whole command.

    python bench/monitor.py [--events 1000000] [--formats json,html] [--keep DIR]

Writes a copy of the example repository with a 1,000-row baseline and --events collected events
(two deployments, one model version each, 2 writer processes per hour over the last 20 hours,
4-feature rows, a label per response, 2 % errors) as the collector lays them out, then runs
`mlops monitor iris --since 1d` once per format as a child process and reports its wall time, CPU
time (the machine's load shows in the wall time, not in this) and peak resident memory (the
kernel's high-water mark for that child: ``wait4``'s ru_maxrss).
Targets: under 10 s and under 500 MB for 1,000,000 events.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MEANS, SCALES = np.array([5.8, 3.0, 3.8, 1.2]), np.array([0.8, 0.4, 1.7, 0.7])


def make_repo(root: Path, events: int) -> None:
    shutil.copytree(REPO / "models", root / "models")
    shutil.copytree(REPO / "environments", root / "environments")
    text = (REPO / "mlops.yaml").read_text()
    green = "      green:\n        model: iris-classifier\n        environment: sklearn\n"
    (root / "mlops.yaml").write_text(text.replace("traffic: {blue: 100}", "traffic: {blue: 80, green: 20}")
                                     .replace("    deployments:\n", "    deployments:\n" + green, 1))
    generator = np.random.default_rng(0)
    np.savetxt(root / "models" / "iris" / "baseline.csv", generator.normal(MEANS, SCALES, (1000, 4)),
               delimiter=",", header=",".join(FEATURES), comments="", fmt="%.3f")
    now = datetime.now(UTC)
    start = now - timedelta(hours=20)
    step = 20 * 3600 / events
    rows = generator.normal(MEANS, SCALES, (events, 4)).round(2).tolist()
    statuses = np.where(generator.random(events) < 0.02, 500, 200).tolist()
    latencies = generator.gamma(2, 1.5, events).round(3).tolist()
    labels = generator.integers(0, 3, events).tolist()
    handles: dict[Path, object] = {}
    try:
        for i in range(events):
            moment = start + timedelta(seconds=i * step)
            deployment, version = ("green", 2) if i % 5 == 0 else ("blue", 1)
            process = i % 2
            path = (root / ".mlops" / "data" / "iris" / deployment / moment.strftime("%Y/%m/%d/%H")
                    / f"00-{100 + process}-0123abc{process}.jsonl")
            handle = handles.get(path)
            if handle is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = handles[path] = path.open("ab")
            status = statuses[i]
            handle.write(orjson.dumps({  # type: ignore[attr-defined]
                "id": f"{i:032x}", "time": moment.isoformat(timespec="microseconds"), "endpoint": "iris",
                "deployment": deployment, "model": "iris-classifier", "model_version": version, "route": "/score",
                "status": status, "latency_ms": latencies[i], "inputs": {"data": [rows[i]]},
                "outputs": [labels[i]] if status == 200 else None,
                "error": "the model failed" if status != 200 else None}) + b"\n")
            if len(handles) > 8:  # files are written hour by hour: close the past ones
                for old in list(handles)[:-4]:
                    handles.pop(old).close()  # type: ignore[attr-defined]
    finally:
        for handle in handles.values():
            handle.close()  # type: ignore[attr-defined]


def run(root: Path, fmt: str) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak MB, exit code) of one `mlops monitor` child process."""
    command = [sys.executable, "-m", "pipeline.cli.main", "--file", str(root / "mlops.yaml"), "monitor", "iris",
               "--since", "1d", "--format", fmt]
    if fmt == "html":
        command += ["--out", str(root / "report.html")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak RSS in KiB
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    if code:
        sys.stderr.write(process.stderr.read().decode()[-2000:])
    process.stderr.close()
    process.returncode = code
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--formats", default="json,html")
    parser.add_argument("--keep", type=Path, help="Write the repository here and keep it.")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # the child that writes the events
    args = parser.parse_args()
    if args.generate:
        make_repo(args.generate, args.events)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="mlops-bench-monitor-", dir=os.environ.get("TMPDIR")))
    try:
        started = time.perf_counter()
        # in a child: a child forked from a parent holding the generated rows would start at its size,
        # and Linux keeps that high-water mark across exec
        subprocess.run([sys.executable, __file__, "--generate", str(root), "--events", str(args.events)],
                       check=True)
        size = sum(p.stat().st_size for p in (root / ".mlops" / "data").rglob("*.jsonl"))
        print(f"wrote {args.events:,} events ({size / 1e6:.0f} MB of JSON lines) in "
              f"{time.perf_counter() - started:.1f} s")
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print("| format | events | wall time | CPU time (user+sys) | peak RSS |")
        print("|---|---:|---:|---:|---:|")
        for fmt in args.formats.split(","):
            seconds, cpu, peak_mb, code = run(root, fmt)
            status = "" if code == 0 else f" (exit {code})"
            print(f"| {fmt} | {args.events:,} | {seconds:.2f} s | {cpu:.2f} s | {peak_mb:.0f} MB{status} |")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
