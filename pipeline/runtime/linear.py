"""Linear scikit-learn models scored with NumPy alone, so that a later load does not import scikit-learn.

Importing scikit-learn (which imports SciPy's statistics and pandas) takes most of a short
``mlops score-batch``, while a linear model's answer is one matrix product. So once a model has
been loaded through scikit-learn, ``save`` keeps its coefficients in a file in the registry's folder
for what derives from that verified version (``derived_folder``), and ``load`` reads them back the
next time. ``save`` keeps them only when the same operations scikit-learn runs
(``decision_function``, ``predict``, ``predict_proba``, replicated below call for call: the matrix
product, SciPy's ``expit``, the softmax) give bit-identical answers on probe rows; the file's name
carries the versions of scikit-learn, NumPy and SciPy it was checked with, so an upgrade checks
again. What has a linear form: LogisticRegression, LinearRegression, Ridge, Lasso and ElasticNet,
alone or as a Pipeline's last step after StandardScaler steps. Anything else — another estimator or
step, a subclass (it may override ``predict``), sparse coefficients, object labels, a model that lets
NaN through (``allow_nan`` in model.json), a mismatch — is left to scikit-learn.

The file is derived from the model's verified content (its folder is named by the content digest):
it is as trusted as that content, and is rebuilt whenever it is missing or unreadable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.runtime.jsonio import dumps, loads
from pipeline.runtime.model import Model
from pipeline.runtime.tensors import TensorSpec

log = logging.getLogger("mlops.runtime")

FORMAT = 1  # bump when what is saved, or how it is scored, changes
CLASSIFIERS = {"sklearn.linear_model._logistic.LogisticRegression"}
REGRESSORS = {"sklearn.linear_model._base.LinearRegression", "sklearn.linear_model._ridge.Ridge",
              "sklearn.linear_model._coordinate_descent.Lasso",
              "sklearn.linear_model._coordinate_descent.ElasticNet"}
PIPELINE = "sklearn.pipeline.Pipeline"
SCALER = "sklearn.preprocessing._data.StandardScaler"
PROBE_ROWS = 512


def cache_file(folder: Path) -> Path:
    """The linear form's file in ``folder`` (the registry's place for what derives from one verified
    version), named by the library versions it was checked with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        libraries = "-".join(version(name) for name in ("scikit-learn", "numpy", "scipy"))
    except PackageNotFoundError:
        libraries = "none"
    key = hashlib.sha256(f"{FORMAT}:{libraries}".encode()).hexdigest()[:16]
    return folder / f"linear-{key}.npz"


class LinearModel(Model):
    """A linear model's coefficients, answering as the scikit-learn estimator they came from did."""

    flavor = "sklearn"
    platform = "sklearn_sklearn"
    form = "its kept linear form"

    def __init__(self, model_dir: Path, options: dict[str, Any], kind: str, coef: np.ndarray,
                 intercept: np.ndarray, classes: np.ndarray | None,
                 scalers: list[tuple[np.ndarray | None, np.ndarray | None]] | None = None):
        super().__init__(model_dir, options)
        self.kind = kind  # "classifier" or "regressor"
        self.coef = coef
        self.intercept = intercept
        self.classes = classes
        self.scalers = scalers or []  # a pipeline's StandardScaler steps: (mean or None, scale or None)
        self._expit: Any = None
        if classes is not None and coef.ndim == 2 and coef.shape[0] == 1:  # binary: imported with the model
            from scipy.special import expit  # what scikit-learn calls; NumPy's exp can differ in the last bit

            self._expit = expit

    def class_labels(self) -> list[str] | None:
        return [str(c) for c in self.classes] if self.classes is not None else None

    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x = arrays[self.inputs[0].name]
        return {name: self._predict(x) if name == "predict" else self._predict_proba(x) for name in outputs}

    # scikit-learn 1.9's Pipeline / StandardScaler / LinearClassifierMixin / LinearModel / LogisticRegression,
    # operation for operation
    def _decision(self, x: np.ndarray) -> np.ndarray:
        if self.scalers:
            x = x.copy()  # StandardScaler(copy=True) scales a copy
            for mean, scale in self.scalers:
                if mean is not None:
                    x -= mean
                if scale is not None:
                    x /= scale
        if self.kind == "regressor":
            return x @ self.coef + self.intercept if self.coef.ndim == 1 else x @ self.coef.T + self.intercept
        scores = x @ self.coef.T + self.intercept
        return scores.reshape(-1) if scores.ndim > 1 and scores.shape[1] == 1 else scores

    def _predict(self, x: np.ndarray) -> np.ndarray:
        scores = self._decision(x)
        if self.classes is None:
            return scores
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes.take(indices, axis=0)

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("a regressor has no predict_proba")
        scores = self._decision(x)
        if scores.ndim == 1:  # binary: expit, as _predict_proba_lr
            self._expit(scores, out=scores)
            return np.stack([1 - scores, scores], axis=1)
        scores -= np.max(scores, axis=1).reshape(-1, 1)  # multinomial: extmath.softmax
        np.exp(scores, out=scores)
        scores /= np.sum(scores, axis=1).reshape(-1, 1)
        return scores


def _qualified(estimator: Any) -> str:
    return f"{type(estimator).__module__}.{type(estimator).__qualname__}"


