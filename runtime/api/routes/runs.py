"""Runs: start (SSE or JSON, and the legacy shapes), history, detail, the event stream, the
controls, fork."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.api.errors import bad_request
from runtime.api.legacy_runs import legacy_inputs
from runtime.api.responses import json_data, json_data_off_loop, json_list
from runtime.api.routes.agents import agent_slug
from runtime.api.routing import Enveloped, RouteTable
from runtime.api.schemas import (
    EmptyBody,
    EventsQuery,
    ForkRequest,
    ForkResult,
    InputRequest,
    LegacyRunRequest,
    LegacyRunResult,
    RunDetail,
    RunOut,
    RunRegistered,
    RunRequest,
    RunResult,
    RunsQuery,
)
from runtime.api.sse import EventStream, resume_point
from runtime.api.state import ApiState, get_state
from runtime.api.validation import parse_body, parse_query
from runtime.runs.run import Run
from runtime.store import RunRecord, Store

RUN_HEADERS = {"X-Run-ID": "the run's id", "X-Thread-ID": "the thread the run appends to"}


async def _watch_webhooks(state: ApiState, run: Run) -> None:
    spec = run.agent.spec
    if state.webhooks is not None and spec.webhook_url:
        await state.webhooks.watch(
            state.require_manager(), run.run_id, spec.webhook_url, list(spec.webhook_events)
        )


async def stream_run(
    request: web.Request, run_id: str, *, after: int = 0, headers: dict[str, str] | None = None
) -> web.StreamResponse:
    """The run's events as SSE, from `after` until its `complete` event."""
    state = get_state(request)
    manager = state.require_manager()
    metrics = state.metrics

    def on_frames(count: int) -> None:
        metrics.sse_events_sent += count

    stream = EventStream(
        request,
        retry_ms=state.settings.sse_retry_ms,
        ping_interval=state.settings.sse_ping_interval,
        headers=headers,
        on_frames=on_frames,
        frames=state.frames,
        feeds=state.feeds,
        feed_key=run_id,
    )
    metrics.sse_clients += 1
    try:
        return await stream.run(lambda last: manager.subscribe_batches(run_id, after=last), after)
    finally:
        metrics.sse_clients -= 1


def _run_headers(run: Run) -> dict[str, str]:
    headers = {"X-Run-ID": run.run_id}
    if run.thread_id is not None:
        headers["X-Thread-ID"] = run.thread_id
    return headers


async def start_run(request: web.Request) -> web.StreamResponse:
    state = get_state(request)
    body = await parse_body(request, RunRequest)
    state.check_accepting()
    manager = state.require_manager()
    run = await manager.start(
        body.agent,
        prompt=body.prompt,
        messages=[m.to_message() for m in body.messages] if body.messages else None,
        thread_id=body.thread_id,
        config=body.config,
        metadata=body.metadata,
    )
    await _watch_webhooks(state, run)
    if body.stream:
        return await stream_run(request, run.run_id, headers=_run_headers(run))
    if not body.wait:
        registered = RunRegistered(run_id=run.run_id, thread_id=run.thread_id)
        return json_data(registered, status=202, headers=_run_headers(run))
    record = await manager.wait(run.run_id)
    return json_data(_run_result(state, record), headers=_run_headers(run))


def _run_result(state: ApiState, record: RunRecord) -> RunResult:
    return RunResult.model_validate(
        {
            "runId": record.run_id,
            "status": record.status,
            "result": record.result,
            "usage": record.usage.model_dump(by_alias=True),
            "iterations": record.iterations,
            "threadId": record.thread_id,
            "executionMode": record.execution_mode or "in_sandbox",
            "sandboxId": state.settings.sandbox_id,
            "error": record.error,
        }
    )


