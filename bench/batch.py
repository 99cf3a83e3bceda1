"""Benchmark ``mlops score-batch`` against ``mlflow models predict`` on the same rows and model, in one run.

    python bench/batch.py [--rows 1000000] [--workers 1,2] [--repeat 3] [--no-mlflow]

Trains a logistic regression on 20 synthetic features (fitted on a DataFrame, so both tools match
columns by name), saves it with skops (registered in a temporary mlops repository) and with
``mlflow.sklearn.save_model``, writes ``--rows`` rows as Parquet (and as CSV, since ``mlflow models
predict`` reads only CSV or JSON), then times each command end to end (process start to exit, as a
user runs it; mlops once more as on the first run of a version, before the registry keeps the model's
linear form) — and once more on 1,000 rows, whose time is the command's startup (imports, model load),
subtracted to give the scoring rate — and samples the peak resident memory of its whole process tree (workers included)
every 20 ms with psutil. Each time is the best of ``--repeat`` runs (other processes on a shared machine only ever
add time), the peak memory the highest. Prints one table: rows/s, seconds, peak RSS, and the ratio to MLflow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 20
SMALL = 1_000  # rows of the run that measures each command's startup


def prepare(folder: Path, rows: int, with_mlflow: bool) -> dict[str, Path]:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    names = [f"f{i}" for i in range(FEATURES)]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5_000, FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(pd.DataFrame(x, columns=names), y)
    repo = folder / "repo"
    (repo / "models" / "lr").mkdir(parents=True)
    sio.dump(model, repo / "models" / "lr" / "model.skops")
    (repo / "mlops.yaml").write_text("version: 1\nregistry: .mlops/registry\nmodels:\n"
                                     "  lr: {path: models/lr, flavor: sklearn}\ntargets:\n  local: {type: local}\n")
    subprocess.run([sys.executable, "-m", "pipeline.cli.main", "-f", str(repo / "mlops.yaml"), "models", "register",
                    str(repo / "models" / "lr"), "--name", "lr", "--flavor", "sklearn"], check=True, env=_env(),
                   capture_output=True)
    paths = {"repo": repo, "parquet": folder / "rows.parquet", "csv": folder / "rows.csv",
             "small-parquet": folder / "small.parquet", "small-csv": folder / "small.csv"}
    writer = None
    block = 100_000
    for start in range(0, rows, block):  # written by blocks: the benchmark itself stays small too
        data = rng.normal(size=(min(block, rows - start), FEATURES))
        table = pa.table({name: data[:, i] for i, name in enumerate(names)})
        if writer is None:
            writer = pq.ParquetWriter(paths["parquet"], table.schema)
            csv_writer = pcsv.CSVWriter(paths["csv"], table.schema)
        writer.write_table(table, row_group_size=block)
        csv_writer.write_table(table)
    assert writer is not None
    writer.close()
    csv_writer.close()
    first = pq.ParquetFile(paths["parquet"]).read_row_group(0).slice(0, SMALL)
    pq.write_table(first, paths["small-parquet"])
    pcsv.write_csv(first, paths["small-csv"])
    if with_mlflow:
        import mlflow.sklearn

        paths["mlflow"] = folder / "mlflow-model"
        mlflow.sklearn.save_model(model, str(paths["mlflow"]), input_example=pd.DataFrame(x[:2], columns=names))
    return paths


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def measure(command: list[str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes of the process and its descendants) of one command."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        detail = process.stderr.read().decode()[-3000:] if process.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{detail}")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; the fastest counts")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    with_mlflow = not args.no_mlflow and shutil.which("mlflow") is not None
    folder = Path(tempfile.mkdtemp(prefix="mlops-bench-batch-"))
    try:
        paths = prepare(folder, args.rows, with_mlflow)
        mlops = [sys.executable, "-m", "pipeline.cli.main", "-f", str(paths["repo"] / "mlops.yaml"), "score-batch",
                 "lr:1", "--overwrite"]
        def forget_linear_form() -> None:  # as on the first run of a version: loaded through scikit-learn
            for derived in (paths["repo"] / ".mlops" / "registry" / "materialized").glob("*.derived"):
                shutil.rmtree(derived)

        def keep() -> None:
            pass

        commands: list[tuple[str, str, Callable[[Path, Path], list[str]], Callable[[], None]]] = []
        one = [*mlops, "--workers", "1"]
        commands.append(("mlops score-batch, Parquet, 1st run of a version", "parquet",
                         lambda i, o: [*one, "--input", str(i), "--output", str(o)], forget_linear_form))
        for workers in [int(w) for w in args.workers.split(",")]:
            commands.append((f"mlops score-batch, Parquet, {workers} worker(s)", "parquet",
                             lambda i, o, w=workers: [*mlops, "--input", str(i), "--output", str(o),
                                                      "--workers", str(w)], keep))
        commands.append(("mlops score-batch, CSV, 1 worker(s)", "csv",
                         lambda i, o: [*one, "--input", str(i), "--output", str(o)], keep))
        if with_mlflow:
            commands.append(("mlflow models predict, CSV", "csv",
                             lambda i, o: ["mlflow", "models", "predict", "-m", str(paths["mlflow"]), "-i", str(i),
                                           "-t", "csv", "-o", str(o) + ".json", "--env-manager", "local"], keep))
        results = []
        for name, kind, command, before in commands:
            runs = []
            for _ in range(max(args.repeat, 1)):
                before()
                small = measure(command(paths[f"small-{kind}"], folder / "out-small"), folder)
                before()
                runs.append((small, measure(command(paths[kind], folder / "out"), folder)))
            small = min(run[0][0] for run in runs)
            seconds = min(run[1][0] for run in runs)
            peak = max(run[1][1] for run in runs)
            # rows/s once started (startup subtracted); none when the noise exceeds the difference
            steady = (args.rows - SMALL) / (seconds - small) if seconds > small else float("nan")
            results.append((name, seconds, args.rows / seconds, steady, peak))
        print(f"\n{args.rows:,} rows x {FEATURES} features, logistic regression; {os.cpu_count()} CPU cores; "
              f"end to end = process start to exit, scoring = startup (a {SMALL:,}-row run) subtracted; "
              f"best of {max(args.repeat, 1)} run(s)\n")
        print(f"{'command':<50} {'seconds':>8} {'rows/s e2e':>11} {'rows/s scoring':>15} {'peak RSS':>10} "
              f"{'vs mlflow (e2e / scoring)':>26}")
        reference = results[-1] if with_mlflow else None
        for name, seconds, rate, steady, peak in results:
            ratio = f"{rate / reference[2]:.1f}x / {steady / reference[3]:.1f}x" if reference else "-"
            print(f"{name:<50} {seconds:>8.2f} {rate:>11,.0f} {steady:>15,.0f} {peak / 2**20:>7.0f} MB {ratio:>26}")
        if not with_mlflow:
            print("\n(mlflow not installed or --no-mlflow: no comparison)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
