"""The OpenAPI 3 document of a scoring service, with the model's input schema when it is known.

Built per request from the loaded model (cheap, and nobody polls it), so it is exact after the
model loaded and still useful before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline.server.codecs import FORMATS

if TYPE_CHECKING:
    from pipeline.runtime.model import Model
    from pipeline.server.config import ServerConfig

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_TENSOR = {
    "type": "object", "required": ["name", "shape", "datatype", "data"],
    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                   "datatype": {"type": "string"}, "data": {"type": "array"},
                   "parameters": {"type": "object"}},
}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "OK", "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "the request does not fit the model", 401: "missing or invalid key",
               404: "unknown model or version", 413: "body too large", 429: "too many requests",
               415: "content type not supported", 500: "the model failed", 503: "the model is not loaded yet",
               504: "request_timeout_ms exceeded"}
    return {str(s): _json({"$ref": "#/components/schemas/Error"}, reasons[s]) for s in statuses}


def openapi_document(config: ServerConfig, model: Model | None, auth: bool) -> dict[str, Any]:
    row = model.describe_input_schema() if model is not None else None
    rows = {"type": "array", "items": row or {"type": "array"}}
    score_request: dict[str, Any] = {"oneOf": [
        {"type": "object", "required": ["data"], "properties": {"data": rows}},
        {"type": "object", "required": ["input_data"], "properties": {"input_data": {
            "type": "object", "required": ["data"],
            "properties": {"columns": {"type": "array", "items": {"type": "string"}}, "data": rows}}}},
    ]}
    if model is not None and model.flavor == "python":
        score_request = {"description": "passed to score.py's run() as the raw request text"}
    infer_request = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}
    if model is not None:
        infer_request["description"] = "inputs: " + ", ".join(
            f"{t.name} {t.datatype} {list(t.shape)}" for t in model.inputs)
    infer_response = {"type": "object", "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR}}}
    scoring_errors = _errors(400, 401, 413, 429, 500, 503, 504)
    name = config.model_name
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": f"{name} (version {config.model_version}) scoring service", "version": __version__},
        "paths": {
            "/score": {"post": {
                "summary": "Score rows (Azure ML style)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": score_request}}},
                "responses": {"200": _json({"type": "object", "properties": {"predictions": {"type": "array"}}}),
                              **scoring_errors}}},
            "/invocations": {"post": {
                "summary": "Score in MLflow's scoring-server formats",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "type": "object", "minProperties": 1,
                        "description": "exactly one of dataframe_split, dataframe_records, instances, inputs",
                        "properties": {key: {} for key in FORMATS}}},
                    "text/csv": {"schema": {"type": "string", "description": "a header row of column names"}}}},
                "responses": {"200": _json({"type": "object", "properties": {"predictions": {"type": "array"}}}),
                              **scoring_errors, **_errors(415)}}},
            f"/v2/models/{name}/infer": {"post": {
                "summary": "Open Inference Protocol v2 inference",
                "requestBody": {"required": True, "content": {"application/json": {"schema": infer_request}}},
                "responses": {"200": _json(infer_response), **scoring_errors, **_errors(404)}}},
            f"/v2/models/{name}": {"get": {"summary": "Model metadata (OIP v2)",
                                           "responses": {"200": _json({"type": "object"}), **_errors(404, 503)}}},
            f"/v2/models/{name}/ready": {"get": {"summary": "Model readiness",
                                                 "responses": {"200": _json({"type": "object"}), **_errors(503)}}},
            "/v2": {"get": {"summary": "Server metadata", "responses": {"200": _json({"type": "object"})}}},
            "/v2/health/live": {"get": {"summary": "Liveness (no auth)", "security": [],
                                        "responses": {"200": _json({"type": "object"})}}},
            "/v2/health/ready": {"get": {"summary": "Readiness (no auth)", "security": [],
                                         "responses": {"200": _json({"type": "object"}), **_errors(503)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (no auth)", "security": [],
                                 "responses": {"200": {"description": "text exposition format"}}}},
        },
        "components": {"schemas": {"Error": _ERROR}},
    }
    if auth:
        document["components"]["securitySchemes"] = {"key": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"key": []}]
    return document
