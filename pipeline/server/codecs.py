"""Request and response bodies of the scoring routes, to and from the model runtime's rows and arrays.

Three protocols, every flavor answering each (``pipeline.runtime`` takes rows and named arrays):

* ``POST /score`` — Azure ML's ``{"data": rows}`` or ``{"input_data": {"columns": [...], "data":
  rows}}``, answered ``{"predictions": ...}``; a python flavor's ``score.py`` gets the raw body text
  and its return value is the body.
* ``POST /invocations`` — MLflow's scoring-server formats, mirroring
  ``mlflow/pyfunc/scoring_server/__init__.py`` (``invocations``, ``infer_and_parse_data``): a JSON
  object with exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``
  (``params`` is accepted and ignored), or a CSV body with a header row under ``Content-Type:
  text/csv``; other content types are 415, and only UTF-8 is accepted. Columns are matched to the
  model's feature names like any ``/score`` request. The answer is ``{"predictions": ...}``, as MLflow's.
* Open Inference Protocol v2 ``infer`` — named tensors, in JSON (``data`` as a flat or nested list in
  row-major order) or with Triton's binary-tensor-data extension: with an
  ``Inference-Header-Content-Length`` header the JSON part is followed by raw little-endian tensor
  bytes (``parameters.binary_data_size`` per input), and outputs are returned the same way when the
  request asks for ``binary_data`` (per output) or ``binary_data_output`` (request parameter;
  tritonclient sets it when no outputs are named). BYTES elements in binary form are each a 4-byte
  little-endian length and the bytes.

Decoding raises the runtime's ``InvalidInput`` (the app answers 400), or ``HTTPError`` for what only
HTTP has (an unsupported content type: 415). Each decoder returns what the app hands to
``ScoringService.execute`` and records: (payload, inputs as taken, number of rows).
"""

from __future__ import annotations

import csv
import io
import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput
from pipeline.runtime.jsonio import MAX_ELEMENTS, dumps, parse_json
from pipeline.runtime.model import Model
from pipeline.runtime.tensors import DTYPES, datatype_of
from pipeline.server.http import HTTPError


# -- /score -----------------------------------------------------------------------------------------
def _rows_of(document: Any) -> tuple[Any, list[str] | None]:
    """The rows and optional column names of an Azure-style /score body."""
    if isinstance(document, dict):
        if "data" in document:
            return document["data"], None
        input_data = document.get("input_data")
        if isinstance(input_data, dict) and "data" in input_data:
            columns = input_data.get("columns")
            if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
                raise InvalidInput("'input_data.columns' must be a list of column names")
            return input_data["data"], columns
        if isinstance(input_data, list):
            return input_data, None
    raise InvalidInput('expected {"data": [[...], ...]} or {"input_data": {"columns": [...], "data": [[...], ...]}}')


def decode_score(model: Model, body: bytes) -> tuple[Any, Any, int]:
    """(payload for ``model.score``, the inputs to record, number of rows) of a /score body."""
    if model.raw_text:
        try:
            return body.decode("utf-8"), body, 1
        except UnicodeDecodeError:
            raise InvalidInput("request body is not UTF-8 text") from None
    rows, columns = _rows_of(parse_json(body))
    return model.prepare_rows(rows, columns, nulls=b"null" in body)


def encode_score(model: Model, predictions: Any) -> bytes:
    return dumps({"predictions": predictions} if not model.raw_text else predictions)


# -- /invocations -----------------------------------------------------------------------------------
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_REQUIRED = f"expected a JSON object with exactly one of the fields {', '.join(FORMATS)}"


def _content_type(header: bytes | None) -> str:
    """'json' or 'csv'; 415 for anything else, as MLflow's server answers."""
    if not header:
        return "json"
    mime, *parameters = (part.strip() for part in header.decode("latin-1").lower().split(";"))
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip() != "charset" or value.strip().strip('"') != "utf-8":
            raise HTTPError(415, f"unsupported content type parameter {parameter!r}; only charset=utf-8")
    if mime == "application/json":
        return "json"
    if mime == "text/csv":
        return "csv"
    raise HTTPError(415, f"content type {mime!r} is not supported; send application/json or text/csv")


def _records(records: Any, where: str) -> tuple[list[list[Any]], list[str]]:
    """Rows of a list of {column: value} objects; columns in the first record's order."""
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise InvalidInput(f"'{where}' must be a non-empty list of {{column: value}} objects")
    columns = list(records[0])
    for record in records:
        if record.keys() != records[0].keys():
            raise InvalidInput(f"'{where}': every record must name the same columns {columns}")
    return [[record[c] for c in columns] for record in records], columns


def _columns_dict(data: dict[str, Any], where: str) -> tuple[list[list[Any]], list[str]]:
    """Rows of {column: [values...]} (MLflow's named-input form of 'inputs'/'instances')."""
    columns = list(data)
    values = list(data.values())
    if not values or not all(isinstance(v, list) for v in values) or len({len(v) for v in values}) != 1:
        raise InvalidInput(f"'{where}' as an object must map each column name to a list of values of one length")
    return [list(row) for row in zip(*values, strict=True)], columns