def _scalers(estimator: Any) -> tuple[Any, list[tuple[np.ndarray | None, np.ndarray | None]]] | None:
    """A pipeline's final step and its StandardScaler steps (None: another step, or a scaler that scales
    in place); for a lone estimator, itself and no scaler."""
    if _qualified(estimator) != PIPELINE:
        return estimator, []
    *steps, (_, final) = estimator.steps
    scalers = []
    for _, step in steps:
        if step is None or step == "passthrough":
            continue
        if _qualified(step) != SCALER or step.copy is not True:
            return None
        scalers.append((np.asarray(step.mean_, dtype=np.float64) if step.with_mean else None,
                        np.asarray(step.scale_, dtype=np.float64) if step.with_std else None))
    return final, scalers


def from_estimator(model: Model, estimator: Any) -> LinearModel | None:
    """The linear form of a loaded scikit-learn model, or None when it has none or answers differently."""
    if model.allow_nan:  # NaN/inf would reach it (model.json): scikit-learn's own refusal of them is not replicated
        return None
    found = _scalers(estimator)
    if found is None:
        return None
    estimator, scalers = found
    name = _qualified(estimator)
    if name not in CLASSIFIERS | REGRESSORS:
        return None
    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    classes = getattr(estimator, "classes_", None) if name in CLASSIFIERS else None
    if not isinstance(coef, np.ndarray) or coef.dtype.kind != "f" or intercept is None:
        return None  # sparsified coefficients, or not fitted
    if name in CLASSIFIERS and (not isinstance(classes, np.ndarray) or classes.dtype.kind == "O"):
        return None  # object labels cannot be kept without pickle
    linear = LinearModel(model.model_dir, model.options, "classifier" if name in CLASSIFIERS else "regressor",
                         coef, np.asarray(intercept), classes, scalers)
    _copy_description(model, linear)
    return linear if _answers_alike(model, linear) else None


def _copy_description(source: Model, target: Model) -> None:
    target.inputs, target.outputs, target.columns = list(source.inputs), list(source.outputs), source.columns
    target.allow_nan = source.allow_nan


def _answers_alike(model: Model, linear: LinearModel) -> bool:
    """Whether both give the same bits, dtypes and shapes for every output on probe rows: normal ones,
    large ones (saturated probabilities), and zeros."""
    width = model.row_width
    if width <= 0:
        return False
    rng = np.random.default_rng(0)
    probe = np.concatenate([rng.normal(size=(PROBE_ROWS, width)), rng.normal(scale=1e3, size=(16, width)),
                            np.zeros((1, width))])
    outputs = [spec.name for spec in model.outputs]
    name = model.inputs[0].name
    try:
        expected = model.predict({name: probe.copy()}, outputs)
        actual = linear.predict({name: probe.copy()}, outputs)
    except Exception as error:
        log.info("linear form not kept: %s: %s", type(error).__name__, error)
        return False
    for output in outputs:
        a, b = np.asarray(expected[output]), np.asarray(actual[output])
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            log.info("linear form not kept: %r differs from scikit-learn's", output)
            return False
    return True


def save(linear: LinearModel, path: Path) -> None:
    """Write the linear form atomically (a reader sees the whole file or none); best effort."""
    description = {"kind": linear.kind, "columns": linear.columns, "allow_nan": linear.allow_nan,
                   "inputs": [spec.to_json() for spec in linear.inputs],
                   "outputs": [spec.to_json() for spec in linear.outputs], "scalers": len(linear.scalers)}
    arrays = {"coef": linear.coef, "intercept": linear.intercept,
              "description": np.frombuffer(dumps(description), dtype=np.uint8)}
    if linear.classes is not None:
        arrays["classes"] = linear.classes
    for index, (mean, scale) in enumerate(linear.scalers):
        arrays.update({f"{what}_{index}": array for what, array in (("mean", mean), ("scale", scale))
                       if array is not None})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".writing-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as file:
                _write_npz(file, arrays)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    except OSError as error:  # a read-only registry: next time loads through scikit-learn again
        log.info("linear form not written to %s: %s", path, error)


def _write_npz(file: Any, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez``'s format (what ``np.load`` reads), with fixed entry times and order: the same model
    makes the same bytes, so an image layer that carries the file is reproducible."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(arrays[name]), allow_pickle=False)


def keep(model_dir: str, folder: str) -> str:
    """Load ``model_dir`` as scikit-learn and keep its linear form in ``folder`` when it has one: what a
    model image's build runs inside its environment image, whose libraries the form must be checked with."""
    from pipeline.runtime.flavors import load_model

    model = load_model(Path(model_dir), "sklearn", derived_dir=Path(folder))
    kept = cache_file(Path(folder))
    return f"kept {kept.name}" if kept.is_file() else f"no linear form for this {type(model).__name__}"


def load(path: Path, model_dir: Path, options: dict[str, Any]) -> LinearModel | None:
    """The linear form kept at ``path``, or None when there is none (or it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            description = loads(data["description"].tobytes())
            arrays = {name: data[name] for name in data.files}
            scalers = [(arrays.get(f"mean_{i}"), arrays.get(f"scale_{i}")) for i in range(description["scalers"])]
            linear = LinearModel(model_dir, options, description["kind"], arrays["coef"], arrays["intercept"],
                                 arrays.get("classes"), scalers)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:  # torn, foreign
        log.info("linear form at %s not read (%s); loading through scikit-learn", path, error)
        return None
    linear.columns = description["columns"]
    linear.allow_nan = description["allow_nan"] is True
    linear.inputs = [TensorSpec.from_json(spec) for spec in description["inputs"]]
    linear.outputs = [TensorSpec.from_json(spec) for spec in description["outputs"]]
    return linear
