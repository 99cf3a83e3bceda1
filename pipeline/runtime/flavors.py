"""Model loaders, one per flavor, behind one interface (``pipeline.runtime.model.Model``).

``load_model(folder, flavor, baseline)`` reads a model folder as scikit-learn (skops, or a pickle
when allowed), ONNX, Azure ML's ``score.py`` or MLflow, and raises ``ModelLoadError`` saying why it
cannot. Every flavor takes rows (with or without column names) and named tensors; the python flavor
also takes raw text (``raw_text``), which its ``run`` receives as on Azure.

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
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput, ModelLoadError
from pipeline.runtime import linear
from pipeline.runtime.columns import baseline_columns
from pipeline.runtime.jsonio import dumps, loads
from pipeline.runtime.model import MODEL_FILE, Model
from pipeline.runtime.tensors import TensorSpec, datatype_of

MLFLOW_EXTRA = 'pip install "mlops-pipeline[mlflow]"'
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def _read_options(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_FILE
    if not path.is_file():
        return {}
    try:
        options = loads(path.read_bytes())
    except ValueError as error:
        raise ModelLoadError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(options, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return options


def _only_file(model_dir: Path, suffixes: tuple[str, ...], preferred: str) -> Path | None:
    """The model file in the folder: ``preferred`` if present, else the single file with a suffix."""
    if (model_dir / preferred).is_file():
        return model_dir / preferred
    found = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in suffixes)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelLoadError(f"{model_dir}: several model files ({names}); name the one to serve {preferred}")
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
def _check_skops_trust(path: Path, options: dict[str, Any]) -> list[str]:
    """The untrusted types of a skops file, each listed in model.json's trusted_types, or ModelLoadError."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    declared = set(options.get("trusted_types", []))
    refused = [name for name in untrusted if name not in declared]
    if refused:  # even sklearn's own Tree: crafted node indices read out of bounds (skops' advice)
        listed = ", ".join(f'"{name}"' for name in refused)
        raise ModelLoadError(f"{path.name} holds types skops does not trust by default: {', '.join(refused)}; "
                         f"after reviewing where the file comes from, list them in {MODEL_FILE} next to it: "
                         f'{{"trusted_types": [{listed}]}}')
    return list(untrusted)


