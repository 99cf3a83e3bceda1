"""Model loaders, one per flavor, behind one small interface.

Every flavor answers every route: ``/score`` (Azure ML's ``{"data": rows}`` or
``{"input_data": {"columns": [...], "data": rows}}``), MLflow's ``/invocations`` (see
``invocations.py``) and OIP v2 ``infer`` (named tensors). A request is first *parsed* on the event
loop (400 on a bad shape or type, with what was expected; null/NaN/inf too unless the model takes
them), then *run* — possibly in a worker thread — so that parsing errors never reach the model and
the model's own failures are 500s. Named columns are matched to the model's feature names
(scikit-learn's ``feature_names_in_``, the MLflow signature, or model.json's ``columns``) and
reordered; unknown or missing ones are a 400 naming them.

An optional ``model.json`` in the model folder holds what the files cannot say::

    {"allow_pickle": false,            # sklearn: also load *.joblib / *.pkl; mlflow: any format but
                                       # skops or ONNX (pickles, custom code: code execution!)
     "allow_nan": false,               # null/NaN/inf reach the model (sklearn: its tags decide by default)
     "columns": ["f0", "f1"],          # feature names, when the model files do not carry them
     "trusted_types": ["sklearn.tree._tree.Tree"],  # sklearn: types skops does not trust by default
     "inputs":  [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],  # metadata when not inferable
     "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
     "input_example": [[5.1, 3.5, 1.4, 0.2]]}   # rows: a warm-up request before ready

It is part of the model's content, so it is reviewed with it in git and covered by the
registry's digest: the trust it grants is as good as the review of the model itself. Nothing is
trusted implicitly beyond skops' defaults — not even scikit-learn's own ``Tree`` (used by every
tree ensemble), whose unchecked node indices let a crafted file read out of bounds; the error
message names the exact line to add.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ServeError
from pipeline.server.http import HTTPError, InvalidInput, dumps, loads, parse_json
from pipeline.server.tensors import DTYPES, InferRequest, TensorSpec, datatype_of

log = logging.getLogger("mlops.server")

MODEL_FILE = "model.json"
MLFLOW_EXTRA = 'pip install "mlops-pipeline[mlflow]"'
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
WARM_UP_RUNS = 5


def _read_options(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_FILE
    if not path.is_file():
        return {}
    try:
        options = loads(path.read_bytes())
    except ValueError as error:
        raise ServeError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(options, dict):
        raise ServeError(f"{path}: expected a JSON object")
    return options


def _only_file(model_dir: Path, suffixes: tuple[str, ...], preferred: str) -> Path | None:
    """The model file in the folder: ``preferred`` if present, else the single file with a suffix."""
    if (model_dir / preferred).is_file():
        return model_dir / preferred
    found = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in suffixes)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ServeError(f"{model_dir}: several model files ({names}); name the one to serve {preferred}")
    return found[0] if found else None


def _bad(message: str) -> HTTPError:
    return InvalidInput(message)


def _refuse_missing_values(name: str, array: np.ndarray) -> None:
    """InvalidInput naming the first null, NaN or infinite value of a float array (one C pass when clean)."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return
    where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
    raise _bad(f"{name}: null, NaN or infinite value at index {list(where)}; this model cannot take missing "
               f"or infinite values")


def _rows_of(document: Any) -> tuple[Any, list[str] | None]:
    """The rows and optional column names of an Azure-style /score body."""
    if isinstance(document, dict):
        if "data" in document:
            return document["data"], None
        input_data = document.get("input_data")
        if isinstance(input_data, dict) and "data" in input_data:
            columns = input_data.get("columns")
            if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
                raise _bad("'input_data.columns' must be a list of column names")
            return input_data["data"], columns
        if isinstance(input_data, list):
            return input_data, None
    raise _bad('expected {"data": [[...], ...]} or {"input_data": {"columns": [...], "data": [[...], ...]}}')


