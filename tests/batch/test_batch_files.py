"""``mlops score-batch`` on real files: every input kind, the scoring service's predictions, resume after
SIGKILL, row errors, column errors, workers. The endpoint path is in tests/e2e/test_batch_endpoint.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = 2_500

SPEC = """\
version: 1
registry: .mlops/registry
models:
  iris-classifier:
    path: models/iris
    flavor: sklearn
    baseline: models/iris/baseline.csv
  summer:
    path: models/summer
    flavor: python
targets:
  local: {type: local}
"""

SCORE_PY = textwrap.dedent("""
    import json

    def init():
        pass

    def run(raw_data):
        return [sum(row) * 2 for row in json.loads(raw_data)["data"]]
""")


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.spec = root / "mlops.yaml"

    def cli(self, *args: str, input: bytes | None = None, check: bool = True):
        result = CliRunner().invoke(cli, ["-f", str(self.spec), *args], input=input, catch_exceptions=False)
        if check and result.exit_code != 0:
            raise AssertionError(f"mlops {' '.join(args)} exited {result.exit_code}:\n{result.output}")
        return result

    def process(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "-f", str(self.spec), *args],
                              capture_output=True, text=True, timeout=120, cwd=self.root,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("batch") / "repo"
    shutil.copytree(ROOT / "models" / "iris", root / "models" / "iris")
    (root / "models" / "summer").mkdir()
    (root / "models" / "summer" / "score.py").write_text(SCORE_PY)
    (root / "mlops.yaml").write_text(SPEC)
    (root / ".gitignore").write_text(".mlops/\n")
    repo = git.Repo.init(root, initial_branch="main")
    repo.git.add(A=True)
    repo.index.commit("models")
    project = Project(root)
    project.cli("models", "register", str(root / "models" / "iris"), "--name", "iris-classifier", "--flavor", "sklearn")
    project.cli("models", "register", str(root / "models" / "summer"), "--name", "summer", "--flavor", "python")
    rng = np.random.default_rng(7)
    data = {"id": np.arange(ROWS), "petal_width": rng.uniform(0, 2.5, ROWS).round(2),  # not the model's order
            "sepal_length": rng.uniform(4, 8, ROWS).round(2), "sepal_width": rng.uniform(2, 4.5, ROWS).round(2),
            "petal_length": rng.uniform(1, 7, ROWS).round(2)}
    table = pa.table(data)
    data_dir = root / "data"
    data_dir.mkdir()
    pcsv.write_csv(table, data_dir / "rows.csv")
    pq.write_table(table, data_dir / "rows.parquet", row_group_size=700)
    with open(data_dir / "rows.jsonl", "w") as handle:
        for row in table.to_pylist():
            handle.write(json.dumps(row) + "\n")
    parts = data_dir / "parts"
    parts.mkdir()
    for number, start in enumerate(range(0, ROWS, 1000)):
        pcsv.write_csv(table.slice(start, 1000), parts / f"rows-{number}.csv")
    return project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_predictions(project: Project, model: str, rows: list[list[float]]) -> list:
    """What the real scoring service (``mlops serve``) answers on /score for ``rows``."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "-f", str(project.spec), "serve", model,
                                "--port", str(port)], cwd=project.root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the scoring service did not start"
            time.sleep(0.05)
        response = httpx.post(f"http://127.0.0.1:{port}/score", json={"data": rows}, timeout=30)
        response.raise_for_status()
        return response.json()["predictions"] if isinstance(response.json(), dict) else response.json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)


@pytest.fixture(scope="module")
def service_answers(project: Project) -> list:
    """The service's predictions for the data rows, sent in the model's (baseline's) column order."""
    table = pq.read_table(project.root / "data" / "rows.parquet")
    rows = [list(row) for row in zip(*(table[name].to_pylist() for name in FEATURES), strict=True)]
    return served_predictions(project, "iris-classifier:1", rows)


def read_output(folder: Path) -> pa.Table:
    return pq.read_table(sorted(folder.glob("part-*.parquet")))


@pytest.mark.parametrize("what", ["csv", "parquet", "jsonl", "glob", "folder", "stdin"])
def test_every_input_kind_gives_the_scoring_services_predictions(project, service_answers, tmp_path, what):
    data = project.root / "data"
    sources = {"csv": str(data / "rows.csv"), "parquet": str(data / "rows.parquet"), "jsonl": str(data / "rows.jsonl"),
               "glob": str(data / "parts" / "rows-*.csv"), "folder": str(data / "parts"), "stdin": "-"}
    extra = ["--input-format", "csv"] if what == "stdin" else []
    stdin = (data / "rows.csv").read_bytes() if what == "stdin" else None
    out = tmp_path / "out"
    result = project.cli("score-batch", "iris-classifier:1", "--input", sources[what], "--output", str(out),
                         "--id-column", "id", "--chunk-rows", "600", "--format", "json", *extra, input=stdin)
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["rows_in"] == summary["rows_out"] == ROWS and summary["errors"] == 0
    table = read_output(out)
    assert table["id"].to_pylist() == list(range(ROWS))  # every row once, in input order
    assert table["prediction"].to_pylist() == service_answers  # bit for bit the service's answer
    assert {f"proba_{c}" for c in range(3)} <= set(table.column_names)
    proba = np.column_stack([table[f"proba_{c}"].to_numpy() for c in range(3)])
    assert np.allclose(proba.sum(axis=1), 1.0) and (proba.argmax(axis=1) == np.asarray(service_answers)).all()
    lineage = pq.read_metadata(out / "part-00000.parquet").metadata
    assert lineage[b"mlops.model"] == b"iris-classifier" and lineage[b"mlops.version"] == b"1"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["finished"] and all(d.startswith("sha256:") for d in manifest["lineage"]["inputs"].values())
    assert lineage[b"mlops.digest"].decode() == manifest["lineage"]["digest"]


