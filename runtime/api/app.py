"""The aiohttp application: `create_app(settings, manager=None)`.

With a `manager`, the app serves it (the caller owns its lifecycle; tests do this). Without,
the app owns the daemon's runtime: on start-up it opens the store under `state_dir` and
starts a `RunManager` on `workspace`; `drain(app, grace)` (also run on shutdown) stops
accepting runs, lets running ones finish within the grace period or interrupts them, flushes
webhooks, and closes the store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

import runtime
from runtime.api import v1
from runtime.api.metrics import ApiMetrics
from runtime.api.middleware import CORS_KEY, REQUEST_ID_KEY, make_middlewares
from runtime.api.routes import system, viewer
from runtime.api.routing import RouteTable
from runtime.api.state import STATE_KEY, ApiState
from runtime.api.webhooks import WebhookSender
from runtime.config import Settings

if TYPE_CHECKING:
    from runtime.runs import RunManager
    from runtime.tool_hub import ToolHub

log = logging.getLogger("agentd.api")


def daemon_version() -> str:
    """agentd's version (the distribution's: tests/test_dependencies.py checks they agree).
    Read from the package, not its installed metadata: parsing that costs a few ms of
    start-up before /readyz can answer."""
    return runtime.__version__


def build_routes() -> RouteTable:
    """The operations outside /v1 (health, metrics, the document, the viewer). The /v1 ones
    load after the daemon listens (`runtime.api.v1`)."""
    table = RouteTable()
    for module in (system, viewer):
        module.add_routes(table)
    return table


def create_app(settings: Settings, manager: RunManager | None = None) -> web.Application:
    table = build_routes()
    metrics = ApiMetrics()
    state = ApiState(
        settings=settings,
        table=table,
        metrics=metrics,
        version=daemon_version(),
        manager=manager,
        webhooks=WebhookSender(
            secret=settings.signing_key,
            sandbox_id=settings.sandbox_id,
            max_attempts=settings.webhook_max_attempts,
            backoff=settings.webhook_backoff,
            timeout=settings.webhook_timeout,
            metrics=metrics,
        ),
        phase="ready" if manager is not None else "starting",
        owns_manager=manager is None,
    )
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=make_middlewares(state)
    )
    app[STATE_KEY] = state
    table.install(app.router)
    app.router.add_route("*", v1.PREFIX + "{tail:.*}", v1.dispatch, name=v1.V1_ROUTE_NAME)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(_add_request_id)
    return app


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    if REQUEST_ID_KEY in request:
        response.headers.setdefault("X-Request-ID", request[REQUEST_ID_KEY])
    if CORS_KEY in request:
        for name, value in request[CORS_KEY].items():
            response.headers.setdefault(name, value)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE_KEY]
    if state.owns_manager:
        await _open_runtime(state)  # crash recovery included: before the webhooks resume
    if state.webhooks is not None:
        await state.webhooks.start(state.manager)
    state.phase = "ready"
    try:
        yield
    finally:
        await drain(app, state.settings.shutdown_grace)
        if state.owns_manager and state.manager is not None:
            await state.manager.store.close()
            log.info("store closed")


async def _open_runtime(state: ApiState) -> None:
    from runtime.custom_tools import custom_tool_factory
    from runtime.runs import RunManager
    from runtime.store import Store
    from tools.base import ToolSettings

    settings = state.settings
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.state_dir)
    try:
        manager = RunManager(
            store,
            settings.workspace,
            tool_settings=ToolSettings(
                dev_url_template=settings.dev_url_template,
                sandbox_id=settings.sandbox_id,
                reserved_ports=frozenset({settings.port}),
                workspace_skip_dirs=settings.skip_dirs,
            ),
            max_concurrent=settings.max_concurrent_runs,
            max_queue=settings.max_queue,
            provider_factory=_recording_factory(settings.record) if settings.record else None,
            custom_tool_factory=custom_tool_factory(settings),
            tool_hub=tool_hub(settings),
        )
        await manager.start_background()
    except BaseException:
        await store.close()
        raise
    state.manager = manager


def tool_hub(settings: Settings) -> ToolHub | None:
    """The daemon's Tool Hub (`--tool-hub-url`), with the custom tools' timeout."""
    if settings.tool_hub_url is None:
        return None
    from runtime.tool_hub import ToolHub

    return ToolHub(settings.tool_hub_url, timeout=settings.custom_tool_timeout)


def _recording_factory(cassette: Path) -> Callable[..., Any]:
    """Providers that append every turn to `cassette` (`--record`): live runs become
    replayable offline."""
    from runtime.providers.registry import create_provider

    def factory(model: Any, *, env: Any = None) -> Any:
        return create_provider(model, env=env, record=cassette)

    return factory


async def _on_shutdown(app: web.Application) -> None:
    await drain(app, app[STATE_KEY].settings.shutdown_grace)


async def drain(app: web.Application, grace: float) -> None:
    """Stop accepting runs; give active ones `grace` seconds (then interrupt them); deliver
    pending webhooks. Idempotent. The server keeps answering reads and controls meanwhile."""
    state = app[STATE_KEY]
    if state.phase == "shutting_down":
        return
    state.phase = "shutting_down"
    if state.owns_manager and state.manager is not None:
        active = len(state.manager.active_runs())
        if active:
            log.info("waiting up to %.1fs for %d active run(s)", grace, active)
        await state.manager.shutdown(grace)
    if state.webhooks is not None:
        await state.webhooks.aclose(grace=min(grace, 5.0))