async def legacy_run(request: web.Request) -> web.StreamResponse:
    state = get_state(request)
    slug = request.match_info.get("slug") or request.match_info["apiSlug"]
    body = await parse_body(request, LegacyRunRequest)
    state.check_accepting()
    manager = state.require_manager()
    inputs = await legacy_inputs(body, manager.workspace)
    metadata: dict[str, Any] = {"legacy": True}
    if body.mounts:
        metadata["mounts"] = body.mounts
    if body.params:
        metadata["params"] = body.params
    if inputs.warnings:
        metadata["warnings"] = inputs.warnings
    run = await manager.start(
        slug, prompt=inputs.prompt, messages=inputs.history, metadata=metadata
    )
    await _watch_webhooks(state, run)
    if body.stream:
        return await stream_run(request, run.run_id, headers=_run_headers(run))
    record = await manager.wait(run.run_id)
    complete: dict[str, Any] = {}
    last = await manager.store.last_event_id(run.run_id)
    for event in await manager.store.events_after(run.run_id, max(0, last - 1)):
        if event.type == "complete":
            complete = event.payload
    result = LegacyRunResult.model_validate(
        {
            "id": record.run_id,
            "status": record.status,
            "output": record.result,
            "devUrl": complete.get("devUrl"),
            "files": complete.get("files") or [],
            "usage": record.usage.model_dump(by_alias=True),
            "error": record.error,
            "warnings": inputs.warnings,
        }
    )
    return json_data(result, headers=_run_headers(run))


async def list_runs(request: web.Request) -> web.Response:
    query = parse_query(request, RunsQuery)
    manager = get_state(request).require_manager()
    agent = None if query.agent is None else await agent_slug(request, query.agent)
    try:
        records, cursor = await manager.list_runs(
            agent=agent, status=query.status, limit=query.limit, cursor=query.cursor
        )
    except ValueError as exc:
        raise bad_request(str(exc), code="invalid_cursor") from exc
    return json_list(
        [r.model_dump(mode="json", by_alias=True) for r in records],
        has_more=cursor is not None,
        next_cursor=cursor,
    )


async def run_detail(request: web.Request) -> web.Response:
    manager = get_state(request).require_manager()
    detail = await manager.detail(request.match_info["run_id"])
    return await json_data_off_loop(lambda: detail)  # it holds the whole conversation


async def run_events(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, EventsQuery)
    run_id = request.match_info["run_id"]
    manager = get_state(request).require_manager()
    record = await manager.get(run_id)  # 404 before the stream starts
    after = resume_point(request, query.after)
    if after > 0 and record.finished and await _ended_by(manager.store, run_id, after):
        # The client has every event: 204 is how the EventSource standard stops a browser
        # from reconnecting (it would otherwise reopen the ended stream every `retry` ms).
        return web.Response(status=204, headers={"X-Run-ID": run_id})
    headers = {"X-Run-ID": record.run_id}
    if record.thread_id:
        headers["X-Thread-ID"] = record.thread_id
    return await stream_run(request, run_id, after=after, headers=headers)


async def _ended_by(store: Store, run_id: str, after: int) -> bool:
    """Whether the run's stream has ended at or before event `after` (its `complete`)."""
    last = await store.last_event_id(run_id)
    if after < last:
        return False
    final = await store.events_after(run_id, last - 1, limit=1)
    return bool(final) and final[0].type == "complete"


async def pause_run(request: web.Request) -> web.Response:
    await parse_body(request, EmptyBody, allow_empty=True)
    manager = get_state(request).require_manager()
    return json_data(_record(await manager.pause(request.match_info["run_id"])))


async def resume_run(request: web.Request) -> web.Response:
    await parse_body(request, EmptyBody, allow_empty=True)
    manager = get_state(request).require_manager()
    return json_data(_record(await manager.resume(request.match_info["run_id"])))


async def cancel_run(request: web.Request) -> web.Response:
    await parse_body(request, EmptyBody, allow_empty=True)
    manager = get_state(request).require_manager()
    return json_data(_record(await manager.cancel(request.match_info["run_id"])))


async def send_input(request: web.Request) -> web.Response:
    body = await parse_body(request, InputRequest)
    manager = get_state(request).require_manager()
    return json_data(_record(await manager.send_input(request.match_info["run_id"], body.text)))


async def fork_run(request: web.Request) -> web.StreamResponse:
    state = get_state(request)
    body = await parse_body(request, ForkRequest)
    state.check_accepting()
    manager = state.require_manager()
    run_id = request.match_info["run_id"]
    run = await manager.fork(run_id, body.step, body.prompt)
    await _watch_webhooks(state, run)
    if body.stream:
        return await stream_run(request, run.run_id, headers=_run_headers(run))
    result = ForkResult.model_validate(
        {
            "runId": run.run_id,
            "threadId": run.thread_id,
            "status": run.status,
            "parentRunId": run_id,
            "forkStep": body.step,
        }
    )
    return json_data(result, status=201, headers=_run_headers(run))