def test_python_flavor_matches_the_service(project, tmp_path):
    out = tmp_path / "out"
    project.cli("score-batch", "summer:1", "--input", str(project.root / "data" / "rows.parquet"), "--output", str(out),
                "--id-column", "id", "--chunk-rows", "1000")
    table = read_output(out)
    source = pq.read_table(project.root / "data" / "rows.parquet")
    names = [n for n in source.column_names if n != "id"]
    rows = [list(row) for row in zip(*(source[n].to_pylist() for n in names), strict=True)]
    assert table["prediction"].to_pylist() == served_predictions(project, "summer:1", rows)


def test_kill_9_then_resume_gives_the_uninterrupted_output(project, tmp_path):
    source = str(project.root / "data" / "rows.csv")
    args = ["score-batch", "iris-classifier:1", "--input", source, "--id-column", "id", "--chunk-rows", "300"]
    whole, trace = tmp_path / "whole", tmp_path / "trace.tsv"
    assert project.process(*args, "--output", str(whole), env={"MLOPS_CRASH_TRACE": str(trace)}).returncode == 0
    points = (line.split("\t") for line in trace.read_text().splitlines())
    parts = [int(number) for number, name in points if name == "batch.part"]
    assert len(parts) == 9
    out = tmp_path / "out"
    killed = project.process(*args, "--output", str(out), env={"MLOPS_CRASH_AT": str(parts[3])})
    assert killed.returncode == -signal.SIGKILL
    assert len(list(out.glob("part-*.parquet"))) == 4
    refused = project.cli(*args, "--output", str(out), check=False)
    assert refused.exit_code == 1 and "--resume" in refused.output
    resumed = project.cli(*args, "--output", str(out), "--resume")
    assert "4 resumed" in resumed.output
    assert sorted(p.name for p in out.glob("part-*")) == sorted(p.name for p in whole.glob("part-*"))

    def lineage(path: Path) -> dict:  # the run's time differs between two runs (and the schema embeds it)
        skip = (b"mlops.scored_at", b"ARROW:schema")
        return {k: v for k, v in pq.read_metadata(path).metadata.items() if k not in skip}

    for part in whole.glob("part-*.parquet"):
        assert pq.read_table(out / part.name).equals(pq.read_table(part))
        assert lineage(out / part.name) == lineage(part)
    assert len({pq.read_metadata(p).metadata[b"mlops.scored_at"] for p in out.glob("part-*")}) == 1  # one run
    assert read_output(out)["id"].to_pylist() == list(range(ROWS))  # nothing lost, nothing twice


def test_rows_of_the_wrong_type_go_to_errors_and_max_errors_decides(project, tmp_path):
    text = (project.root / "data" / "rows.csv").read_text().splitlines()
    for line in (11, 1235):  # data rows 11 and 1235 (line 0 is the header)
        cells = text[line].split(",")
        cells[2] = "abc"
        text[line] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "out"
    args = ["score-batch", "iris-classifier:1", "--input", str(bad), "--output", str(out), "--id-column", "id",
            "--chunk-rows", "500"]
    failed = project.cli(*args, "--max-errors", "1", check=False)
    assert failed.exit_code == 1 and "2 row(s) failed, more than --max-errors 1" in failed.output
    assert "_errors.jsonl" in failed.output and "Traceback" not in failed.output
    project.cli(*args, "--max-errors", "2", "--overwrite")
    errors = [json.loads(line) for line in (out / "_errors.jsonl").read_text().splitlines()]
    assert [(e["file"], e["row"]) for e in errors] == [(str(bad), 11), (str(bad), 1235)]
    assert "abc" in errors[0]["message"]
    table = read_output(out)
    assert table.num_rows == ROWS - 2 and 10 not in table["id"].to_pylist() and 1234 not in table["id"].to_pylist()
    assert project.cli(*args, "--max-errors", "-1", "--overwrite").exit_code == 0


