"""The route table: every operation of the API, declared once with its models.

The aiohttp router and `/openapi.json` are both built from the same `Operation`s, so a route
cannot exist without being documented, and its documented body is the model the handler
validates with (`parse_body(request, op.body)`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from aiohttp import web
from pydantic import BaseModel

from runtime.api.validation import refuse_query

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Enveloped(NamedTuple):
    """A response body in the API's envelope: `{"data": <model>}`, or with `page` a page of
    them, `{"data": [<model>], "meta": {...}}`. `/openapi.json` documents it as
    `Envelope[model]` / `ListEnvelope[model]`; those parametrised classes are made there, not
    where the routes are declared (each is a new pydantic class, and only the document uses
    them: making the twenty of them was a tenth of what the app's creation cost at start-up).
    A named tuple, not a dataclass, for the same reason: a tenth of the cost to define.
    """

    model: type[BaseModel]
    page: bool = False


Response = type[BaseModel] | Enveloped
# The default of an operation's `also` and `headers`: empty, and shared, so read-only.
NO_ENTRIES: Mapping[Any, Any] = MappingProxyType({})


class Operation(NamedTuple):
    """One route: what the router installs and what /openapi.json documents. (A named tuple,
    as `Enveloped` is: a frozen dataclass of these 21 fields took start-up ~0.8 ms to define
    on Python 3.11, and each of a hundred routes ~5 µs to make.)"""

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
    response: Response | None = None
    status: int = 200
    content_type: str = "application/json"
    sse: bool = False  # may answer with text/event-stream (always, if response is None)
    websocket: bool = False  # upgrades to a WebSocket (101); 426 without the upgrade headers
    public: bool = False  # no authentication
    errors: tuple[int, ...] = ()
    no_content: str | None = None  # when the operation answers 204 No Content
    # Other success answers: status → (when, body model), e.g. 202 for a run not waited for.
    also: Mapping[int, tuple[str, Response]] = NO_ENTRIES
    headers: Mapping[str, str] = NO_ENTRIES  # response headers documented


def _without_query(handler: Handler) -> Handler:
    """`handler` behind a check that the request has no query string: an operation without a
    query model takes no parameters, so any given is refused (400) rather than ignored."""

    async def checked(request: web.Request) -> web.StreamResponse:
        refuse_query(request)
        return await handler(request)

    checked.__name__ = getattr(handler, "__name__", "handler")
    checked.__doc__ = handler.__doc__
    return checked


class RouteTable:
    """Collects operations; `install(router)` adds them to a router."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def add(self, method: str, path: str, handler: Handler, **fields: Any) -> Operation:
        fields.setdefault("operation_id", handler.__name__)
        op = Operation(method=method.upper(), path=path, handler=handler, **fields)
        self.operations.append(op)
        return op

    def install(self, router: web.UrlDispatcher) -> None:
        for op in self.operations:
            handler = op.handler if op.query is not None else _without_query(op.handler)
            router.add_route(op.method, op.path, handler, name=op.operation_id)

    def joined(self, other: RouteTable) -> RouteTable:
        """A table of this one's operations, then `other`'s."""
        table = RouteTable()
        table.operations = [*self.operations, *other.operations]
        return table

    def public_paths(self) -> frozenset[str]:
        return frozenset(op.path for op in self.operations if op.public)
