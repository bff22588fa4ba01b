"""`/openapi.json`, generated from the route table and the pydantic models the handlers
validate with (OpenAPI 3.1, whose schemas are JSON Schema: pydantic's output as is)."""

from __future__ import annotations

import re
from typing import Any, cast

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from runtime.api.routing import Enveloped, Operation, Response, RouteTable
from runtime.api.schemas import Envelope, ErrorEnvelope, ListEnvelope

REF_TEMPLATE = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{(\w+)\}")

ERROR_DESCRIPTIONS = {
    400: "Invalid request (the message names the field and what is allowed)",
    401: "Missing or invalid API token",
    403: "Forbidden (e.g. a path outside the workspace)",
    404: "Not found",
    409: "Conflict with the current state (e.g. a control on a finished run)",
    413: "Request body over the daemon's limit",
    426: "Upgrade required: the route is a WebSocket",
    424: "The model the request needed failed (e.g. the summary request of a compaction)",
    429: "Too many runs: the queue is full",
    502: "An upstream the daemon depends on (the Tool Hub) could not be asked",
    503: "Starting or shutting down",
}

SSE_DESCRIPTION = (
    "text/event-stream: frames `id: <n>\\nevent: <type>\\ndata: <event JSON>\\n\\n`, a "
    "`retry:` line once, `: ping` comments while quiet; the stream ends after `complete`. "
    "Each `data` line is one event object (see the Event* schemas)."
)


def documented(response: Response) -> type[BaseModel]:
    """The model a response body is documented with (an `Enveloped` one's envelope)."""
    if isinstance(response, Enveloped):
        generic = ListEnvelope if response.page else Envelope
        return cast("type[BaseModel]", generic[response.model])
    return response


def build_openapi(table: RouteTable, *, version: str) -> dict[str, Any]:
    keyed: list[tuple[Any, Any]] = []
    for op in table.operations:
        if op.body is not None:
            keyed.append((op.body, "validation"))
        if op.response is not None:
            keyed.append((documented(op.response), "serialization"))
        keyed.extend((documented(model), "serialization") for _, model in op.also.values())
    keyed.append((ErrorEnvelope, "serialization"))
    keyed.extend((model, "serialization") for model in _event_models())
    keyed = list(dict.fromkeys(keyed))
    refs, top = models_json_schema(keyed, ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas.update(_event_schemas(refs))

    paths: dict[str, dict[str, Any]] = {}
    for op in table.operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentd",
            "version": version,
            "description": "The in-sandbox agent runtime daemon: agents, runs, event "
            "streams, threads, workspace files and direct tool calls.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearerAuth": []}, {"apiKeyAuth": []}],
        "tags": [{"name": t} for t in dict.fromkeys(op.tag for op in table.operations)],
    }


def _event_models() -> list[type[BaseModel]]:
    from runtime.events import PAYLOAD_MODELS

    return list(PAYLOAD_MODELS.values())


def _event_schemas(refs: dict[Any, Any]) -> dict[str, Any]:
    """`Event` (the JSON of one event: the envelope plus the payload its `type` selects) and
    `EventFrame` (one SSE frame carrying it, in the OpenAPI 3.2 `itemSchema` convention that
    3.1 tools read from `schema`)."""
    from runtime.events import PAYLOAD_MODELS

    by_type = [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": refs[(model, "serialization")],
        }
        for kind, model in PAYLOAD_MODELS.items()
    ]
    event = {
        "title": "Event",
        "description": "One run event: `{id, runId, threadId, type, ts}` plus the payload of "
        "its type (docs/design.md, Events). `id` is per run, strictly increasing from 1.",
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "runId": {"type": "string"},
            "threadId": {"type": ["string", "null"]},
            "type": {"type": "string", "enum": list(PAYLOAD_MODELS)},
            "ts": {"type": "string", "description": "RFC 3339"},
        },
        "required": ["id", "runId", "threadId", "type", "ts"],
        "allOf": by_type,
    }
    frame = {
        "title": "EventFrame",
        "description": SSE_DESCRIPTION,
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string", "enum": list(PAYLOAD_MODELS)},
            "retry": {"type": "integer", "minimum": 0},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF_TEMPLATE.format(model="Event")},
            },
        },
    }
    return {"Event": event, "EventFrame": frame}


def _ref(refs: dict[Any, Any], model: type[BaseModel], mode: str) -> dict[str, Any]:
    return dict(refs[(model, mode)])


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        spec["description"] = op.description
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    if op.query is not None:
        params.extend(_query_params(op.query))
    if op.sse and op.method == "GET":
        params.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
                "description": "resume after this event id (wins over ?after=)",
            }
        )
    if params:
        spec["parameters"] = params
    if op.body is not None or op.body_schema is not None:
        schema = _ref(refs, op.body, "validation") if op.body else op.body_schema()  # type: ignore[misc]
        spec["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schema}},
        }
    if op.public:
        spec["security"] = []
    spec["responses"] = _responses(op, refs)
    return spec


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if description:
            param["description"] = description
        params.append(param)
    return params


def _responses(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    headers = {
        name: {"description": text, "schema": {"type": "string"}}
        for name, text in {**op.headers, "X-Request-ID": "the request's id"}.items()
    }
    if op.websocket:
        return {
            "101": {
                "description": "Switching Protocols: the WebSocket is open",
                "headers": headers,
            },
            **_error_responses(op, refs, headers),
        }
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {
            "schema": _ref(refs, documented(op.response), "serialization")
        }
    elif not op.sse:
        plain = {"type": "object"} if op.content_type == "application/json" else {"type": "string"}
        content[op.content_type] = {"schema": plain}
    if op.sse:
        content["text/event-stream"] = {"schema": {"$ref": REF_TEMPLATE.format(model="EventFrame")}}
    ok: dict[str, Any] = {"description": "OK" if op.status == 200 else "Created"}
    if content:
        ok["content"] = content
    ok["headers"] = headers
    responses: dict[str, Any] = {str(op.status): ok}
    if op.status == 201:  # upserts answer 200 when nothing new was created
        responses["200"] = {**ok, "description": "OK"}
    if op.no_content is not None:
        responses["204"] = {"description": op.no_content, "headers": headers}
    for code, (when, model) in op.also.items():
        responses[str(code)] = {
            "description": when,
            "content": {
                "application/json": {"schema": _ref(refs, documented(model), "serialization")}
            },
            "headers": headers,
        }
    responses.update(_error_responses(op, refs, headers))
    return responses


def _error_responses(
    op: Operation, refs: dict[Any, Any], headers: dict[str, Any]
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    error = {
        "content": {"application/json": {"schema": _ref(refs, ErrorEnvelope, "serialization")}},
        "headers": {"X-Request-ID": headers["X-Request-ID"]},
    }
    codes = set(op.errors)
    if not op.public:
        codes.add(401)
    if op.body is not None or op.body_schema is not None:
        codes |= {400, 413}
    codes.add(400)  # unknown query parameters, on every route
    if op.path.startswith("/v1/"):
        codes.add(503)
    for code in sorted(codes):
        responses[str(code)] = {"description": ERROR_DESCRIPTIONS.get(code, "Error"), **error}
    responses["default"] = {"description": "Unexpected error", **error}
    return responses
