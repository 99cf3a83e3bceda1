"""MLflow's scoring-server request formats for ``POST /invocations``, as (rows, column names).

Mirrors ``mlflow/pyfunc/scoring_server/__init__.py`` (``invocations``, ``infer_and_parse_data``):
a JSON object with exactly one of ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs`` (``params`` is accepted and ignored), or a CSV body with a header row under
``Content-Type: text/csv``; other content types are 415, and only UTF-8 is accepted. The flavor
then matches the columns to its feature names like any ``/score`` request, so every flavor takes
every format. The answer is ``{"predictions": ...}``, as MLflow's.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pipeline.server.http import MAX_ELEMENTS, HTTPError, InvalidInput, parse_json

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


def parse_invocations(body: bytes, content_type: bytes | None) -> tuple[Any, list[str] | None, bool]:
    """(rows, column names or None, whether values may be null/NaN/inf) of a ``/invocations`` body;
    400/415 saying what is wrong."""
    if _content_type(content_type) == "csv":
        return *_csv_rows(body), True  # empty cells, "nan", "inf"
    return *_json_rows(parse_json(body)), b"null" in body
