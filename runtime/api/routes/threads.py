"""Threads: the conversations runs append to."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.api.errors import ApiError, bad_request, not_found
from runtime.api.responses import json_data, json_data_off_loop, json_list
from runtime.api.routes.agents import agent_slug
from runtime.api.routing import Enveloped, RouteTable
from runtime.api.schemas import (
    CompactionOut,
    Deleted,
    EmptyBody,
    ThreadDetail,
    ThreadEventOut,
    ThreadEventsQuery,
    ThreadOut,
    ThreadQuery,
    ThreadsQuery,
    ThreadStreamQuery,
    UsageOut,
)
from runtime.api.state import ApiState, get_state
from runtime.api.thread_stream import SLOW_CLIENT, ThreadStream
from runtime.api.validation import parse_body, parse_query
from runtime.runs.manager import DELETING
from runtime.store import ThreadRecord


async def list_threads(request: web.Request) -> web.Response:
    query = parse_query(request, ThreadsQuery)
    agent = None if query.agent is None else await agent_slug(request, query.agent)
    try:
        threads, cursor = await get_state(request).store.list_threads(
            agent=agent, limit=query.limit, cursor=query.cursor
        )
    except ValueError as exc:
        raise bad_request(str(exc), code="invalid_cursor") from exc
    return json_list(
        [t.model_dump(mode="json", by_alias=True) for t in threads],
        has_more=cursor is not None,
        next_cursor=cursor,
    )


async def _scoped_thread(request: web.Request) -> ThreadRecord:
    """The thread of the path, scoped to `?agent=` when given: another agent's thread is a
    404, as if it did not exist."""
    query = parse_query(request, ThreadQuery)
    thread_id = request.match_info["thread_id"]
    thread = await get_state(request).store.get_thread(thread_id)
    if thread is not None and query.agent is not None:
        if thread.agent != await agent_slug(request, query.agent):
            thread = None
    if thread is None:
        whose = "" if query.agent is None else f" for agent {query.agent!r}"
        raise not_found(f"thread {thread_id!r} does not exist{whose}")
    return thread


async def get_thread(request: web.Request) -> web.Response:
    store = get_state(request).store
    thread = await _scoped_thread(request)
    messages = await store.thread_messages(thread.id)

    def body() -> dict[str, Any]:
        data = thread.model_dump(mode="json", by_alias=True)
        data["messages"] = [m.model_dump(mode="json") for m in messages]
        return data

    return await json_data_off_loop(body)


async def delete_thread(request: web.Request) -> web.Response:
    state = get_state(request)
    manager = state.require_manager()
    thread_id = (await _scoped_thread(request)).id
    active = manager.active_run_of(thread_id)
    if active is not None:
        raise ApiError(
            409,
            "thread_busy",
            f"thread {thread_id!r} has an active run ({active}); cancel it first with "
            f"POST /v1/runs/{active}/cancel",
        )
    # Held while it is deleted: a compaction holding it makes this a 409 (thread_busy), and
    # no compaction or run takes it until it is gone.
    async with manager.holding_thread(thread_id, DELETING):
        await manager.release_thread(thread_id)
        # The rollout first: a thread whose record is gone would otherwise load from it again.
        await manager.thread_events.delete(thread_id)
        if not await manager.store.delete_thread(thread_id):
            raise not_found(f"thread {thread_id!r} does not exist")
    return json_data(Deleted(id=thread_id))


async def _thread(state: ApiState, thread_id: str) -> ThreadRecord:
    """The thread, loaded from its rollout file if only the workspace knows it; 404 if
    neither does."""
    thread = await state.require_manager().ensure_thread(thread_id)
    if thread is None:
        raise not_found(f"thread {thread_id!r} does not exist")
    return thread


async def thread_events(request: web.Request) -> web.Response:
    query = parse_query(request, ThreadEventsQuery)
    state = get_state(request)
    thread = await _thread(state, request.match_info["thread_id"])
    events = await state.store.thread_events_after(thread.id, query.after, query.limit + 1)
    page = events[: query.limit]
    return json_list(
        [e.to_dict() for e in page],
        has_more=len(events) > query.limit,
        next_cursor=str(page[-1].sequence) if page else None,
    )


async def thread_stream(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, ThreadStreamQuery)
    state = get_state(request)
    manager = state.require_manager()
    thread = await _thread(state, request.match_info["thread_id"])
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise ApiError(
            426,
            "upgrade_required",
            f"{request.path} is a WebSocket: connect with `Upgrade: websocket` (GET "
            f"/v1/threads/{thread.id}/events reads the persisted events over plain HTTP)",
            headers={"Upgrade": "websocket"},
        )
    stream = ThreadStream(
        request,
        thread,
        await manager.thread_events.log(thread.id),
        manager,
        after=query.after or 0,
        heartbeat=state.settings.sse_ping_interval,
    )
    return await stream.run()


async def compact_thread(request: web.Request) -> web.Response:
    await parse_body(request, EmptyBody, allow_empty=True)  # as the run controls: none, or {}
    manager = get_state(request).require_manager()
    thread_id = request.match_info["thread_id"]
    done = await manager.compact_thread(thread_id)
    part = done.record
    return json_data(
        CompactionOut(
            thread_id=thread_id,
            summarized=part.summarized,
            tokens_before=part.tokens_before,
            tokens_after=part.tokens_after,
            messages_replaced=part.messages_replaced,
            usage=UsageOut.model_validate(done.usage.model_dump()),
        )
    )


def add_routes(table: RouteTable) -> None:
    tag = "threads"
    table.add(
        "GET",
        "/v1/run/threads",
        list_threads,
        summary="List threads (optionally of one agent)",
        tag=tag,
        query=ThreadsQuery,
        response=Enveloped(ThreadOut, page=True),
        errors=(400, 404),
    )
    table.add(
        "GET",
        "/v1/run/threads/{thread_id}",
        get_thread,
        summary="A thread with its messages",
        tag=tag,
        query=ThreadQuery,
        response=Enveloped(ThreadDetail),
        errors=(400, 404),
    )
    table.add(
        "DELETE",
        "/v1/run/threads/{thread_id}",
        delete_thread,
        summary="Delete a thread (and stop what its last run left running)",
        tag=tag,
        query=ThreadQuery,
        response=Enveloped(Deleted),
        errors=(400, 404, 409),
    )
    table.add(
        "GET",
        "/v1/threads/{thread_id}/events",
        thread_events,
        summary="The thread's persisted events after a sequence (cursor)",
        description="Persisted thread events (`sequence` per thread across its runs, no "
        "gaps) with sequence > `after`, oldest first; `meta.nextCursor` is the last sequence "
        "returned, `meta.hasMore` whether more follow. A thread only the workspace's rollout "
        "file knows is loaded from it.",
        tag=tag,
        query=ThreadEventsQuery,
        response=Enveloped(ThreadEventOut, page=True),
        errors=(400, 404),
    )
    table.add(
        "GET",
        "/v1/threads/{thread_id}/stream",
        thread_stream,
        summary="Follow the thread over a WebSocket (snapshot, live events, controls)",
        description="Upgrades to a WebSocket. First frame `{type: snapshot, protocol_version: "
        "1, thread, events, activeRunId}`, then every persisted and live event of the "
        "thread's runs as it happens. Client frames: `{type: ack, sequence}`, `{type: "
        "pause|resume|cancel, runId?}`, `{type: input, text, runId?}`, answered with "
        "`{type: control_result, control, runId, ok}` or `{type: error, code, message}`. A "
        f"client that reads too slowly is closed with code {SLOW_CLIENT}; reconnect with "
        "`?after=`. Browsers authenticate with `?access_token=`.",
        tag=tag,
        query=ThreadStreamQuery,
        websocket=True,
        errors=(400, 404, 426),
    )
    table.add(
        "POST",
        "/v1/run/threads/{thread_id}/compact",
        compact_thread,
        summary="Compact a thread between runs: summarise its older turns with its agent's model",
        tag=tag,
        body=EmptyBody,
        body_required=False,
        response=Enveloped(CompactionOut),
        errors=(400, 404, 409, 424),
    )
