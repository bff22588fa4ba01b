"""Agents: upsert (versioned), list, get, delete, versions, rollback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from runtime.agents import AgentRecord, AgentSpec
from runtime.api.errors import ApiError, bad_request, not_found
from runtime.api.responses import json_data, json_list
from runtime.api.routing import Enveloped, RouteTable
from runtime.api.schemas import (
    AgentGetQuery,
    AgentOut,
    AgentsQuery,
    AgentVersionsQuery,
    Deleted,
    RollbackRequest,
    UpsertResult,
)
from runtime.api.state import get_state
from runtime.api.validation import parse_body, parse_query, read_object, validate
from runtime.config import Settings

if TYPE_CHECKING:
    from runtime.tool_hub import ToolHub
from tools.base import core_tool_names


def agent_endpoint(settings: Settings, slug: str) -> str:
    """The agent's run URL: absolute when the daemon knows its public base URL."""
    return f"{settings.public_url or ''}/v1/agents/{slug}/run"


async def check_tool_names(spec: AgentSpec, hub: ToolHub | None) -> None:
    """Every name in `tools` is a core tool, `web_search`, or (with a Tool Hub) a tool the
    hub has; a 400 names the others (a 502 when the hub cannot be asked)."""
    unknown = spec.unknown_tools()
    if unknown and hub is not None:
        from runtime.tool_hub import ToolHubError

        missing = []
        for slug in unknown:
            try:
                if await hub.describe(slug) is None:
                    missing.append(slug)
            except ToolHubError as exc:
                raise ApiError(502, "tool_hub_unavailable", str(exc)) from exc
        unknown = missing
    if unknown:
        where = "core tools or Tool Hub tools" if hub is not None else "core tools"
        raise bad_request(
            f"unknown tool(s): {', '.join(unknown)} (not {where}); core tools are: "
            f"{', '.join(core_tool_names()) or '(none installed)'}, and web_search. Custom "
            "tools are objects {name, description, inputSchema, invokeUrl}",
            code="unknown_tools",
        )


def check_spec(spec: AgentSpec) -> None:
    """What pydantic cannot know: the model id routes somewhere and takes the settings."""
    from runtime.providers.registry import (  # no SDK imports
        hosted_tool_problem,
        unsupported_settings,
    )

    model: Any = spec.model if isinstance(spec.model, str) else spec.model.model_dump()
    try:
        unsupported = unsupported_settings(
            model, temperature=spec.temperature, thinking_budget=spec.thinking_budget
        )
        hosted = hosted_tool_problem(model, spec.hosted_tools())
    except ValueError as exc:
        raise bad_request(str(exc), code="unknown_model") from exc
    if hosted is not None:
        raise bad_request(hosted, code="unsupported_tool")
    if unsupported:
        raise bad_request(
            "; ".join(problem.message() for problem in unsupported),
            code="unsupported_setting",
        )


async def agent_record(
    request: web.Request, slug_or_id: str, version: int | None = None
) -> AgentRecord:
    """The live agent named by slug or id (`agt_…`), or a 404 saying how to create it."""
    store = get_state(request).store
    record = await store.get_agent(slug_or_id, version)
    if record is None:
        if version is not None and await store.get_agent(slug_or_id):
            raise not_found(
                f"agent {slug_or_id!r} has no version {version}", code="version_not_found"
            )
        raise not_found(f"agent {slug_or_id!r} does not exist; create it with POST /v1/agents")
    return record


async def agent_slug(request: web.Request, slug_or_id: str) -> str:
    """The slug an `agent` filter means: an id is resolved (404 if unknown), a slug is kept
    as given (runs and threads of a deleted agent still carry it)."""
    if slug_or_id.startswith("agt_"):
        return (await agent_record(request, slug_or_id)).slug
    return slug_or_id


def check_custom_tools(spec: AgentSpec, settings: Settings) -> None:
    """Custom tools: names apart from the core tools', URLs the daemon allows, real schemas."""
    from runtime.custom_tools import custom_tool_problem  # aiohttp client, jsonschema: lazily

    if not spec.declared_custom_tools():
        return
    problem = custom_tool_problem(spec, settings.custom_tool_allow_list)
    if problem is not None:
        raise bad_request(problem.message, code=problem.code)


def _spec_context(settings: Settings) -> dict[str, Any]:
    return {"default_model": settings.default_model}


async def _store_spec(request: web.Request, spec: AgentSpec, *, patch: bool) -> web.Response:
    state = get_state(request)
    settings = state.settings
    check_spec(spec)
    check_custom_tools(spec, settings)
    await check_tool_names(spec, state.require_manager().tool_hub)
    record, action = await get_state(request).store.upsert_agent(spec)
    result = UpsertResult(
        id=record.id,
        slug=record.slug,
        action="created" if action == "created" else "updated",
        version=record.version,
        sandbox_id=settings.sandbox_id if spec.execution_mode == "in_sandbox" else None,
        target_device_id=spec.target_device_id,
        endpoint=agent_endpoint(settings, record.slug),
    )
    return json_data(result, status=201 if action == "created" and not patch else 200)


async def upsert_agent(request: web.Request) -> web.Response:
    settings = get_state(request).settings
    spec = await parse_body(request, AgentSpec, context=_spec_context(settings))
    return await _store_spec(request, spec, patch=False)


