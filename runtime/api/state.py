"""The API's state, kept on the aiohttp app (no module globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from runtime.api.errors import ApiError
from runtime.api.metrics import ApiMetrics
from runtime.api.routing import RouteTable
from runtime.api.sse import FrameCache, LiveFeeds
from runtime.config import Settings

if TYPE_CHECKING:
    from runtime.api.webhooks import WebhookSender
    from runtime.runs import RunManager
    from runtime.store import Store

Phase = Literal["starting", "ready", "shutting_down"]


class ApiState:
    """What the API's handlers share: the settings, the route table, the metrics, the run
    manager once the daemon has opened it, the webhooks and the SSE streams' frames and
    feeds. (A plain class: made at start-up, where a dataclass's generated methods cost
    ~1 ms to compile.)"""

    def __init__(
        self,
        *,
        settings: Settings,
        table: RouteTable,
        metrics: ApiMetrics,
        version: str,
        manager: RunManager | None = None,
        webhooks: WebhookSender | None = None,
        phase: Phase = "starting",
        owns_manager: bool = False,
    ) -> None:
        self.settings = settings
        self.table = table
        self.metrics = metrics
        self.version = version
        self.manager = manager
        self.webhooks = webhooks
        self.phase: Phase = phase
        self.owns_manager = owns_manager
        # Built on the first GET /openapi.json, by a worker thread (~0.1 s of pydantic's JSON
        # Schema generation, which also loads the tools for their argument schemas).
        self.openapi: dict[str, Any] | None = None
        # Every SSE client of a run writes the same frames: encoded once, shared.
        self.frames = FrameCache()
        # The SSE clients of a run that are caught up: one task writes each event to all.
        self.feeds = LiveFeeds()

    def require_manager(self) -> RunManager:
        if self.manager is None:
            raise ApiError(
                503,
                "starting",
                "the daemon is still starting; retry when GET /readyz answers 200",
                headers={"Retry-After": "1"},
            )
        return self.manager

    @property
    def store(self) -> Store:
        return self.require_manager().store

    def check_accepting(self) -> None:
        """New runs are refused once the daemon is shutting down."""
        if self.phase == "shutting_down":
            raise ApiError(
                503,
                "shutting_down",
                "the daemon is shutting down and accepts no new runs; retry on its successor",
                headers={"Retry-After": "5"},
            )


STATE_KEY: web.AppKey[ApiState] = web.AppKey("agentd_api_state", ApiState)


def get_state(request: web.Request) -> ApiState:
    return request.app[STATE_KEY]
