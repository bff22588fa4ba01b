"""`POST /v1/tools/{name}`: call a core tool directly, without a model (control-plane exec,
and everything the `managed` execution mode needs)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from runtime.api.errors import bad_request, not_found
from runtime.api.responses import json_data
from runtime.api.routing import Enveloped, RouteTable
from runtime.api.schemas import ToolInvocation
from runtime.api.state import get_state
from runtime.api.validation import read_json
from tools.base import TOOL_REGISTRY, core_tool_names


async def call_tool(request: web.Request) -> web.Response:
    state = get_state(request)
    manager = state.require_manager()
    name = request.match_info["name"]
    available = core_tool_names()
    if name not in available:
        raise not_found(
            f"no core tool named {name!r}; available: {', '.join(available) or '(none)'}",
            code="unknown_tool",
        )
    args = await read_json(request, allow_empty=True)
    if not isinstance(args, dict):
        raise bad_request(
            f"the body must be a JSON object of {name}'s arguments", code="invalid_json"
        )
    started = time.perf_counter()
    result = await manager.call_tool(name, args)
    seconds = time.perf_counter() - started
    state.metrics.tool_call_finished(name, seconds, result.is_error)
    if result.is_error and result.data.get("code") == "invalid_arguments":
        raise bad_request(result.output, code="invalid_arguments")
    data = {k: v for k, v in result.data.items() if k != "duration_ms"}
    invocation = ToolInvocation.model_validate(
        {
            "tool": name,
            "output": result.output,
            "isError": result.is_error,
            "data": data,
            "durationMs": float(result.data.get("duration_ms", round(seconds * 1000, 3))),
        }
    )
    return json_data(invocation)


def tool_arguments_schema() -> dict[str, Any]:
    """The union of every core tool's argument schema (the path's `name` picks one)."""
    specs = [TOOL_REGISTRY[name].spec() for name in core_tool_names()]
    return {
        "description": "the tool's arguments; each tool's schema is listed under "
        "`x-tool-schemas` and in `anyOf`",
        "type": "object",
        "anyOf": [{"title": spec["name"], **spec["input_schema"]} for spec in specs],
        "x-tool-schemas": {spec["name"]: spec["input_schema"] for spec in specs},
    }


def add_routes(table: RouteTable) -> None:
    table.add(
        "POST",
        "/v1/tools/{name}",
        call_tool,
        summary="Invoke a core tool on the workspace without a model",
        description="The body is the tool's arguments, e.g. `POST /v1/tools/exec_command "
        '{"cmd": "ls", "login": false}`. Invalid arguments are a 400; a tool that ran and '
        "failed answers 200 with `isError: true` and the message the model would read.",
        tag="tools",
        body_schema=tool_arguments_schema,
        body_required=False,
        response=Enveloped(ToolInvocation),
        errors=(400, 404),
    )
