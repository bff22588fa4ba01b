"""The route table: every operation of the API, declared once with its models.

The aiohttp router and `/openapi.json` are both built from the same `Operation`s, so a route
cannot exist without being documented, and its documented body is the model the handler
validates with (`parse_body(request, op.body)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    description: str = ""
    body: type[BaseModel] | None = None
    # A body whose schema is computed (e.g. a tool's arguments); documented as given.
    body_schema: Callable[[], dict[str, Any]] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    content_type: str = "application/json"
    sse: bool = False  # may answer with text/event-stream (always, if response is None)
    websocket: bool = False  # upgrades to a WebSocket (101); 426 without the upgrade headers
    public: bool = False  # no authentication
    errors: tuple[int, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)  # response headers documented


class RouteTable:
    """Collects operations; `install(app)` adds them to the router."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def add(self, method: str, path: str, handler: Handler, **fields: Any) -> Operation:
        fields.setdefault("operation_id", handler.__name__)
        op = Operation(method=method.upper(), path=path, handler=handler, **fields)
        self.operations.append(op)
        return op

    def install(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, op.path, op.handler, name=op.operation_id)

    def public_paths(self) -> frozenset[str]:
        return frozenset(op.path for op in self.operations if op.public)
