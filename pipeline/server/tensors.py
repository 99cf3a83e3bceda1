"""Open Inference Protocol v2 tensors: decoding infer requests, encoding responses.

Both the JSON form (``data`` as a flat or nested list in row-major order) and Triton's
binary-tensor-data extension are understood: with an ``Inference-Header-Content-Length`` header
the JSON part is followed by raw little-endian tensor bytes (``parameters.binary_data_size`` per
input), and outputs are returned the same way when the request asks for ``binary_data`` (per
output) or ``binary_data_output`` (request parameter; tritonclient sets it when no outputs are
named). BYTES elements in binary form are each a 4-byte little-endian length and the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from pipeline.server.http import HTTPError, InvalidInput, dumps, parse_json

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


@dataclass
class InferRequest:
    """A decoded infer request: input arrays by name and what the caller wants back."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[str] | None = None  # None: the model's default outputs
    binary_outputs: set[str] = field(default_factory=set)
    binary_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)

    def wants_binary(self, name: str) -> bool:
        return name in self.binary_outputs or self.binary_default


def _bad(message: str) -> HTTPError:
    return InvalidInput(message)


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise _bad(f"{where}: 'parameters' must be an object")
    return parameters


def _decode_bytes_elements(chunk: bytes, count: int, name: str) -> np.ndarray:
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(chunk):
            raise _bad(f"input {name!r}: binary BYTES data ends early")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        values.append(chunk[offset:offset + length])
        offset += length
    return np.array(values, dtype=object)


def _decode_input(spec: Any, binary: memoryview | None, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict):
        raise _bad("each item of 'inputs' must be an object with name, shape, datatype and data")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str):
        raise _bad("an input has no 'name'")
    if datatype not in DTYPES:
        raise _bad(f"input {name!r}: datatype must be one of {', '.join(DTYPES)}, not {datatype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"input {name!r}: shape must be a list of non-negative integers")
    dtype, count = DTYPES[datatype], prod(shape)
    size = _parameters(spec, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"input {name!r}: binary_data_size must be a non-negative integer")
        if binary is None or offset + size > len(binary):
            raise _bad(f"input {name!r}: binary_data_size {size} is more than the binary part holds")
        chunk = bytes(binary[offset:offset + size])
        offset += size
        if datatype == "BYTES":
            array = _decode_bytes_elements(chunk, count, name)
        else:
            if size != count * dtype.itemsize:
                raise _bad(f"input {name!r}: shape {shape} as {datatype} needs {count * dtype.itemsize} "
                           f"bytes, got {size}")
            array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<"))
    else:
        if "data" not in spec:
            raise _bad(f"input {name!r} has no 'data'")
        try:
            array = np.asarray(spec["data"], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as error:
            raise _bad(f"input {name!r}: data is not a {datatype} array of shape {shape}: {error}") from None
        if array.size != count:
            raise _bad(f"input {name!r}: shape {shape} needs {count} values, got {array.size}")
    return name, array.reshape(shape), offset


def decode_request(body: bytes, header_length: bytes | None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON followed by binary tensors); 400 when malformed."""
    binary: memoryview | None = None
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise _bad("Inference-Header-Content-Length is not a number") from None
        if not 0 <= split <= len(body):
            raise _bad("Inference-Header-Content-Length is larger than the body")
        binary = memoryview(body)[split:]
        body = body[:split]
    document = parse_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise _bad("expected an object with a non-empty 'inputs' list of tensors "
                   "({name, shape, datatype, data})")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for spec in document["inputs"]:
        name, array, offset = _decode_input(spec, binary, offset)
        inputs[name] = array
    parameters = _parameters(document, "the request")
    request = InferRequest(inputs=inputs, id=document.get("id"), parameters=parameters,
                           binary_default=bool(parameters.get("binary_data_output")))
    if document.get("outputs") is not None:
        if not isinstance(document["outputs"], list):
            raise _bad("'outputs' must be a list of {name} objects")
        request.outputs = []
        for item in document["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise _bad("each item of 'outputs' must be an object with a 'name'")
            request.outputs.append(item["name"])
            if _parameters(item, f"output {item['name']!r}").get("binary_data"):
                request.binary_outputs.add(item["name"])
    return request


def _binary(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts = []
        for value in array.reshape(-1):
            raw = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_response(model_name: str, model_version: str, request: InferRequest,
                    outputs: dict[str, np.ndarray]) -> tuple[bytes, bytes | None]:
    """The response body, and the JSON header length when binary outputs follow it."""
    items, blobs = [], []
    for name, value in outputs.items():
        array = np.asarray(value)
        item: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype_of(array.dtype)}
        if request.wants_binary(name):
            blob = _binary(array)
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            flat = array.reshape(-1)
            item["data"] = flat if flat.dtype.kind not in "OSU" else [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
        items.append(item)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": items}
    if request.id is not None:
        response["id"] = request.id
    header = dumps(response)
    if not blobs:
        return header, None
    return header + b"".join(blobs), str(len(header)).encode()