def _require_pickle_permission(path: Path, options: dict[str, Any], what: str) -> None:
    """ModelLoadError unless model.json says ``"allow_pickle": true``: loading a pickle runs its code."""
    if options.get("allow_pickle") is not True:
        raise ModelLoadError(f"{what}, which runs code when loaded; save the model without pickle (skops), "
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
            raise ModelLoadError(f"{self.model_dir}: no model.skops (or other *.skops) file to serve")
        _require_pickle_permission(path, self.options, f"{path.name} is a pickle")
        import joblib  # scikit-learn's dependency

        return joblib.load(path)

    def _load_skops(self, path: Path) -> Any:
        import skops.io as sio

        untrusted = _check_skops_trust(path, self.options)
        try:
            return sio.load(path, trusted=untrusted)
        except Exception as error:
            raise ModelLoadError(f"cannot load {path.name}: {type(error).__name__}: {error}") from error

    def class_labels(self) -> list[str] | None:
        classes = getattr(self.estimator, "classes_", None)
        return [str(c) for c in classes] if classes is not None else None

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
            raise ModelLoadError('the onnx flavor needs onnxruntime: pip install "mlops-pipeline[onnx]"') from None
        path = _only_file(model_dir, (".onnx",), "model.onnx")
        if path is None:
            raise ModelLoadError(f"{model_dir}: no model.onnx (or other *.onnx) file to serve")
        settings = ort.SessionOptions()
        settings.intra_op_num_threads = 1
        settings.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelLoadError(f"cannot load {path.name}: {error}") from error
        self.inputs = [TensorSpec(i.name, _ONNX_TYPES.get(i.type, "BYTES"), _onnx_shape(i.shape))
                       for i in self.session.get_inputs()]
        # Non-tensor outputs (e.g. skl2onnx's ZipMap sequence of maps) cannot be OIP tensors.
        self.outputs = [TensorSpec(o.name, _ONNX_TYPES[o.type], _onnx_shape(o.shape))
                        for o in self.session.get_outputs() if o.type in _ONNX_TYPES]
        if not self.outputs:
            raise ModelLoadError(f"{path.name} has no tensor outputs")
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
    raw_text = True

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        super().__init__(model_dir, options)
        script = model_dir / "score.py"
        if not script.is_file():
            raise ModelLoadError(f"{model_dir}: the python flavor needs a score.py with init() and run(data)")
        os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
        sys.path.insert(0, str(model_dir))  # so score.py can import its neighbours
        try:
            spec = importlib.util.spec_from_file_location("mlops_score", script)
            if spec is None or spec.loader is None:
                raise ModelLoadError(f"cannot load {script} as a Python module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            run: Callable[[str], Any] = module.run
            if hasattr(module, "init"):
                module.init()
        except Exception as error:
            raise ModelLoadError(f"score.py failed to load: {type(error).__name__}: {error}") from error
        self.run = run
        self.inputs = [TensorSpec("input-0", "FP64", (-1, -1))]
        self.outputs = [TensorSpec("output-0", "FP64", (-1,))]
        self._apply_declared_metadata()

    def score(self, payload: str) -> Any:
        """What ``run`` returns for the text it is given (a raw request body, or ``{"data": rows}``)."""
        return self.run(payload)

    def prepare_rows(self, rows: Any, columns: list[str] | None = None, positional: bool = False,
                     nulls: bool = True) -> tuple[Any, Any, int]:
        """score.py receives ``{"data": rows}`` (and ``"columns"`` when named) as text, as on /score."""
        document = {"data": rows} if columns is None else {"columns": columns, "data": rows}
        return dumps(document).decode(), document, len(rows) if isinstance(rows, list | np.ndarray) else 1

    def synthetic_example(self) -> Any:
        return None  # user code: only a declared example is safe to call

    def prepare_tensors(self, tensors: dict[str, np.ndarray], outputs: list[str] | None = None
                        ) -> tuple[dict[str, np.ndarray], int]:
        if len(tensors) != 1:
            raise InvalidInput("the python flavor takes exactly one input tensor")
        array = next(iter(tensors.values()))
        return {"input-0": array}, (array.shape[0] if array.ndim else 1)

    def infer(self, arrays: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
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
            raise ModelLoadError(f"{model_dir}: the mlflow flavor needs a folder saved by MLflow "
                                 f"(with an MLmodel file)")
        try:
            import mlflow.pyfunc
        except ImportError:
            raise ModelLoadError(f"the mlflow flavor needs MLflow installed: {MLFLOW_EXTRA}") from None
        self._check_trust()
        try:
            self.pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        except Exception as error:
            raise ModelLoadError(f"MLflow could not load {model_dir}: {type(error).__name__}: {error}") from error
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
            raise ModelLoadError(f"{mlmodel}: not a readable MLmodel file: {error}") from None
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

    @property
    def stacks_rows(self) -> bool:
        """Only a DataFrame input (named columns): pyfunc's contract is then a prediction per row;
        a tensor input may be one sample of any shape."""
        return self.columns is not None and super().stacks_rows

    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x: Any = arrays[self.inputs[0].name]
        if self.columns is not None:
            import pandas as pd  # an MLflow dependency

            x = pd.DataFrame(x, columns=self.columns).astype(self._column_types)
        result = self.pyfunc.predict(x)
        if hasattr(result, "to_numpy"):
            result = result.to_numpy()
        return {outputs[0]: np.asarray(result)}


FLAVOR_CLASSES: dict[str, type[Model]] = {
    "sklearn": SklearnModel, "onnx": OnnxModel, "python": PythonModel, "mlflow": MlflowModel}


def load_model(model_dir: Path, flavor: str, baseline: Path | None = None, derived_dir: Path | None = None) -> Model:
    """Load the model in ``model_dir`` as ``flavor``; ModelLoadError with the reason when it cannot be.

    A model that does not name its features takes them from ``baseline``'s header, when its width fits.
    ``derived_dir``: the registry's folder for what derives from this verified version, where a linear
    scikit-learn model's NumPy form is kept (``pipeline.runtime.linear``: read instead of importing
    scikit-learn, written after loading through it); only for a verified folder, since what is kept
    there is trusted as its content.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist")
    if flavor not in FLAVOR_CLASSES:
        raise ModelLoadError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVOR_CLASSES)}")
    options = _read_options(model_dir)
    compiled = linear.cache_file(derived_dir) if derived_dir is not None and flavor == "sklearn" else None
    kept = linear.load(compiled, model_dir, options) if compiled is not None else None
    model = kept or FLAVOR_CLASSES[flavor](model_dir, options)
    if compiled is not None and kept is None and isinstance(model, SklearnModel):
        form = linear.from_estimator(model, model.estimator)
        if form is not None:
            linear.save(form, compiled)
    if baseline is not None and model.columns is None and flavor != "python":
        columns = baseline_columns(baseline)
        width = model.row_width
        if width not in (-1, len(columns)):
            raise ModelLoadError(f"baseline {baseline} has {len(columns)} columns but the model takes {width} features")
        model.columns = columns
    return model