async def patch_agent(request: web.Request) -> web.Response:
    state = get_state(request)
    record = await agent_record(request, request.match_info["slugOrId"])
    changes = await read_object(request)
    if "slug" in changes and changes["slug"] != record.slug:
        raise bad_request(
            f"an agent's slug cannot change (this one is {record.slug!r}); create a new agent "
            "with POST /v1/agents instead",
            code="validation_error",
        )
    current = record.spec.model_dump(mode="json", by_alias=True)
    spec = validate(AgentSpec, {**current, **changes}, context=_spec_context(state.settings))
    return await _store_spec(request, spec, patch=True)


async def list_agents(request: web.Request) -> web.Response:
    query = parse_query(request, AgentsQuery)
    try:
        records, cursor = await get_state(request).store.list_agents(query.limit, query.cursor)
    except ValueError as exc:
        raise bad_request(str(exc), code="invalid_cursor") from exc
    return json_list([r.to_api() for r in records], has_more=cursor is not None, next_cursor=cursor)


async def get_agent(request: web.Request) -> web.Response:
    query = parse_query(request, AgentGetQuery)
    record = await agent_record(request, request.match_info["slugOrId"], query.version)
    return json_data(record.to_api())


async def delete_agent(request: web.Request) -> web.Response:
    record = await agent_record(request, request.match_info["slugOrId"])
    if not await get_state(request).store.delete_agent(record.slug):
        raise not_found(f"agent {record.slug!r} does not exist")
    return json_data(Deleted(id=record.id))


async def agent_versions(request: web.Request) -> web.Response:
    query = parse_query(request, AgentVersionsQuery)
    record = await agent_record(request, request.match_info["slugOrId"])
    store = get_state(request).store
    try:
        versions, cursor = await store.list_agent_versions(record.slug, query.limit, query.cursor)
    except ValueError as exc:
        raise bad_request(str(exc), code="invalid_cursor") from exc
    return json_list(
        [r.to_api() for r in versions], has_more=cursor is not None, next_cursor=cursor
    )


async def rollback_agent(request: web.Request) -> web.Response:
    body = await parse_body(request, RollbackRequest)
    slug = (await agent_record(request, request.match_info["slugOrId"])).slug
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


def _patch_schema() -> dict[str, Any]:
    from runtime.api.openapi import REF_TEMPLATE  # its nested models are the POST body's

    schema = AgentSpec.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
    schema.pop("required", None)
    schema.pop("$defs", None)
    schema["title"] = "AgentPatch"
    schema["description"] = "Any subset of an agent's fields (the slug cannot change)."
    return schema


def add_routes(table: RouteTable) -> None:
    tag = "agents"
    table.add(
        "POST",
        "/v1/agents",
        upsert_agent,
        summary="Create or update an agent (a changed definition is a new version)",
        description="201 when the slug is new, 200 otherwise (`action` says whether the "
        "definition changed; an identical definition answers `updated` with the current "
        "version). A missing `model` is the daemon's --default-model. Unknown core tool "
        "names or model ids are refused with a 400 "
        "that names them, and so are custom tools named like a core tool, whose invokeUrl "
        "the daemon's custom_tool_url_prefixes do not allow (none by default), or whose "
        "inputSchema is not a valid JSON Schema.",
        tag=tag,
        body=AgentSpec,
        response=Enveloped(UpsertResult),
        status=201,
        errors=(400, 502),
    )
    table.add(
        "PATCH",
        "/v1/agents/{slugOrId}",
        patch_agent,
        summary="Change some fields of an agent (a new version when they change anything)",
        description="The body is any subset of the agent's fields; the others keep their "
        "current values. The result is checked like a POST /v1/agents body.",
        tag=tag,
        body_schema=_patch_schema,
        response=Enveloped(UpsertResult),
        errors=(400, 404, 502),
    )
    table.add(
        "GET",
        "/v1/agents",
        list_agents,
        summary="List agents (current versions)",
        tag=tag,
        query=AgentsQuery,
        response=Enveloped(AgentOut, page=True),
        errors=(400,),
    )
    table.add(
        "GET",
        "/v1/agents/{slugOrId}",
        get_agent,
        summary="Get an agent (or one of its past versions with ?version=)",
        tag=tag,
        query=AgentGetQuery,
        response=Enveloped(AgentOut),
        errors=(400, 404),
    )
    table.add(
        "DELETE",
        "/v1/agents/{slugOrId}",
        delete_agent,
        summary="Delete an agent and its versions (its runs stay in history)",
        tag=tag,
        response=Enveloped(Deleted),
        errors=(400, 404),
    )
    table.add(
        "GET",
        "/v1/agents/{slugOrId}/versions",
        agent_versions,
        summary="Every version of an agent, oldest first",
        tag=tag,
        query=AgentVersionsQuery,
        response=Enveloped(AgentOut, page=True),
        errors=(400, 404),
    )
    table.add(
        "POST",
        "/v1/agents/{slugOrId}/rollback",
        rollback_agent,
        summary="Make a past version current again (as a new version equal to it)",
        tag=tag,
        body=RollbackRequest,
        response=Enveloped(AgentOut),
        errors=(400, 404),
    )
