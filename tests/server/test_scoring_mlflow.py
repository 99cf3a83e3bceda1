"""MLflow compatibility of a real deployed mlflow-flavor service: ``POST /invocations`` takes the bodies
of MLflow's documentation and of ``mlflow.models.convert_input_example_to_serving_input`` and answers
what ``mlflow.pyfunc.load_model(...).predict`` answers; OIP metadata follows the model's signature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import FEATURE_NAMES, Served, start_server, training_data

from pipeline.monitor import read_events

mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.slow

ROWS = [[0.5, -1.0, 2.0, 0.1], [-2.0, -1.0, 0.0, 3.0], [1.5, 0.2, -0.3, 0.0]]


@pytest.fixture(scope="module")
def column_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model saved from a DataFrame: MLflow's signature names the columns and says int64 out."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    frame = pd.DataFrame(x, columns=FEATURE_NAMES)
    folder = tmp_path_factory.mktemp("mlflow-columns") / "model"
    mlflow.sklearn.save_model(LogisticRegression().fit(frame, y), str(folder), input_example=frame[:2])
    return folder


@pytest.fixture(scope="module")
def column_server(column_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(tmp_path_factory.mktemp("mlflow-server"), column_model, "mlflow")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def expected(column_model: Path) -> list:
    """What MLflow itself predicts for ROWS."""
    frame = pd.DataFrame(ROWS, columns=FEATURE_NAMES)
    return np.asarray(mlflow.pyfunc.load_model(str(column_model)).predict(frame)).tolist()


def _documented_bodies() -> dict[str, dict]:
    """The four JSON formats as MLflow's serving documentation writes them."""
    records = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in ROWS]
    return {
        "dataframe_split": {"dataframe_split": {"columns": FEATURE_NAMES, "data": ROWS}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {name: [row[i] for row in ROWS] for i, name in enumerate(FEATURE_NAMES)}},
    }


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_documented_json_formats_answer_like_mlflow(column_server, expected, form):
    with column_server.client() as client:
        response = client.post("/invocations", json=_documented_bodies()[form])
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


def test_csv_answers_like_mlflow(column_server, expected):
    body = pd.DataFrame(ROWS, columns=FEATURE_NAMES).to_csv(index=False)
    with column_server.client() as client:
        response = client.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.json() == {"predictions": expected}


def test_mlflow_helper_bodies_answer_like_mlflow(column_server, expected):
    from mlflow.models import convert_input_example_to_serving_input

    frame = pd.DataFrame(ROWS, columns=FEATURE_NAMES)
    body = convert_input_example_to_serving_input(frame[FEATURE_NAMES[::-1]])  # column order is the caller's
    with column_server.client() as client:
        response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
    assert response.json() == {"predictions": expected}


def test_tensor_model_takes_instances_inputs_and_csv(serve, models):
    """A model whose signature is a tensor (saved from an ndarray): rows by position, as MLflow does."""
    from mlflow.models import convert_input_example_to_serving_input

    want = np.asarray(mlflow.pyfunc.load_model(str(models["mlflow"])).predict(np.array(ROWS))).tolist()
    served = serve(models["mlflow"], "mlflow")
    bodies = [json.dumps({"instances": ROWS}), json.dumps({"inputs": ROWS}),
              convert_input_example_to_serving_input(np.array(ROWS))]
    with served.client() as client:
        for body in bodies:
            response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
            assert response.json() == {"predictions": want}, body
        csv = client.post("/invocations", content=pd.DataFrame(ROWS).to_csv(index=False),
                          headers={"Content-Type": "text/csv"})
        assert csv.json() == {"predictions": want}


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"a,b\n1,2", "text/plain", 415, "not supported"),
    (b'{"data": [[1, 2, 3, 4]]}', "application/json", 400, "exactly one of the fields"),
    (b'{"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]]}}', "application/json", 400,
     "unknown ['a', 'b', 'c', 'd']"),
    (b'{"dataframe_records": [{"sepal_length": 1}]}', "application/json", 400, "missing ['sepal_width'"),
    (b"sepal_length,sepal_width,petal_length,petal_width\n1,,3,4\n", "text/csv", 400, "null, NaN or infinite"),
])
def test_bad_invocations_say_what_is_wrong(column_server, body, content_type, status, message):
    with column_server.client() as client:
        response = client.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status and message in response.json()["error"]


def test_invocations_need_the_key_and_are_collected_with_column_names(serve, column_model):
    served = serve(column_model, "mlflow",
                   data_collector={"enabled": True, "sampling_rate": 1.0, "rolling_rate": "minute"})
    with served.client() as client:
        anonymous = client.post("/invocations", json=_documented_bodies()["inputs"], headers={"Authorization": ""})
        assert anonymous.status_code == 401
        marker = {"dataframe_split": {"columns": FEATURE_NAMES, "data": [[9.0, 9.0, 9.0, 9.0]]}}
        assert client.post("/invocations", json=marker).status_code == 200
    served.stop()  # SIGTERM writes every collected event
    events = [e for e in read_events(served.folder / "data") if e.route == "/invocations"]
    assert events[-1].inputs == {"columns": FEATURE_NAMES, "data": [[9.0, 9.0, 9.0, 9.0]]}


def test_oip_metadata_takes_output_datatypes_from_the_signature(serve, models):
    """Labels saved as int64 are declared INT64, not FP64."""
    served = serve(models["mlflow"], "mlflow")
    with served.client() as client:
        metadata = client.get("/v2/models/iris").json()
    assert metadata["outputs"][0]["datatype"] == "INT64"
