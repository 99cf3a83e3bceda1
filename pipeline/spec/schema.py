"""The JSON Schema of mlops.yaml (draft 2020-12) and its errors turned into user messages.

Validation uses the ``jsonschema`` library; this module only words its errors for people:
where (the offending key or value), what was expected, and "did you mean …?" for typos.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from pipeline.spec.yamlsource import Source

_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false", "object": "a mapping", "array": "a list", "null": "null"}

# Wording for patterns, by the name of the field they constrain.
_PATTERN_HINTS = {
    "model": "a model reference NAME or NAME:VERSION (lowercase letters, digits and '-'; version 1 or more), "
             "or models:/NAME/VERSION or models:/NAME@ALIAS",
    "tracking_uri": "a reference to an environment variable like ${MLFLOW_TRACKING_URI} (the URL, which may "
                    "carry credentials, is never written in the file)",
    "python": 'a Python version like "3.11" (quote it: YAML reads 3.10 as the number 3.1)',
    "memory": "a size like 512Mi or 2Gi",
    "cpu": "a number of cores like 0.5 or millicores like \"500m\"",
    "name": "a Kubernetes object name (lowercase letters, digits, '-' and '.')",
    "namespace": "a Kubernetes namespace (a DNS-1123 label: lowercase letters, digits and '-')",
    **{field: "a duration like 30s, 5m, 1h or 300ms" for field in ("interval", "mirror_first", "progress_deadline")},
}


@functools.cache
def schema() -> dict[str, Any]:
    """The schema shipped inside the package (also printed by ``mlops schema``)."""
    text = resources.files("pipeline.spec").joinpath("mlops.schema.json").read_text("utf-8")
    return json.loads(text)


@functools.cache
def _validator() -> Draft202012Validator:
    """A validator of the schema with its ``$ref``s replaced by the definitions they name: looking a
    reference up costs ``jsonschema`` more than checking what it points to (a third of validating a
    file with 10,000 deployments). Errors name the same keywords, values and paths."""
    definitions = schema()["$defs"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:  # local and not recursive in this schema; siblings are descriptions
                target = definitions[node["$ref"].rsplit("/", 1)[-1]]
                return {**inline(target), **{k: inline(v) for k, v in node.items() if k != "$ref"}}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return Draft202012Validator(inline(schema()))


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for name, kind in (("string", str), ("integer", int), ("number", float), ("object", dict),
                       ("array", list)):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def closest(word: str, choices) -> str | None:
    """The choice a typo most likely meant, if any is close enough."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices) -> str:
    close = closest(word, choices)
    return f"; did you mean '{close}'?" if close else ""


def validate(source: Source) -> tuple[list[tuple[tuple[int, int], str]], Any]:
    """Every schema violation of the parsed file as (position, message), and the data without the
    values the schema rejected (each replaced by ``REJECTED``), for checks that rely on the types."""
    errors = list(_validator().iter_errors(source.data))
    found = [item for error in errors for item in _explain(error, source)]
    rejected = {tuple(e.absolute_path) for e in errors if e.validator not in ("required", "additionalProperties")}
    return found, _without(source.data, (), rejected)


REJECTED = type("Rejected", (), {"__repr__": lambda self: "REJECTED"})()


def _without(value: Any, path: tuple, rejected: set[tuple]) -> Any:
    if path in rejected:
        return REJECTED
    if isinstance(value, dict):
        return {k: _without(v, path + (k,), rejected) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, path + (i,), rejected) for i, v in enumerate(value)]
    return value


def _explain(error: ValidationError, source: Source) -> list[tuple[tuple[int, int], str]]:
    path = tuple(error.absolute_path)
    where = dotted(path)
    value = error.instance
    kind = error.validator
    if kind == "additionalProperties" and error.schema.get("additionalProperties") is False:
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in value if k not in error.schema.get("properties", {})]
        return [
            (source.at(path + (key,), key=True),
             f"unknown key '{key}' in {where}{did_you_mean(key, allowed)}"
             + ("" if did_you_mean(key, allowed) else f" (allowed: {', '.join(allowed)})"))
            for key in extras
        ]
    if kind == "required":
        properties = error.schema.get("properties", {})
        misspelt = {closest(k, properties) for k in value if k not in properties}
        # a misspelt key already gets "unknown key …; did you mean"; don't report it missing too
        missing = [k for k in error.validator_value if k not in value and k not in misspelt]
        return [(source.at(path, key=True), f"{where}: missing required key '{k}'") for k in missing]
    if kind == "oneOf":
        return _explain_alternatives(error, source)
    position = source.at(path)
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return [(position, f"{where}: '{value}' is not one of {options}"
                 f"{did_you_mean(value, error.validator_value)}")]
    if kind == "const" and path == ("version",):
        return [(position, f"version: unsupported format version {value!r}; this mlops reads version 1")]
    if kind == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        hint = ""
        if path and path[-1] == "python" and isinstance(value, float):
            hint = ' (quote it, like "3.11": YAML reads 3.10 as the number 3.1)'
        return [(position, f"{where}: expected {wanted}, got {_type_name(value)} {value!r}{hint}")]
    if kind == "pattern":
        field = str(path[-1]) if path else ""
        wanted = _PATTERN_HINTS.get(field, f"text matching {error.validator_value}")
        return [(position, f"{where}: '{value}' is not {wanted}")]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return [(position, f"{where}: {value!r} must be {sign} {error.validator_value}")]
    if kind == "minProperties" and path and path[-1] == "deployments":
        return [(position, f"{where}: an endpoint needs at least one deployment")]
    if kind == "minLength":
        return [(position, f"{where}: must not be empty")]
    return [(position, f"{where}: {error.message}")]


def _explain_alternatives(error: ValidationError, source: Source) -> list[tuple[tuple[int, int], str]]:
    """A value that fits none of several shapes: explain the shape its own ``type:`` key picks, or
    say which kinds of value (and which ``type:`` values) are accepted."""
    path, value = tuple(error.absolute_path), error.instance
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def picked(errors: list[ValidationError]) -> bool:
        return not any((e.validator == "type" and tuple(e.absolute_path) == path)
                       or (e.validator == "const" and tuple(e.absolute_path) == path + ("type",)) for e in errors)

    fitting = [errors for errors in branches.values() if picked(errors)]
    if len(fitting) == 1:
        return [item for sub in fitting[0] for item in _explain(sub, source)]
    where = dotted(path)
    kinds = [e.validator_value for e in error.context or [] if e.validator == "type" and tuple(e.absolute_path) == path]
    consts = [_type_const(branch) for branch in error.validator_value if _type_const(branch) is not None]
    if isinstance(value, dict) and "type" in value and consts:
        return [(source.at(path + ("type",)), f"{where}.type: '{value['type']}' is not one of "
                 f"{', '.join(map(str, consts))}{did_you_mean(str(value['type']), consts)}")]
    wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(k, k) for k in kinds if isinstance(k, str)))
    if isinstance(value, dict) and consts:
        wanted = f"a mapping with type: {' or '.join(map(str, consts))}"
        return [(source.at(path, key=True), f"{where}: missing required key 'type' ({wanted})")]
    return [(source.at(path), f"{where}: expected {wanted or 'another kind of value'}, got {_type_name(value)} "
             f"{value!r}")]


def _type_const(branch: dict[str, Any]) -> Any:
    """The value a ``type:`` key must have in one alternative (following a local ``$ref``), or None."""
    if "$ref" in branch:
        branch = schema()["$defs"][branch["$ref"].rsplit("/", 1)[-1]]
    return branch.get("properties", {}).get("type", {}).get("const")
