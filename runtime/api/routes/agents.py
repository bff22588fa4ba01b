"""Agents: upsert (versioned), list, get, delete, versions, rollback."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.agents import AgentRecord, AgentSpec
from runtime.api.errors import ApiError, bad_request, not_found
from runtime.api.responses import json_data, json_list
from runtime.api.routing import RouteTable
from runtime.api.schemas import (
    AgentGetQuery,
    AgentOut,
    Deleted,
    Envelope,
    ListEnvelope,
    RollbackRequest,
    UpsertResult,
)
from runtime.api.state import get_state
from runtime.api.validation import parse_body, parse_query
from runtime.config import Settings
from tools.base import core_tool_names


def agent_endpoint(slug: str) -> str:
    return f"/v1/run/{slug}"


def check_spec(spec: AgentSpec) -> None:
    """What pydantic cannot know: tool names exist, the model id routes somewhere."""
    unknown = spec.unknown_tools()
    if unknown:
        raise bad_request(
            f"unknown tool(s): {', '.join(unknown)}; core tools are: "
            f"{', '.join(core_tool_names()) or '(none installed)'}. Custom tools are "
            "objects {name, description, inputSchema, invokeUrl}",
            code="unknown_tools",
        )
    from runtime.providers.registry import unsupported_settings  # no SDK imports

    model: Any = spec.model if isinstance(spec.model, str) else spec.model.model_dump()
    try:
        unsupported = unsupported_settings(
            model, temperature=spec.temperature, thinking_budget=spec.thinking_budget
        )
    except ValueError as exc:
        raise bad_request(str(exc), code="unknown_model") from exc
    if unsupported:
        raise bad_request(
            "; ".join(problem.message() for problem in unsupported),
            code="unsupported_setting",
        )


async def _record(request: web.Request, slug: str, version: int | None = None) -> AgentRecord:
    record = await get_state(request).store.get_agent(slug, version)
    if record is None:
        if version is not None and await get_state(request).store.get_agent(slug):
            raise not_found(f"agent {slug!r} has no version {version}", code="version_not_found")
        raise not_found(f"agent {slug!r} does not exist; create it with POST /v1/agents")
    return record


def check_custom_tools(spec: AgentSpec, settings: Settings) -> None:
    """Custom tools: names apart from the core tools', URLs the daemon allows, real schemas."""
    from runtime.custom_tools import custom_tool_problem  # aiohttp client, jsonschema: lazily

    if not spec.custom_tools():
        return
    problem = custom_tool_problem(spec, settings.custom_tool_allow_list)
    if problem is not None:
        raise bad_request(problem.message, code=problem.code)


async def upsert_agent(request: web.Request) -> web.Response:
    spec = await parse_body(request, AgentSpec)
    check_spec(spec)
    check_custom_tools(spec, get_state(request).settings)
    record, action = await get_state(request).store.upsert_agent(spec)
    result = UpsertResult(
        id=record.id,
        slug=record.slug,
        action=action,
        version=record.version,
        endpoint=agent_endpoint(record.slug),
    )
    return json_data(result, status=201 if action == "created" else 200)


async def list_agents(request: web.Request) -> web.Response:
    records = await get_state(request).store.list_agents()
    return json_list([r.to_api() for r in records])


async def get_agent(request: web.Request) -> web.Response:
    query = parse_query(request, AgentGetQuery)
    record = await _record(request, request.match_info["slug"], query.version)
    return json_data(record.to_api())


async def delete_agent(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    record = await _record(request, slug)
    if not await get_state(request).store.delete_agent(slug):
        raise not_found(f"agent {slug!r} does not exist")
    return json_data(Deleted(id=record.id))


async def agent_versions(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    await _record(request, slug)
    versions = await get_state(request).store.list_agent_versions(slug)
    return json_list([r.to_api() for r in versions])


async def rollback_agent(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    body = await parse_body(request, RollbackRequest)
    await _record(request, slug)
    try:
        record = await get_state(request).store.rollback_agent(slug, body.version)
    except KeyError:
        raise not_found(
            f"agent {slug!r} has no version {body.version}; see GET /v1/agents/{slug}/versions",
            code="version_not_found",
        ) from None
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    return json_data(record.to_api())


def add_routes(table: RouteTable) -> None:
    tag = "agents"
    table.add(
        "POST",
        "/v1/agents",
        upsert_agent,
        summary="Create or update an agent (a changed definition is a new version)",
        description="201 when the slug is new, 200 otherwise (`action` says whether the "
        "definition changed). Unknown core tool names or model ids are refused with a 400 "
        "that names them, and so are custom tools named like a core tool, whose invokeUrl "
        "the daemon's custom_tool_url_prefixes do not allow (none by default), or whose "
        "inputSchema is not a valid JSON Schema.",
        tag=tag,
        body=AgentSpec,
        response=Envelope[UpsertResult],
        errors=(400,),
    )
    table.add(
        "GET",
        "/v1/agents",
        list_agents,
        summary="List agents (current versions)",
        tag=tag,
        response=ListEnvelope[AgentOut],
    )
    table.add(
        "GET",
        "/v1/agents/{slug}",
        get_agent,
        summary="Get an agent (or one of its past versions with ?version=)",
        tag=tag,
        query=AgentGetQuery,
        response=Envelope[AgentOut],
        errors=(400, 404),
    )
    table.add(
        "DELETE",
        "/v1/agents/{slug}",
        delete_agent,
        summary="Delete an agent and its versions (its runs stay in history)",
        tag=tag,
        response=Envelope[Deleted],
        errors=(404,),
    )
    table.add(
        "GET",
        "/v1/agents/{slug}/versions",
        agent_versions,
        summary="Every version of an agent, oldest first",
        tag=tag,
        response=ListEnvelope[AgentOut],
        errors=(404,),
    )
    table.add(
        "POST",
        "/v1/agents/{slug}/rollback",
        rollback_agent,
        summary="Make a past version current again (as a new version equal to it)",
        tag=tag,
        body=RollbackRequest,
        response=Envelope[AgentOut],
        errors=(400, 404),
    )