def test_wrong_columns_are_one_clear_error(project, tmp_path):
    table = pq.read_table(project.root / "data" / "rows.parquet").drop(["petal_width"])
    table = table.append_column("colour", pa.array(["red"] * table.num_rows))
    path = tmp_path / "odd.parquet"
    pq.write_table(table, path)
    result = project.cli("score-batch", "iris-classifier:1", "--input", str(path), "--output", str(tmp_path / "o"),
                         "--id-column", "id", check=False)
    assert result.exit_code == 1
    assert str(path) in result.output and "missing ['petal_width']" in result.output
    assert "extra ['colour']" in result.output and "Traceback" not in result.output


def test_output_is_never_overwritten_without_overwrite(project, tmp_path):
    out = tmp_path / "out"
    args = ["score-batch", "models:/iris-classifier/1", "--input", str(project.root / "data" / "rows.csv"),
            "--output", str(out), "--keep-all", "--output-format", "csv"]
    project.cli(*args)
    again = project.cli(*args, check=False)
    assert again.exit_code == 1 and "--overwrite" in again.output
    project.cli(*args, "--overwrite")
    written = pcsv.read_csv(out / "part-00000.csv")
    assert written.column_names[:5] == ["id", "petal_width", "sepal_length", "sepal_width", "petal_length"]


@pytest.mark.slow
def test_worker_processes_give_the_same_parts(project, tmp_path):
    source = str(project.root / "data" / "rows.parquet")
    args = ["score-batch", "iris-classifier:1", "--input", source, "--id-column", "id", "--chunk-rows", "400"]
    project.cli(*args, "--output", str(tmp_path / "one"))
    project.cli(*args, "--output", str(tmp_path / "two"), "--workers", "2")
    assert read_output(tmp_path / "two").equals(read_output(tmp_path / "one"))


def test_a_run_from_the_kept_linear_form_writes_what_scikit_learn_wrote(project, tmp_path):
    for derived in (project.root / ".mlops" / "registry" / "materialized").glob("*.derived"):
        shutil.rmtree(derived)
    args = ["score-batch", "iris-classifier:1", "--input", str(project.root / "data" / "rows.parquet"),
            "--id-column", "id"]
    project.cli(*args, "--output", str(tmp_path / "first"))  # loads through scikit-learn, keeps the linear form
    assert list((project.root / ".mlops" / "registry" / "materialized").glob("*.derived/linear-*.npz"))
    second = project.process(*args, "--output", str(tmp_path / "second"))
    assert second.returncode == 0, second.stderr
    assert read_output(tmp_path / "second").equals(read_output(tmp_path / "first"))  # probabilities too


@pytest.mark.slow
def test_mlflow_flavor_matches_the_service(project, tmp_path):
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    source = pq.read_table(project.root / "data" / "rows.parquet")
    frame = source.select(FEATURES).to_pandas()
    model = LogisticRegression(max_iter=300).fit(frame, (frame["petal_length"] > 4).astype(int))
    folder = tmp_path / "mlflow-model"
    mlflow_sklearn.save_model(model, str(folder), input_example=pd.DataFrame(frame.iloc[:2]))
    (folder / "model.json").write_text('{"allow_pickle": true}')  # MLflow's default format is a pickle
    project.cli("models", "register", str(folder), "--name", "flowing", "--flavor", "mlflow")
    out = tmp_path / "out"
    project.cli("score-batch", "flowing:1", "--input", str(project.root / "data" / "rows.parquet"), "--output",
                str(out), "--id-column", "id")
    rows = [list(row) for row in zip(*(source[name].to_pylist() for name in FEATURES), strict=True)]
    assert read_output(out)["prediction"].to_pylist() == served_predictions(project, "flowing:1", rows)


def test_a_chunk_whose_every_row_fails_leaves_no_part(project, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,sepal_length,sepal_width,petal_length,petal_width\n0,5.1,3.5,1.4,0.2\n1,x,3.0,1.4,0.2\n"
                   "2,y,3.1,1.5,0.2\n3,6.2,2.9,4.3,1.3\n")
    out = tmp_path / "out"
    project.cli("score-batch", "iris-classifier:1", "--input", str(bad), "--output", str(out), "--id-column", "id",
                "--chunk-rows", "1", "--max-errors", "-1")
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet", "part-00003.parquet"]
    assert pq.read_table(out)["id"].to_pylist() == [0, 3]  # the folder reads as one table
    assert len((out / "_errors.jsonl").read_text().splitlines()) == 2


def test_a_model_that_does_not_load_is_one_error_and_leaves_the_output_alone(project, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "score.py").write_text("def init():\n    raise RuntimeError('no weights here')\n\n\n"
                                     "def run(data):\n    return data\n")
    project.cli("models", "register", str(folder), "--name", "broken", "--flavor", "python")
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"an earlier run's part")
    result = project.cli("score-batch", "broken:1", "--input", str(project.root / "data" / "rows.parquet"),
                         "--output", str(out), "--overwrite", check=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot load broken:1" in result.output and "no weights here" in result.output
    assert (out / "part-00000.parquet").read_bytes() == b"an earlier run's part"  # loading fails before writing
