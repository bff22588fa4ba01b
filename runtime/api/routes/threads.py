"""Threads: the conversations runs append to."""

from __future__ import annotations

from aiohttp import web

from runtime.api.errors import ApiError, not_found
from runtime.api.responses import json_data, json_list
from runtime.api.routing import RouteTable
from runtime.api.schemas import (
    Deleted,
    Envelope,
    ListEnvelope,
    ThreadDetail,
    ThreadOut,
    ThreadsQuery,
)
from runtime.api.state import get_state
from runtime.api.validation import parse_query


async def list_threads(request: web.Request) -> web.Response:
    query = parse_query(request, ThreadsQuery)
    threads = await get_state(request).store.list_threads(agent=query.agent)
    return json_list([t.model_dump(mode="json", by_alias=True) for t in threads])


async def get_thread(request: web.Request) -> web.Response:
    store = get_state(request).store
    thread_id = request.match_info["thread_id"]
    thread = await store.get_thread(thread_id)
    if thread is None:
        raise not_found(f"thread {thread_id!r} does not exist")
    data = thread.model_dump(mode="json", by_alias=True)
    data["messages"] = [m.model_dump(mode="json") for m in await store.thread_messages(thread_id)]
    return json_data(data)


async def delete_thread(request: web.Request) -> web.Response:
    state = get_state(request)
    manager = state.require_manager()
    thread_id = request.match_info["thread_id"]
    if await manager.store.get_thread(thread_id) is None:
        raise not_found(f"thread {thread_id!r} does not exist")
    active = [run.run_id for run in manager.active_runs() if run.thread_id == thread_id]
    if active:
        raise ApiError(
            409,
            "thread_busy",
            f"thread {thread_id!r} has an active run ({active[0]}); cancel it first with "
            f"POST /v1/runs/{active[0]}/cancel",
        )
    await manager.release_thread(thread_id)
    if not await manager.store.delete_thread(thread_id):
        raise not_found(f"thread {thread_id!r} does not exist")
    return json_data(Deleted(id=thread_id))


def add_routes(table: RouteTable) -> None:
    tag = "threads"
    table.add(
        "GET",
        "/v1/run/threads",
        list_threads,
        summary="List threads (optionally of one agent)",
        tag=tag,
        query=ThreadsQuery,
        response=ListEnvelope[ThreadOut],
    )
    table.add(
        "GET",
        "/v1/run/threads/{thread_id}",
        get_thread,
        summary="A thread with its messages",
        tag=tag,
        response=Envelope[ThreadDetail],
        errors=(404,),
    )
    table.add(
        "DELETE",
        "/v1/run/threads/{thread_id}",
        delete_thread,
        summary="Delete a thread (and stop what its last run left running)",
        tag=tag,
        response=Envelope[Deleted],
        errors=(404, 409),
    )