class Model:
    """A loaded model: metadata for the v2 routes plus parse/run for both scoring routes."""

    flavor = ""
    platform = ""

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        self.model_dir = model_dir
        self.options = options
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.columns: list[str] | None = None  # feature names, in the order the model wants them
        self.example: Any = options.get("input_example")  # rows for a warm-up /score call
        self.example_given = self.example is not None
        # Whether null/NaN/inf may reach the model: model.json's "allow_nan", else the flavor's
        # knowledge (scikit-learn's estimator tags), else no — a 400 beats a model's 500 or garbage.
        self.allow_nan = options.get("allow_nan") is True

    def _apply_declared_metadata(self) -> None:
        declared = self.options.get("columns")
        if declared is not None:
            if not (isinstance(declared, list) and all(isinstance(c, str) for c in declared)):
                raise ServeError(f"{self.model_dir / MODEL_FILE}: 'columns' must be a list of feature names")
            self.columns = declared
        try:
            if "inputs" in self.options:
                self.inputs = [TensorSpec.from_json(t) for t in self.options["inputs"]]
            if "outputs" in self.options:
                self.outputs = [TensorSpec.from_json(t) for t in self.options["outputs"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ServeError(f"{self.model_dir / MODEL_FILE}: bad inputs/outputs: {error}") from None

    # -- /score -----------------------------------------------------------------------------
    def parse_score(self, body: bytes) -> tuple[Any, Any, int]:
        """(payload for run_score, the inputs to record, number of rows)."""
        rows, columns = _rows_of(parse_json(body))
        return self.parse_rows(rows, columns, nulls=b"null" in body)

    def parse_rows(self, rows: Any, columns: list[str] | None, positional: bool = False,
                   nulls: bool = True) -> tuple[Any, Any, int]:
        """Rows (named columns matched to the model's, any order) → what ``parse_score`` returns.

        ``positional``: a model without feature names takes named columns in the order sent (what
        MLflow's server does for /invocations: a CSV always has a header); else that is a 400.
        ``nulls`` False: the rows come from JSON without ``null``, so they are all finite numbers.
        The inputs to record keep the column names when the model has them (``{"columns", "data"}``
        in the model's order, which ``mlops monitor`` reads like an Azure ``input_data``).
        """
        if positional and self.columns is None:
            columns = None
        matrix = self._matrix(rows, columns, nulls)
        inputs = rows if self.columns is None else {"columns": self.columns,
                                                    "data": rows if columns is None else matrix}
        return {self._single_input().name: matrix}, inputs, matrix.shape[0]

    def run_score(self, payload: dict[str, np.ndarray]) -> Any:
        """The predictions (the service wraps them as ``{"predictions": ...}``)."""
        first = self.outputs[0].name
        return self.predict(payload, [first])[first]

    # -- OIP v2 infer -----------------------------------------------------------------------
    def parse_infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """Input arrays by the model's input names, cast to their dtypes; 400 when they do not fit."""
        known = {spec.name: spec for spec in self.inputs}
        if len(self.inputs) == 1 and len(request.inputs) == 1:
            arrays = {self.inputs[0].name: next(iter(request.inputs.values()))}
        else:
            missing = sorted(set(known) - set(request.inputs))
            extra = sorted(set(request.inputs) - set(known))
            if missing or extra:
                raise _bad(f"expected inputs {sorted(known)}; missing {missing}, unknown {extra}")
            arrays = dict(request.inputs)
        for name, array in arrays.items():
            spec = known[name]
            self._check_shape(name, array.shape, spec.shape)
            if array.size == 0:
                raise _bad(f"input {name!r} holds no values")
            if spec.datatype != "BYTES" and array.dtype.kind in "OSU":
                raise _bad(f"input {name!r}: expected {spec.datatype} numbers, got BYTES")
            if spec.datatype != "BYTES":
                arrays[name] = array.astype(DTYPES[spec.datatype], copy=False)
                if not self.allow_nan:
                    _refuse_missing_values(f"input {name!r}", array)
        if request.outputs is not None:
            names = {spec.name for spec in self.outputs}
            unknown = [n for n in request.outputs if n not in names]
            if unknown:
                raise _bad(f"unknown output(s) {unknown}; this model has {sorted(names)}")
        rows = max((a.shape[0] if a.ndim else 1) for a in arrays.values())
        return arrays, rows

    def run_infer(self, arrays: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        return self.predict(arrays, outputs or self.default_outputs())

    def default_outputs(self) -> list[str]:
        return [self.outputs[0].name]

    # -- what flavors provide ---------------------------------------------------------------
    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- shared helpers ---------------------------------------------------------------------
    def _single_input(self) -> TensorSpec:
        if len(self.inputs) != 1:
            raise _bad(f"this model takes {len(self.inputs)} named inputs; use POST /v2/models/<name>/infer")
        return self.inputs[0]

    @staticmethod
    def _check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
        if len(shape) != len(expected) or any(e >= 0 and s != e for s, e in zip(shape, expected, strict=False)):
            raise _bad(f"input {name!r}: expected shape {list(expected)} (-1: any), got {list(shape)}")

    def _matrix(self, rows: Any, columns: list[str] | None, nulls: bool = True) -> np.ndarray:
        spec = self._single_input()
        dtype = DTYPES[spec.datatype]
        width = spec.shape[-1] if len(spec.shape) == 2 else -1
        expected = f"a list of rows of {width} numbers" if width >= 0 else "a list of rows"
        if not isinstance(rows, list) or not rows:
            raise _bad(f"expected {expected} in 'data'")
        if columns is not None and (not rows or not isinstance(rows[0], list) or len(columns) != len(rows[0])):
            raise _bad(f"{len(columns)} columns named but the rows do not have {len(columns)} values each")
        try:
            matrix = np.asarray(rows, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise _bad(f"expected {expected} ({spec.datatype}); rows have different lengths or non-numbers") from None
        if columns is not None and matrix.ndim == 2:
            matrix = self._reorder(matrix, columns)
        if matrix.ndim != 2 or (width >= 0 and matrix.shape[1] != width):
            raise _bad(f"expected {expected}, got an array of shape {list(matrix.shape)}")
        if nulls and not self.allow_nan:
            _refuse_missing_values("'data'", matrix)
        return matrix

    def _reorder(self, matrix: np.ndarray, columns: list[str]) -> np.ndarray:
        """The columns in the model's order; 400 naming unknown, missing or repeated ones."""
        if self.columns is None:
            raise _bad("this model does not know its feature names, so named columns cannot be matched; send "
                       "the rows in training order without 'columns' (or declare \"columns\" in model.json)")
        if columns == self.columns:
            return matrix
        unknown = [c for c in columns if c not in self.columns]
        missing = [c for c in self.columns if c not in columns]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if unknown or missing or repeated:
            problems = [f"{label} {names}" for label, names in
                        (("unknown", unknown), ("missing", missing), ("repeated", repeated)) if names]
            raise _bad(f"columns do not match the model's {self.columns}: {'; '.join(problems)}")
        return matrix[:, [columns.index(name) for name in self.columns]]

    def synthetic_example(self) -> Any:
        """One row of zeros when the input width is known (a harmless warm-up), else None."""
        if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2 and self.inputs[0].shape[1] > 0 \
                and self.inputs[0].datatype != "BYTES":
            return [[0] * self.inputs[0].shape[1]]
        return None

    def warm_up(self) -> float | None:
        """Score the input example a few times; the median seconds per call, or None without one.

        A declared example that fails is fatal (the deployment would fail its first caller); a
        synthesized one that fails is only logged, since zeros may be outside the model's domain.
        """
        rows = self.example if self.example_given else self.synthetic_example()
        if rows is None:
            return None
        try:
            payload, _, _ = self.parse_score(dumps({"data": rows}))
            times = []
            for _ in range(WARM_UP_RUNS):
                start = time.perf_counter()
                self.run_score(payload)
                times.append(time.perf_counter() - start)
            return statistics.median(times)
        except Exception as error:
            if self.example_given:
                message = error.message if isinstance(error, HTTPError) else f"{type(error).__name__}: {error}"
                raise ServeError(f"the model failed on its input_example: {message}") from error
            log.info("warm-up on a synthesized example failed (%s: %s); skipped", type(error).__name__, error)
            return None

    def describe_input_schema(self) -> dict[str, Any] | None:
        """JSON Schema of one /score row, when the input width is known (for /openapi.json)."""
        example = self.synthetic_example()
        if example is None:
            return None
        item = {"type": "number"} if self.inputs[0].datatype.startswith("FP") else {"type": "integer"}
        width = len(example[0])
        row: dict[str, Any] = {"type": "array", "items": item, "minItems": width, "maxItems": width}
        if self.columns:
            row["description"] = "values of the columns " + ", ".join(self.columns)
        return row


# ---------------------------------------------------------------------------------------------
def _check_skops_trust(path: Path, options: dict[str, Any]) -> list[str]:
    """The untrusted types of a skops file, each listed in model.json's trusted_types, or ServeError."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    declared = set(options.get("trusted_types", []))
    refused = [name for name in untrusted if name not in declared]
    if refused:  # even sklearn's own Tree: crafted node indices read out of bounds (skops' advice)
        listed = ", ".join(f'"{name}"' for name in refused)
        raise ServeError(f"{path.name} holds types skops does not trust by default: {', '.join(refused)}; "
                         f"after reviewing where the file comes from, list them in {MODEL_FILE} next to it: "
                         f'{{"trusted_types": [{listed}]}}')
    return list(untrusted)


def _require_pickle_permission(path: Path, options: dict[str, Any], what: str) -> None:
    """ServeError unless model.json says ``"allow_pickle": true``: loading a pickle runs its code."""
    if options.get("allow_pickle") is not True:
        raise ServeError(f"{what}, which runs code when loaded; save the model without pickle (skops), "
                         f'or put {{"allow_pickle": true}} in {MODEL_FILE} next to {path.name} to accept that')


def _sklearn_allows_nan(estimator: Any) -> bool:
    """scikit-learn's own answer (estimator tags: HistGradientBoosting yes, LogisticRegression no)."""
    try:
        from sklearn.utils import get_tags  # scikit-learn >= 1.6

        return bool(get_tags(estimator).input_tags.allow_nan)
    except ImportError:
        return bool(estimator._get_tags().get("allow_nan", False))
    except Exception:  # a third-party estimator with broken tags: the safe side
        return False


class SklearnModel(Model):
    """scikit-learn, from skops (no pickle) — or joblib/pickle when model.json allows it."""

    flavor = "sklearn"
    platform = "sklearn_sklearn"

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        super().__init__(model_dir, options)
        self.estimator = self._load()
        estimator = self.estimator
        width = int(getattr(estimator, "n_features_in_", -1))
        names = getattr(estimator, "feature_names_in_", None)
        self.columns = [str(n) for n in names] if names is not None else None
        self.inputs = [TensorSpec("input-0", "FP64", (-1, width))]
        classes = getattr(estimator, "classes_", None)
        label = datatype_of(classes.dtype) if classes is not None else "FP64"
        self.outputs = [TensorSpec("predict", label, (-1,))]
        if hasattr(estimator, "predict_proba"):
            n_classes = len(classes) if classes is not None else -1
            self.outputs.append(TensorSpec("predict_proba", "FP64", (-1, n_classes)))
        if "allow_nan" not in options:
            self.allow_nan = _sklearn_allows_nan(estimator)
        self._apply_declared_metadata()
        # The model was fitted on a DataFrame but rows arrive as arrays, already in column order.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def _load(self) -> Any:
        path = _only_file(self.model_dir, (".skops",), "model.skops")
        if path is not None:
            return self._load_skops(path)
        path = _only_file(self.model_dir, PICKLE_SUFFIXES, "model.joblib")
        if path is None:
            raise ServeError(f"{self.model_dir}: no model.skops (or other *.skops) file to serve")
        _require_pickle_permission(path, self.options, f"{path.name} is a pickle")
        import joblib  # scikit-learn's dependency

        return joblib.load(path)

    def _load_skops(self, path: Path) -> Any:
        import skops.io as sio

        untrusted = _check_skops_trust(path, self.options)
        try:
            return sio.load(path, trusted=untrusted)
        except Exception as error:
            raise ServeError(f"cannot load {path.name}: {type(error).__name__}: {error}") from error

    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x = arrays[self.inputs[0].name]
        return {name: getattr(self.estimator, name)(x) for name in outputs}


# ---------------------------------------------------------------------------------------------
_ONNX_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
               "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
               "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
               "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
               "tensor(string)": "BYTES"}


def _onnx_shape(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


class OnnxModel(Model):
    """ONNX Runtime on the CPU with one intra-op thread: lowest latency for small requests."""

    flavor = "onnx"
    platform = "onnxruntime_onnx"

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        super().__init__(model_dir, options)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ServeError('the onnx flavor needs onnxruntime: pip install "mlops-pipeline[onnx]"') from None
        path = _only_file(model_dir, (".onnx",), "model.onnx")
        if path is None:
            raise ServeError(f"{model_dir}: no model.onnx (or other *.onnx) file to serve")
        settings = ort.SessionOptions()
        settings.intra_op_num_threads = 1
        settings.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ServeError(f"cannot load {path.name}: {error}") from error
        self.inputs = [TensorSpec(i.name, _ONNX_TYPES.get(i.type, "BYTES"), _onnx_shape(i.shape))
                       for i in self.session.get_inputs()]
        # Non-tensor outputs (e.g. skl2onnx's ZipMap sequence of maps) cannot be OIP tensors.
        self.outputs = [TensorSpec(o.name, _ONNX_TYPES[o.type], _onnx_shape(o.shape))
                        for o in self.session.get_outputs() if o.type in _ONNX_TYPES]
        if not self.outputs:
            raise ServeError(f"{path.name} has no tensor outputs")
        self._apply_declared_metadata()

    def default_outputs(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self.session.run(outputs, arrays), strict=True))


# ---------------------------------------------------------------------------------------------
class PythonModel(Model):
    """Azure ML's entry-script convention: ``score.py`` with ``init()`` and ``run(raw_data)``.

    ``AZUREML_MODEL_DIR`` points at the model folder before ``init()``; ``run`` receives the raw
    request body as text (as on Azure) and its JSON-serializable return value is the response body,
    unwrapped. On the v2 infer route the single input tensor is passed as ``{"data": [...]}`` text
    and the result is returned as the output tensor (``predictions`` taken out of a dict result).
    """

    flavor = "python"
    platform = "python_azureml"

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        super().__init__(model_dir, options)
        script = model_dir / "score.py"
        if not script.is_file():
            raise ServeError(f"{model_dir}: the python flavor needs a score.py with init() and run(data)")
        os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
        sys.path.insert(0, str(model_dir))  # so score.py can import its neighbours
        try:
            spec = importlib.util.spec_from_file_location("mlops_score", script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            run: Callable[[str], Any] = module.run
            if hasattr(module, "init"):
                module.init()
        except Exception as error:
            raise ServeError(f"score.py failed to load: {type(error).__name__}: {error}") from error
        self.run = run
        self.inputs = [TensorSpec("input-0", "FP64", (-1, -1))]
        self.outputs = [TensorSpec("output-0", "FP64", (-1,))]
        self._apply_declared_metadata()

    def parse_score(self, body: bytes) -> tuple[Any, Any, int]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("request body is not UTF-8 text") from None
        return text, body, 1

    def run_score(self, payload: str) -> Any:
        return self.run(payload)

    def parse_rows(self, rows: Any, columns: list[str] | None, positional: bool = False,
                   nulls: bool = True) -> tuple[Any, Any, int]:
        """/invocations: score.py receives ``{"data": rows}`` (and ``"columns"`` when named), as on /score."""
        document = {"data": rows} if columns is None else {"columns": columns, "data": rows}
        return dumps(document).decode(), document, len(rows) if isinstance(rows, list) else 1

    def synthetic_example(self) -> Any:
        return None  # user code: only a declared example is safe to call

    def parse_infer(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        if len(request.inputs) != 1:
            raise _bad("the python flavor takes exactly one input tensor")
        array = next(iter(request.inputs.values()))
        return {"input-0": array}, (array.shape[0] if array.ndim else 1)

    def run_infer(self, arrays: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        result = self.run(dumps({"data": arrays["input-0"]}).decode())
        if isinstance(result, str):
            result = loads(result)
        if isinstance(result, dict) and "predictions" in result:
            result = result["predictions"]
        return {self.outputs[0].name: np.asarray(result)}


# ---------------------------------------------------------------------------------------------
class MlflowModel(Model):
    """A folder with an ``MLmodel`` file, loaded with ``mlflow.pyfunc`` (the optional extra)."""

    flavor = "mlflow"
    platform = "mlflow_pyfunc"

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        super().__init__(model_dir, options)
        if not (model_dir / "MLmodel").is_file():
            raise ServeError(f"{model_dir}: the mlflow flavor needs a folder saved by MLflow (with an MLmodel file)")
        try:
            import mlflow.pyfunc
        except ImportError:
            raise ServeError(f"the mlflow flavor needs MLflow installed: {MLFLOW_EXTRA}") from None
        self._check_trust()
        try:
            self.pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        except Exception as error:
            raise ServeError(f"MLflow could not load {model_dir}: {type(error).__name__}: {error}") from error
        self.inputs = [TensorSpec("input-0", "FP64", (-1, -1))]
        self.outputs = [TensorSpec("predictions", "FP64", (-1,))]
        self._column_types: dict[str, Any] = {}
        self._read_signature()
        self._apply_declared_metadata()

    def _check_trust(self) -> None:
        """The sklearn flavor's rules, before MLflow unpickles anything.

        Only two MLflow formats load without running code from the folder: scikit-learn saved with
        skops (MLflow 3's default; its untrusted types must be listed in model.json, as for the
        sklearn flavor) and ONNX. Everything else — pickle/cloudpickle models, custom pyfunc
        classes, bundled ``code`` — needs ``"allow_pickle": true``.
        """
        import yaml  # a dependency of mlops and of MLflow

        mlmodel = self.model_dir / "MLmodel"
        try:
            flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
        except (OSError, yaml.YAMLError, AttributeError) as error:
            raise ServeError(f"{mlmodel}: not a readable MLmodel file: {error}") from None
        loader = (flavors.get("python_function") or {}).get("loader_module")
        sklearn = flavors.get("sklearn") or {}
        if loader == "mlflow.sklearn" and sklearn.get("serialization_format") == "skops" \
                and not sklearn.get("code") and not flavors["python_function"].get("code"):
            _check_skops_trust(self.model_dir / str(sklearn.get("pickled_model", "model.skops")), self.options)
        elif loader != "mlflow.onnx":
            fmt = sklearn.get("serialization_format")
            _require_pickle_permission(mlmodel, self.options,
                                       f"{mlmodel.name} says this model loads with {loader or 'an unknown loader'}"
                                       + (f" from a {fmt} file" if fmt else " (pickles or its own code)"))

    def _read_signature(self) -> None:
        metadata = self.pyfunc.metadata
        schema = metadata.get_input_schema()
        if schema is not None:
            if schema.is_tensor_spec():
                spec = schema.inputs[0]
                shape = _onnx_shape(list(spec.shape))
                self.inputs = [TensorSpec(spec.name or "input-0", datatype_of(spec.type), shape)]
            elif schema.has_input_names():
                self.columns = schema.input_names()
                self._column_types = dict(zip(self.columns, schema.numpy_types(), strict=True))
                kinds = {np.dtype(t).kind for t in self._column_types.values()}
                datatype = "FP64" if kinds <= set("fiub") else "BYTES"
                self.inputs = [TensorSpec("input-0", datatype, (-1, len(self.columns)))]
        outputs = metadata.get_output_schema()
        if outputs is not None and outputs.inputs:  # the declared type, not FP64 (int64 labels stay INT64)
            first = outputs.inputs[0]
            if outputs.is_tensor_spec():
                self.outputs = [TensorSpec("predictions", datatype_of(first.type), _onnx_shape(list(first.shape)))]
            else:
                self.outputs = [TensorSpec("predictions", datatype_of(outputs.numpy_types()[0]),
                                           (-1,) if len(outputs.inputs) == 1 else (-1, len(outputs.inputs)))]
        if self.example is None:
            try:
                example = metadata.load_input_example(str(self.model_dir))
            except Exception:  # an old or odd example format: warm up without it
                example = None
            if example is not None:
                self.example = np.asarray(example).tolist()
                self.example_given = True

    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x: Any = arrays[self.inputs[0].name]
        if self.columns is not None:
            import pandas as pd  # an MLflow dependency

            x = pd.DataFrame(x, columns=self.columns).astype(self._column_types)
        result = self.pyfunc.predict(x)
        if hasattr(result, "to_numpy"):
            result = result.to_numpy()
        return {outputs[0]: np.asarray(result)}


def baseline_columns(path: Path) -> list[str]:
    """The header row of a baseline CSV (the columns ``mlops monitor`` compares): the feature names."""
    import csv

    try:
        with open(path, newline="") as handle:
            return next(csv.reader(handle))
    except (OSError, StopIteration, csv.Error, UnicodeDecodeError) as error:
        raise ServeError(f"cannot read the column names of baseline {path}: {error or 'empty file'}") from None


FLAVOR_CLASSES: dict[str, type[Model]] = {
    "sklearn": SklearnModel, "onnx": OnnxModel, "python": PythonModel, "mlflow": MlflowModel}


def load_model(model_dir: Path, flavor: str, baseline: Path | None = None) -> Model:
    """Load the model in ``model_dir`` as ``flavor``; ServeError with the reason when it cannot be.

    A model that does not name its features takes them from ``baseline``'s header, when its width fits.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ServeError(f"model folder {model_dir} does not exist")
    if flavor not in FLAVOR_CLASSES:
        raise ServeError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVOR_CLASSES)}")
    model = FLAVOR_CLASSES[flavor](model_dir, _read_options(model_dir))
    if baseline is not None and model.columns is None and flavor != "python":
        columns = baseline_columns(baseline)
        width = model.inputs[0].shape[-1] if len(model.inputs) == 1 and len(model.inputs[0].shape) == 2 else -1
        if width not in (-1, len(columns)):
            raise ServeError(f"baseline {baseline} has {len(columns)} columns but the model takes {width} features")
        model.columns = columns
    return model
