"""A loaded model, whatever its flavor: what it takes and gives, and predictions in two steps.

``prepare_rows`` / ``prepare_tensors`` turn rows or named arrays into what the model takes, checking
shapes, types, column names and missing values (``InvalidInput`` saying what was expected), then
``score`` / ``infer`` run the model — possibly in another thread — so that a caller's mistake never
reaches the model and the model's own failures stay its own (any other exception). Named columns
are matched to the model's feature names and reordered (``pipeline.runtime.columns``).
``predict_batch`` does both steps at once.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput, ModelLoadError
from pipeline.runtime.columns import reorder
from pipeline.runtime.tensors import DTYPES, TensorSpec, check_shape, refuse_missing_values

log = logging.getLogger("mlops.runtime")

MODEL_FILE = "model.json"
WARM_UP_RUNS = 5


class Model:
    """A loaded model: its inputs and outputs (OIP metadata), feature names, and prepare/run steps."""

    flavor = ""
    platform = ""
    raw_text = False  # True: the model takes a request's raw text (Azure's score.py), not parsed rows
    form = ""  # how it was loaded, when not from the flavor's own files (said in the service's ready line)

    def __init__(self, model_dir: Path, options: dict[str, Any]):
        self.model_dir = model_dir
        self.options = options
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.columns: list[str] | None = None  # feature names, in the order the model wants them
        self.example: Any = options.get("input_example")  # rows for a warm-up call
        self.example_given = self.example is not None
        # Whether null/NaN/inf may reach the model: model.json's "allow_nan", else the flavor's
        # knowledge (scikit-learn's estimator tags), else no — refusing beats a model's failure or garbage.
        self.allow_nan = options.get("allow_nan") is True

    def _apply_declared_metadata(self) -> None:
        declared = self.options.get("columns")
        if declared is not None:
            if not (isinstance(declared, list) and all(isinstance(c, str) for c in declared)):
                raise ModelLoadError(f"{self.model_dir / MODEL_FILE}: 'columns' must be a list of feature names")
            self.columns = declared
        try:
            if "inputs" in self.options:
                self.inputs = [TensorSpec.from_json(t) for t in self.options["inputs"]]
            if "outputs" in self.options:
                self.outputs = [TensorSpec.from_json(t) for t in self.options["outputs"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ModelLoadError(f"{self.model_dir / MODEL_FILE}: bad inputs/outputs: {error}") from None

    # -- what it takes and gives ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Platform, inputs and outputs, as the Open Inference Protocol's model metadata names them."""
        return {"platform": self.platform, "inputs": [spec.to_json() for spec in self.inputs],
                "outputs": [spec.to_json() for spec in self.outputs]}

    def describe_input_schema(self) -> dict[str, Any] | None:
        """JSON Schema of one row, when the input width is known (for /openapi.json)."""
        example = self.synthetic_example()
        if example is None:
            return None
        item = {"type": "number"} if self.inputs[0].datatype.startswith("FP") else {"type": "integer"}
        width = len(example[0])
        row: dict[str, Any] = {"type": "array", "items": item, "minItems": width, "maxItems": width}
        if self.columns:
            row["description"] = "values of the columns " + ", ".join(self.columns)
        return row

    def class_labels(self) -> list[str] | None:
        """A classifier's labels, in the order of its probability columns (None: not a classifier, or unknown)."""
        return None

    def default_outputs(self) -> list[str]:
        return [self.outputs[0].name]

    @property
    def stacks_rows(self) -> bool:
        """Whether rows of several requests may be stacked into one call and the answer split back:
        the model takes parsed rows (not a request's text) and every input's first axis is free."""
        return not self.raw_text and bool(self.inputs) and all(
            len(spec.shape) >= 1 and spec.shape[0] == -1 for spec in self.inputs)

    # -- rows: /score, /invocations, batches -----------------------------------------------------
    def prepare_rows(self, rows: Any, columns: list[str] | None = None, positional: bool = False,
                     nulls: bool = True) -> tuple[Any, Any, int]:
        """Rows (named columns matched to the model's, any order) → (payload for ``score``, the inputs
        as the model takes them, number of rows).

        ``positional``: a model without feature names takes named columns in the order sent (what
        MLflow's server does for /invocations: a CSV always has a header); else that is InvalidInput.
        ``nulls`` False: the rows come from JSON without ``null``, so they are all finite numbers.
        The inputs as taken keep the column names when the model has them (``{"columns", "data"}``
        in the model's order, which ``mlops monitor`` reads like an Azure ``input_data``).
        """
        if positional and self.columns is None:
            columns = None
        matrix = self._matrix(rows, columns, nulls)
        inputs = rows if self.columns is None else {"columns": self.columns,
                                                    "data": rows if columns is None else matrix}
        return {self._single_input().name: matrix}, inputs, matrix.shape[0]

    def score(self, payload: Any) -> Any:
        """The predictions of the first output for a prepared payload."""
        first = self.outputs[0].name
        return self.predict(payload, [first])[first]

    def predict_batch(self, rows: Any, columns: list[str] | None = None) -> Any:
        """Prepare and score at once: rows (a list of rows or a 2-D array) → the predictions."""
        if isinstance(rows, np.ndarray) and not self.raw_text:
            rows = rows.tolist()
        payload, _, _ = self.prepare_rows(rows, columns)
        return self.score(payload)

    # -- named tensors: OIP v2 infer ---------------------------------------------------------------
    def prepare_tensors(self, tensors: dict[str, np.ndarray], outputs: list[str] | None = None
                        ) -> tuple[dict[str, np.ndarray], int]:
        """Input arrays by the model's input names, cast to their dtypes, and the number of rows;
        InvalidInput when they do not fit or ``outputs`` names one the model lacks."""
        known = {spec.name: spec for spec in self.inputs}
        if len(self.inputs) == 1 and len(tensors) == 1:
            arrays = {self.inputs[0].name: next(iter(tensors.values()))}
        else:
            missing = sorted(set(known) - set(tensors))
            extra = sorted(set(tensors) - set(known))
            if missing or extra:
                raise InvalidInput(f"expected inputs {sorted(known)}; missing {missing}, unknown {extra}")
            arrays = dict(tensors)
        for name, array in arrays.items():
            spec = known[name]
            check_shape(name, array.shape, spec.shape)
            if array.size == 0:
                raise InvalidInput(f"input {name!r} holds no values")
            if spec.datatype != "BYTES" and array.dtype.kind in "OSU":
                raise InvalidInput(f"input {name!r}: expected {spec.datatype} numbers, got BYTES")
            if spec.datatype != "BYTES":
                arrays[name] = array.astype(DTYPES[spec.datatype], copy=False)
                if not self.allow_nan:
                    refuse_missing_values(f"input {name!r}", array)
        if outputs is not None:
            names = {spec.name for spec in self.outputs}
            unknown = [n for n in outputs if n not in names]
            if unknown:
                raise InvalidInput(f"unknown output(s) {unknown}; this model has {sorted(names)}")
        rows = max((a.shape[0] if a.ndim else 1) for a in arrays.values())
        return arrays, rows

    def infer(self, arrays: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Output arrays by name (``outputs``, else the model's default ones) for prepared arrays."""
        return self.predict(arrays, outputs or self.default_outputs())

    # -- what flavors provide ---------------------------------------------------------------
    def predict(self, arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- shared helpers ---------------------------------------------------------------------
    def _single_input(self) -> TensorSpec:
        if len(self.inputs) != 1:
            raise InvalidInput(f"this model takes {len(self.inputs)} named inputs; use POST /v2/models/<name>/infer")
        return self.inputs[0]

    def _matrix(self, rows: Any, columns: list[str] | None, nulls: bool = True) -> np.ndarray:
        spec = self._single_input()
        dtype = DTYPES[spec.datatype]
        width = spec.shape[-1] if len(spec.shape) == 2 else -1
        expected = f"a list of rows of {width} numbers" if width >= 0 else "a list of rows"
        array = isinstance(rows, np.ndarray) and rows.ndim == 2  # batch scoring: a chunk's columns, no lists
        if not (array or isinstance(rows, list)) or not len(rows):
            raise InvalidInput(f"expected {expected} in 'data'")
        row_width = rows.shape[1] if array else len(rows[0]) if isinstance(rows[0], list) else -1
        if columns is not None and len(columns) != row_width:
            raise InvalidInput(f"{len(columns)} columns named but the rows do not have {len(columns)} values each")
        try:
            matrix = np.asarray(rows, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"expected {expected} ({spec.datatype}); rows have different lengths or "
                               f"non-numbers") from None
        if columns is not None and matrix.ndim == 2:
            matrix = reorder(matrix, columns, self.columns)
        if matrix.ndim != 2 or (width >= 0 and matrix.shape[1] != width):
            raise InvalidInput(f"expected {expected}, got an array of shape {list(matrix.shape)}")
        if nulls and not self.allow_nan:
            refuse_missing_values("'data'", matrix)
        return matrix

    @property
    def row_width(self) -> int:
        """The number of features in a row, for a single input of rows; -1 when unknown."""
        return self.inputs[0].shape[-1] if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2 else -1

    # -- warm-up ----------------------------------------------------------------------------------
    def synthetic_example(self) -> Any:
        """One row of zeros when the input width is known (a harmless warm-up), else None."""
        if self.row_width > 0 and self.inputs[0].datatype != "BYTES":
            return [[0] * self.row_width]
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
            payload, _, _ = self.prepare_rows(rows)
            times = []
            for _ in range(WARM_UP_RUNS):
                start = time.perf_counter()
                self.score(payload)
                times.append(time.perf_counter() - start)
            return statistics.median(times)
        except Exception as error:
            if self.example_given:
                message = str(error) if isinstance(error, InvalidInput) else f"{type(error).__name__}: {error}"
                raise ModelLoadError(f"the model failed on its input_example: {message}") from error
            log.info("warm-up on a synthesized example failed (%s: %s); skipped", type(error).__name__, error)
            return None