def _record(record: RunRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", by_alias=True)


def add_routes(table: RouteTable) -> None:
    tag = "runs"
    table.add(
        "POST",
        "/v1/run",
        start_run,
        summary="Start a run",
        description="Streams the run's events as SSE (`stream: true`, the default) with the "
        "X-Run-ID and X-Thread-ID headers; with `stream: false` answers once the run has "
        "finished, and with `stream: false, wait: false` answers 202 `{runId, status: "
        "registered, threadId}` at once. A client that disconnects does not stop the run. "
        "A run given `messages` (caller-managed history) has no thread: `threadId` is null.",
        tag=tag,
        body=RunRequest,
        response=Enveloped(RunResult),
        also={
            202: ("`stream: false, wait: false`: the run is registered", Enveloped(RunRegistered))
        },
        sse=True,
        errors=(400, 404, 409, 429, 503),
        headers=RUN_HEADERS,
    )
    for path, op_id in (
        ("/v1/agents/{slug}/run", "legacy_agent_run"),
        ("/v1/run/{apiSlug}", "legacy_api_slug_run"),
    ):
        table.add(
            "POST",
            path,
            legacy_run,
            operation_id=op_id,
            summary="Start a run (legacy request shape)",
            description="`{message, stream, mounts, context, params}` → "
            "`{id, status, output, devUrl, files, usage, warnings}` (or SSE with `stream: "
            "true`). `context.history` (the previous run's messages) is the conversation to "
            "continue (the run then has no thread); `context.files` names workspace files "
            "whose contents (bounded) the agent starts from; other context keys follow the "
            "message. `mounts` are recorded in the run's metadata, not mounted: `warnings` "
            "says so.",
            tag=tag,
            body=LegacyRunRequest,
            response=Enveloped(LegacyRunResult),
            sse=True,
            errors=(400, 404, 409, 429, 503),
            headers=RUN_HEADERS,
        )
    table.add(
        "GET",
        "/v1/runs",
        list_runs,
        summary="Run history, newest first",
        tag=tag,
        query=RunsQuery,
        response=Enveloped(RunOut, page=True),
        errors=(400, 404),
    )
    table.add(
        "GET",
        "/v1/runs/{run_id}",
        run_detail,
        summary="A run with its conversation, tool calls, output, usage and timings",
        tag=tag,
        response=Enveloped(RunDetail),
        errors=(404,),
    )
    table.add(
        "GET",
        "/v1/runs/{run_id}/events",
        run_events,
        summary="The run's event stream (SSE)",
        description="Replays the events after `Last-Event-ID` (or `?after=`), then follows "
        "the run live; ends after the terminal `complete` event. A browser's `EventSource` "
        "cannot send headers: it authenticates with `?access_token=` (never logged).",
        no_content="the run has finished and the client already has its last event "
        "(`Last-Event-ID` or `?after=` at or past it): nothing to reconnect for",
        tag=tag,
        query=EventsQuery,
        sse=True,
        errors=(400, 404),
        headers={"X-Run-ID": "the run's id"},
    )
    for verb, handler, what in (
        ("pause", pause_run, "Pause at the next safe point (before a model or tool call)"),
        ("resume", resume_run, "Resume a paused run"),
        ("cancel", cancel_run, "Cancel: the model stream stops, its processes are killed"),
    ):
        table.add(
            "POST",
            f"/v1/runs/{{run_id}}/{verb}",
            handler,
            summary=what,
            tag=tag,
            body=EmptyBody,
            body_required=False,
            response=Enveloped(RunOut),
            errors=(400, 404, 409),
        )
    table.add(
        "POST",
        "/v1/runs/{run_id}/input",
        send_input,
        summary="Send user input to a running run (reaches the model at its next turn)",
        tag=tag,
        body=InputRequest,
        response=Enveloped(RunOut),
        errors=(400, 404, 409),
    )
    table.add(
        "POST",
        "/v1/runs/{run_id}/fork",
        fork_run,
        summary="Start a new run from this run's conversation cut at `step` messages",
        tag=tag,
        body=ForkRequest,
        response=Enveloped(ForkResult),
        status=201,
        sse=True,
        errors=(400, 404, 409, 429, 503),
        headers=RUN_HEADERS,
    )
