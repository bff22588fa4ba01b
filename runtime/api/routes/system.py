"""Liveness, readiness, the OpenAPI document and Prometheus metrics."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from aiohttp import web
from pydantic import Field

from runtime.api import metrics, v1
from runtime.api.errors import ApiError
from runtime.api.responses import json_data
from runtime.api.routing import Enveloped, RouteTable
from runtime.api.state import ApiState, get_state
from runtime.api.wire import WireModel
from runtime.runs import machinery


class Health(WireModel):
    status: Literal["ok", "starting", "shutting_down"]
    version: str
    sandbox_id: str = Field(alias="sandboxId")


def _health(state: ApiState, status: str) -> Health:
    return Health.model_validate(
        {"status": status, "version": state.version, "sandboxId": state.settings.sandbox_id}
    )


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    state = get_state(request)
    return json_data(_health(state, "ok" if state.phase == "ready" else state.phase))


async def readyz(request: web.Request) -> web.Response:
    """200 once the store is open and runs are accepted; 503 while starting or stopping, or
    when runs cannot be driven or the /v1 API served (the run machinery or the /v1
    operations failed to load)."""
    state = get_state(request)
    failure = machinery.load_failure() or v1.load_failure()
    if failure is not None:
        raise ApiError(503, failure.code, failure.message, headers={"Retry-After": "1"})
    if state.manager is None or state.phase != "ready":
        raise ApiError(
            503,
            state.phase if state.phase != "ready" else "starting",
            f"not ready: the daemon is {state.phase.replace('_', ' ')}",
            headers={"Retry-After": "1"},
        )
    return json_data(_health(state, "ok"))


async def openapi_json(request: web.Request) -> web.Response:
    state = get_state(request)
    if state.openapi is None:
        # Its first build is ~0.1 s of pydantic's JSON Schema generation (and the import of
        # that machinery): a worker thread's, not the event loop's.
        state.openapi = await anyio.to_thread.run_sync(_openapi_document, state)
    return web.json_response(state.openapi)


def _openapi_document(state: ApiState) -> dict[str, Any]:
    from runtime.api.openapi import build_openapi

    return build_openapi(state.table.joined(v1.load_v1().table), version=state.version)


async def prometheus(request: web.Request) -> web.Response:
    state = get_state(request)
    text = metrics.render(
        state.metrics,
        state.manager,
        version=state.version,
        sandbox_id=state.settings.sandbox_id,
        statuses=("queued", "running", "paused"),
    )
    return web.Response(body=text.encode(), headers={"Content-Type": metrics.CONTENT_TYPE})


def add_routes(table: RouteTable) -> None:
    tag = "system"
    table.add(
        "GET",
        "/healthz",
        healthz,
        summary="Liveness (no authentication)",
        tag=tag,
        public=True,
        response=Enveloped(Health),
    )
    table.add(
        "GET",
        "/readyz",
        readyz,
        summary="Readiness: 200 once the store is open (no authentication)",
        tag=tag,
        public=True,
        response=Enveloped(Health),
        errors=(503,),
    )
    table.add(
        "GET",
        "/openapi.json",
        openapi_json,
        summary="This document",
        tag=tag,
        content_type="application/json",
    )
    table.add(
        "GET",
        "/metrics",
        prometheus,
        summary="Prometheus metrics (text exposition format 0.0.4)",
        tag=tag,
        content_type=metrics.CONTENT_TYPE,
    )
