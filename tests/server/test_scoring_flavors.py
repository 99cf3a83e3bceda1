"""Each flavor served by a real process: onnx, an Azure-style score.py, a folder saved by MLflow;
and the clear refusals (missing MLflow, untrusted skops types, pickles, a broken model folder)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ServeError
from pipeline.runtime import load_model

ROWS = [[0.5, -1.0, 2.0, 0.1], [-2.0, -1.0, 0.0, 3.0]]


@pytest.mark.slow
def test_onnx_flavor_without_auth(serve, models, estimator_predictions):
    served = serve(models["onnx"], "onnx", auth=False)
    expected = estimator_predictions(np.array(ROWS, dtype=np.float32)).tolist()
    with served.client() as client:
        assert client.post("/score", json={"data": ROWS}).json() == {"predictions": expected}
        metadata = client.get("/v2/models/iris").json()
        assert metadata["platform"] == "onnxruntime_onnx"
        assert metadata["inputs"][0]["datatype"] == "FP32" and metadata["inputs"][0]["shape"][-1] == 4
        body = client.post("/v2/models/iris/infer", json={"inputs": [
            {"name": "X", "shape": [2, 4], "datatype": "FP64", "data": ROWS}]}).json()
        names = [o["name"] for o in body["outputs"]]
        assert set(names) == {"label", "probabilities"}
        assert body["outputs"][names.index("label")]["data"] == expected
        assert client.get("/openapi.json").status_code == 200  # no key needed with auth off


@pytest.mark.slow
def test_python_flavor_azure_score_script(serve, models):
    served = serve(models["python"], "python")
    with served.client() as client:
        # run() gets the raw body text; its return value is the response, unwrapped (as on Azure)
        assert client.post("/score", json={"data": [[1, 2], [3, 4]]}).json() == [6.0, 14.0]
        body = client.post("/v2/models/iris/infer", json={"inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}).json()
        assert body["outputs"][0]["data"] == [6.0, 14.0]
        failed = client.post("/score", json={"data": "boom"})
        assert failed.status_code == 500 and "the model blew up" in failed.json()["error"]
        assert client.post("/score", json={"data": [[1, 1]]}).json() == [4.0]  # still serving
    assert "the model blew up" in served.log.read_text()  # logged


@pytest.mark.slow
def test_mlflow_flavor_with_a_folder_saved_by_mlflow(serve, models, estimator_predictions):
    if "mlflow" not in models:
        pytest.skip('MLflow is not installed (pip install "mlops-pipeline[mlflow]")')
    served = serve(models["mlflow"], "mlflow")
    expected = estimator_predictions(np.array(ROWS)).tolist()
    with served.client() as client:
        assert client.post("/score", json={"data": ROWS}).json() == {"predictions": expected}
        metadata = client.get("/v2/models/iris").json()
        assert metadata["platform"] == "mlflow_pyfunc"
        assert metadata["inputs"][0]["shape"] == [-1, 4]


def test_missing_mlflow_names_the_extra(models, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ServeError, match=r'pip install "mlops-pipeline\[mlflow\]"'):
        load_model(folder, "mlflow")


def test_untrusted_skops_types_are_refused_unless_listed(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    folder = tmp_path / "m"
    folder.mkdir()
    sio.dump(FunctionTransformer(math.log1p).fit([[1.0]]), folder / "model.skops")
    with pytest.raises(ServeError, match="math.log1p"):
        load_model(folder, "sklearn")
    (folder / "model.json").write_text(json.dumps({"trusted_types": ["math.log1p"]}))
    load_model(folder, "sklearn")


def test_even_sklearn_tree_storage_must_be_listed(tmp_path):
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    folder = tmp_path / "m"
    folder.mkdir()
    x = np.random.default_rng(0).normal(size=(40, 3))
    sio.dump(RandomForestClassifier(n_estimators=3).fit(x, x[:, 0] > 0), folder / "model.skops")
    with pytest.raises(ServeError, match=r'\{"trusted_types": \["sklearn.tree._tree.Tree"\]\}'):
        load_model(folder, "sklearn")
    (folder / "model.json").write_text(json.dumps({"trusted_types": ["sklearn.tree._tree.Tree"]}))
    model = load_model(folder, "sklearn")
    assert model.warm_up() is not None


def test_pickles_need_explicit_permission(tmp_path):
    import joblib
    from sklearn.linear_model import LinearRegression

    folder = tmp_path / "m"
    folder.mkdir()
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), folder / "model.joblib")
    with pytest.raises(ServeError, match="allow_pickle"):
        load_model(folder, "sklearn")
    (folder / "model.json").write_text(json.dumps({"allow_pickle": True, "input_example": [[3.0]]}))
    model = load_model(folder, "sklearn")
    assert model.predict_batch([[3.0]]).tolist() == pytest.approx([6.0])


def test_a_failing_input_example_fails_the_load(models, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.skops").write_bytes((models["sklearn"] / "model.skops").read_bytes())
    (folder / "model.json").write_text(json.dumps({"input_example": [[1.0, 2.0]]}))
    with pytest.raises(ServeError, match="input_example"):
        load_model(folder, "sklearn").warm_up()


@pytest.mark.parametrize(("flavor", "files", "message"), [
    ("sklearn", {}, "no model.skops"),
    ("onnx", {}, "no model.onnx"),
    ("python", {}, "score.py"),
    ("python", {"score.py": "raise SystemError('bad import')\n"}, "bad import"),
    ("sklearn", {"a.skops": "", "b.skops": ""}, "several model files"),
])
def test_unusable_folders_say_why(tmp_path, flavor, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ServeError, match=message):
        load_model(tmp_path, flavor)


@pytest.mark.slow
def test_a_model_that_cannot_load_exits_1_with_the_reason(serve, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    served = serve(empty, "sklearn", wait=False)
    assert served.process.wait(60) == 1
    assert "no model.skops" in served.log.read_text()


def test_pickled_mlflow_models_need_the_same_permission_as_sklearn(tmp_path):
    """MLflow's cloudpickle format runs code when loaded, like a joblib file: refused unless allowed."""
    pytest.importorskip("mlflow")
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    folder = tmp_path / "m"
    mlflow.sklearn.save_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0]), str(folder),
                              serialization_format="cloudpickle")
    with pytest.raises(ServeError, match='"allow_pickle": true} in model.json'):
        load_model(folder, "mlflow")
    (folder / "model.json").write_text(json.dumps({"allow_pickle": True}))
    model = load_model(folder, "mlflow")
    assert model.predict_batch([[3.0]]).tolist() == pytest.approx([6.0])


