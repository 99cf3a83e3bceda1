"""Tensors as the runtime describes and checks them: Open Inference Protocol datatypes, named specs,
and the finite-values check.

Decoding and encoding protocol bodies is the HTTP service's (``pipeline.server.codecs``); this
module only knows numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF = {dtype: name for name, dtype in DTYPES.items() if name != "BYTES"}


def datatype_of(dtype: np.dtype) -> str:
    """The OIP datatype name for a numpy dtype (strings and objects are BYTES)."""
    return _DATATYPE_OF.get(np.dtype(dtype), "BYTES")


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output as the metadata route describes it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        if data.get("datatype") not in DTYPES:
            raise ValueError(f"tensor {data.get('name')!r}: datatype must be one of {', '.join(DTYPES)}")
        return cls(str(data["name"]), data["datatype"], tuple(int(d) for d in data.get("shape", [-1])))


def refuse_missing_values(name: str, array: np.ndarray) -> None:
    """InvalidInput naming the first null, NaN or infinite value of a float array (one C pass when clean)."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return
    where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
    raise InvalidInput(f"{name}: null, NaN or infinite value at index {list(where)}; this model cannot take "
                       f"missing or infinite values")


def check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """InvalidInput unless ``shape`` fits ``expected`` (same rank; -1 takes any size)."""
    if len(shape) != len(expected) or any(e >= 0 and s != e for s, e in zip(shape, expected, strict=False)):
        raise InvalidInput(f"input {name!r}: expected shape {list(expected)} (-1: any), got {list(shape)}")