def _json_rows(document: Any) -> tuple[Any, list[str] | None]:
    if not isinstance(document, dict):
        raise InvalidInput(_REQUIRED)
    present = [key for key in FORMATS if key in document]
    if len(present) != 1:
        raise InvalidInput(f"{_REQUIRED}; got {sorted(document)[:10]}")
    key = present[0]
    data = document[key]
    if key == "dataframe_split":
        if not isinstance(data, dict) or "data" not in data:
            raise InvalidInput("'dataframe_split' must be an object with 'columns' and 'data'")
        columns = data.get("columns")
        if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise InvalidInput("'dataframe_split.columns' must be a list of column names")
        return data["data"], columns
    if key == "dataframe_records":
        return _records(data, key)
    if isinstance(data, dict):
        return _columns_dict(data, key)
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return _records(data, key)
    return data, None


def _csv_rows(body: bytes) -> tuple[list[list[Any]], list[str]]:
    """A CSV with a header row (``DataFrame.to_csv(index=False)``); numbers as floats, empty cells null."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("a text/csv body must be UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = next(reader)
        rows = []
        count = 0
        for row in reader:
            if not row:
                continue
            count += len(row)
            if count > MAX_ELEMENTS:
                raise InvalidInput(f"request body holds more than {MAX_ELEMENTS} values")
            rows.append([_cell(value) for value in row])
    except StopIteration:
        raise InvalidInput("a text/csv body needs a header row of column names") from None
    except csv.Error as error:
        raise InvalidInput(f"request body is not valid CSV: {error}") from None
    return rows, columns


def _cell(value: str) -> Any:
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def invocations_rows(body: bytes, content_type: bytes | None) -> tuple[Any, list[str] | None, bool]:
    """(rows, column names or None, whether values may be null/NaN/inf) of a ``/invocations`` body;
    400/415 saying what is wrong."""
    if _content_type(content_type) == "csv":
        return *_csv_rows(body), True  # empty cells, "nan", "inf"
    return *_json_rows(parse_json(body)), b"null" in body


def decode_invocations(model: Model, body: bytes, content_type: bytes | None) -> tuple[Any, Any, int]:
    """(payload for ``model.score``, the inputs to record, number of rows) of an /invocations body;
    named columns are taken in the order sent by a model that has no feature names, as MLflow does."""
    rows, columns, nulls = invocations_rows(body, content_type)
    return model.prepare_rows(rows, columns, positional=True, nulls=nulls)


def invocations_predictions(model: Model, result: Any) -> Any:
    """What /invocations answers as ``{"predictions": ...}``: a score.py's own ``predictions`` unwrapped."""
    if model.raw_text and isinstance(result, dict) and "predictions" in result:
        return result["predictions"]
    return result


# -- Open Inference Protocol v2 ---------------------------------------------------------------------
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


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return parameters


def _decode_bytes_elements(chunk: bytes, count: int, name: str) -> np.ndarray:
    values, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(chunk):
            raise InvalidInput(f"input {name!r}: binary BYTES data ends early")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        values.append(chunk[offset:offset + length])
        offset += length
    return np.array(values, dtype=object)


def _decode_input(spec: Any, binary: memoryview | None, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict):
        raise InvalidInput("each item of 'inputs' must be an object with name, shape, datatype and data")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str):
        raise InvalidInput("an input has no 'name'")
    if datatype not in DTYPES:
        raise InvalidInput(f"input {name!r}: datatype must be one of {', '.join(DTYPES)}, not {datatype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers")
    dtype, count = DTYPES[datatype], prod(shape)
    size = _parameters(spec, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
        if binary is None or offset + size > len(binary):
            raise InvalidInput(f"input {name!r}: binary_data_size {size} is more than the binary part holds")
        chunk = bytes(binary[offset:offset + size])
        offset += size
        if datatype == "BYTES":
            array = _decode_bytes_elements(chunk, count, name)
        else:
            if size != count * dtype.itemsize:
                raise InvalidInput(f"input {name!r}: shape {shape} as {datatype} needs {count * dtype.itemsize} "
                           f"bytes, got {size}")
            array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<"))
    else:
        if "data" not in spec:
            raise InvalidInput(f"input {name!r} has no 'data'")
        try:
            array = np.asarray(spec["data"], dtype=dtype)
        except (TypeError, ValueError, OverflowError) as error:
            raise InvalidInput(f"input {name!r}: data is not a {datatype} array of shape {shape}: {error}") from None
        if array.size != count:
            raise InvalidInput(f"input {name!r}: shape {shape} needs {count} values, got {array.size}")
    return name, array.reshape(shape), offset


def decode_request(body: bytes, header_length: bytes | None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON followed by binary tensors); 400 when malformed."""
    binary: memoryview | None = None
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidInput("Inference-Header-Content-Length is not a number") from None
        if not 0 <= split <= len(body):
            raise InvalidInput("Inference-Header-Content-Length is larger than the body")
        binary = memoryview(body)[split:]
        body = body[:split]
    document = parse_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise InvalidInput("expected an object with a non-empty 'inputs' list of tensors "
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
            raise InvalidInput("'outputs' must be a list of {name} objects")
        request.outputs = []
        for item in document["outputs"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput("each item of 'outputs' must be an object with a 'name'")
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
