"""An agent's custom tools (`{name, description, inputSchema, invokeUrl}`) as `HttpTool`s
under the daemon's settings, and the checks `POST /v1/agents` makes before storing them.

Custom tools are refused unless the operator allows their URLs: `custom_tool_url_prefixes`
(`--custom-tool-url-prefixes`, `AGENTD_CUSTOM_TOOL_URL_PREFIXES`) is empty by default, so a
daemon calls no URL an agent definition names until told which ones it may call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from runtime.config import Settings
from runtime.runs.machinery import also_load
from tools.base import Tool, core_tool_names

if TYPE_CHECKING:
    # runtime.agents loads with the /v1 API, after start-up (runtime.api.v1)
    from runtime.agents import AgentSpec, CustomToolSpec
    from tools.http_tool import HttpToolConfig, UrlAllowList


class CustomToolProblem(NamedTuple):
    """Why an agent's custom tools cannot be accepted; `code` is the API error code. (A named
    tuple: start-up imports this module for `custom_tool_factory`, and defining a frozen
    dataclass costs it ~3 M instructions, a named tuple ~0.8 M.)"""

    code: str
    message: str


def http_tool_config(settings: Settings) -> HttpToolConfig:
    from tools.http_tool import HttpToolConfig

    return HttpToolConfig(
        allow_list=settings.custom_tool_allow_list, timeout=settings.custom_tool_timeout
    )


def custom_tool_factory(settings: Settings) -> Callable[[CustomToolSpec], Tool]:
    """What `RunManager(custom_tool_factory=...)` takes: one `HttpTool` per custom tool.

    `tools.http_tool` is part of the run machinery (`runtime.runs.machinery`), loaded off the
    event loop before a run builds its tools or a /v1 request (an upsert checking an agent's
    custom tools) is handled: start-up does not import it. When custom tools are allowed at
    all, jsonschema (~0.2 s to import), which checks their schemas and arguments, joins the
    machinery: not imported at start-up, nor by the first call or upsert on the event
    loop."""
    if settings.custom_tool_url_prefixes.strip():
        also_load("jsonschema")
    config: HttpToolConfig | None = None

    def build(spec: CustomToolSpec) -> Tool:
        from tools.http_tool import HttpTool

        nonlocal config
        if config is None:
            config = http_tool_config(settings)
        return HttpTool.create(
            name=spec.name,
            description=spec.description,
            input_schema=spec.input_schema,
            invoke_url=spec.invoke_url,
            config=config,
        )

    return build


def custom_tool_problem(spec: AgentSpec, allow_list: UrlAllowList) -> CustomToolProblem | None:
    """The first reason the agent's custom tools cannot be stored: a name that is a core
    tool's, an invokeUrl outside the allow-list, or an inputSchema that is not JSON Schema."""
    custom = spec.custom_tools()
    if not custom:
        return None
    core = set(core_tool_names())
    clashing = [tool.name for tool in custom if tool.name in core]
    if clashing:
        return CustomToolProblem(
            "tool_name_conflict",
            f"custom tool name(s) {', '.join(clashing)} are core tool names; give the custom "
            "tool another name (to enable the core tool, list its name as a string)",
        )
    refused = [tool for tool in custom if not allow_list.allows(tool.invoke_url)]
    if refused:
        named = "; ".join(f"{tool.name} → {tool.invoke_url}" for tool in refused)
        return CustomToolProblem(
            "custom_tool_url_not_allowed",
            f"custom tool invokeUrl not allowed: {named}. This daemon allows "
            f"{allow_list.describe()}; its operator sets the allowed URL prefixes with "
            "--custom-tool-url-prefixes or AGENTD_CUSTOM_TOOL_URL_PREFIXES",
        )
    from tools.http_tool import schema_problem

    for tool in custom:
        problem = schema_problem(tool.input_schema)
        if problem is not None:
            return CustomToolProblem(
                "invalid_input_schema",
                f"custom tool {tool.name}: inputSchema is not a valid JSON Schema: {problem}",
            )
    return None
