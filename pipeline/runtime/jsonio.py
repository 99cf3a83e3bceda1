"""JSON both ways for model inputs and outputs: orjson when installed, numpy values as they are.

``parse_json`` bounds a document before parsing it (nesting depth, number of values) besides any
size limit its reader applies, and raises ``InvalidInput`` saying why a document is refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from pipeline.errors import InvalidInput

try:  # orjson is optional: ~10x faster, and it serializes numpy arrays without .tolist()
    import orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    orjson = None  # type: ignore[assignment]


def _default(value: Any) -> Any:
    """What orjson/json cannot encode natively: numpy arrays of other dtypes, numpy scalars, bytes."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "to_dict"):  # pandas objects returned by pyfunc or user code
        return value.to_dict(orient="list") if hasattr(value, "columns") else value.tolist()
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):  # what orjson writes natively
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


if orjson is not None:
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=_OPTIONS)

    loads = orjson.loads
else:  # pragma: no cover
    def dumps(value: Any) -> bytes:
        return json.dumps(value, default=_default, separators=(",", ":")).encode()

    def _finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"number {text} is infinity when parsed as double")
        return value

    def _no_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    def loads(data: bytes | str) -> Any:
        """Like orjson: NaN, Infinity and numbers too large for a double are not JSON."""
        return json.loads(data, parse_float=_finite, parse_constant=_no_constant)


# Bounds on a JSON document besides its size (the service's max_body_bytes): no route needs more,
# and without them a body of 100,000 nested '[' (200 KB) reaches every recursive consumer (numpy,
# the collector's serializer, the monitor's reader) and fails there instead of here.
MAX_DEPTH = 32
MAX_ELEMENTS = 1_000_000
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{},"')
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone, a string literal has no quote inside
_INNERMOST = re.compile(rb"[\[{][\]}]")  # an empty pair: the innermost level, once commas are gone


def check_json_bounds(body: bytes, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS) -> None:
    """InvalidInput when ``body`` nests deeper than ``max_depth`` or holds more than ``max_elements`` values.

    Runs before the parser, in C-speed passes: ``bytes.count`` proves most bodies fine at once
    (fewer brackets than the depth limit, fewer commas than the element limit); for the others the
    body is reduced to its brackets, commas and quotes (``bytes.translate``), string literals are
    taken out (after their escapes), and the innermost pairs are removed level by level: a body
    with brackets left after ``max_depth`` rounds is too deep (or unbalanced, so no JSON anyway).
    """
    brackets = body.count(b"[") + body.count(b"{")
    commas = body.count(b",")
    if brackets <= max_depth and commas < max_elements:
        return
    if b"\\" in body:  # escaped backslashes first, then escaped quotes: no quote left inside a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(None, _NOT_STRUCTURE)
    if b'"' in structure:
        structure = _STRING.sub(b"", structure)
    if commas >= max_elements and structure.count(b",") >= max_elements:
        raise InvalidInput(f"request body holds more than {max_elements} values")
    if brackets > max_depth:
        structure = structure.replace(b",", b"")
        for _ in range(max_depth):
            structure = _INNERMOST.sub(b"", structure)
            if not structure:
                return
        raise InvalidInput(f"request body nests deeper than {max_depth} levels (or its brackets do not match)")


def parse_json(body: bytes | bytearray | memoryview) -> Any:
    """The JSON document in a request body, within the bounds above; InvalidInput saying why not.

    Neither parser accepts NaN, Infinity or a number beyond a double: the only non-finite value a
    document can bring is ``null``, so ``b"null" in body`` tells whether numbers need checking.
    """
    body = bytes(body)
    check_json_bounds(body)
    try:
        return loads(body)
    except (ValueError, RecursionError) as error:  # orjson.JSONDecodeError is a ValueError
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