@pytest.mark.slow
@pytest.mark.parametrize("flavor", ["sklearn", "onnx", "python"])
def test_invocations_take_mlflow_bodies_for_every_flavor(serve, models, flavor):
    """The same MLflow client works whatever the flavor: JSON rows and CSV give /score's answer."""
    served = serve(models[flavor], flavor)
    csv_body = "sepal_length,sepal_width,petal_length,petal_width\n" + "\n".join(",".join(map(str, r)) for r in ROWS)
    with served.client() as client:
        want = client.post("/score", json={"data": ROWS}).json()
        want = want["predictions"] if isinstance(want, dict) else want
        assert client.post("/invocations", json={"instances": ROWS}).json() == {"predictions": want}
        csv = client.post("/invocations", content=csv_body, headers={"Content-Type": "text/csv"})
        assert csv.json() == {"predictions": want}


@pytest.mark.slow
def test_a_linear_model_restarts_from_its_kept_form_with_the_same_answers(serve, models, tmp_path):
    rows = np.random.default_rng(5).normal(size=(300, 4)).tolist()
    answers = []
    for _ in range(2):  # the first start keeps the linear form, the second loads it
        served = serve(models["sklearn"], "sklearn", auth=False, derived_dir=str(tmp_path / "derived"))
        with served.client() as client:
            answers.append(client.post("/v2/models/iris/infer", json={"inputs": [
                {"name": "input-0", "shape": [300, 4], "datatype": "FP64", "data": rows}],
                "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}).json()["outputs"])
        served.stop()
    ready = [next(line for line in (tmp_path / f"server{i}" / "server.log").read_text().splitlines()
                  if "ready:" in line) for i in range(2)]
    assert answers[0] == answers[1]
    assert "(sklearn)" in ready[0] and "(sklearn, its kept linear form)" in ready[1], ready
