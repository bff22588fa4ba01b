"""The /v1 API: its operations and their router, loaded once and never on the event loop.

The /v1 handlers and the models they validate with (`runtime.api.routes.*`,
`runtime.api.schemas`: a hundred pydantic classes) are most of the API's import cost, and
answering `/readyz` needs none of them, so `agentd serve` does not import them before it
listens. The app sends every `/v1/...` request to `dispatch`, which resolves it on a router
of its own (an aiohttp `UrlDispatcher`) built from the /v1 operations' `RouteTable`. The
daemon's warm-up thread builds it right after listening (`load_v1`); a request that comes
earlier awaits `v1_api()`, which builds it in a worker thread, as runs await the run
machinery (`runtime.runs.machinery`).

A module that fails to import fails every later /v1 request the same way: a 503
`unavailable` naming the module, rather than a hang or a 500 (see `runtime.deferred`).
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

from aiohttp import web

from runtime.api.errors import ApiError
from runtime.api.routing import RouteTable
from runtime.deferred import DeferredLoad

# The modules declaring the /v1 operations (each has `add_routes(table)`), in the order the
# operations are documented; none is imported before the daemon listens
# (tests/cli/test_serve_startup.py), nor on the event loop (tests/api/test_daemon.py).
MODULES = (
    "runtime.api.routes.agents",
    "runtime.api.routes.runs",
    "runtime.api.routes.files",
    "runtime.api.routes.threads",
    "runtime.api.routes.tools",
)
PREFIX = "/v1/"
V1_ROUTE_NAME = "v1"  # the app's catch-all route for PREFIX

# The path template of the /v1 operation a request matched (`/v1/runs/{run_id}`), for the
# request metrics: the app's own router only knows the catch-all `/v1/{tail}`.
V1_ROUTE_KEY = web.RequestKey("v1_route", str)


class V1Api(NamedTuple):
    """The /v1 operations (for `/openapi.json`) and the router resolving requests to them."""

    table: RouteTable
    router: web.UrlDispatcher


class ApiUnavailable(ApiError):
    """The /v1 API could not be loaded (or not in time)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "unavailable", message, headers={"Retry-After": "1"})


def _build(modules: list[ModuleType]) -> V1Api:
    table = RouteTable()
    for module in modules:
        module.add_routes(table)
    router = web.UrlDispatcher()
    table.install(router)
    router.freeze()
    return V1Api(table, router)


_api = DeferredLoad("the /v1 API", "serve /v1", lambda: MODULES, _build, ApiUnavailable)


def load_v1() -> V1Api:
    """Blocking: import the /v1 operations and build their router (the first call; later
    ones return at once). Raises ApiUnavailable if a module fails to import, on this call
    and every later one."""
    return _api.load()


def load_failure() -> ApiUnavailable | None:
    """Why the /v1 API could not be loaded, once a load has failed."""
    return _api.failure


async def v1_api() -> V1Api:
    """`load_v1` for async callers: the first load runs in a worker thread (the event loop
    goes on serving meanwhile), bounded; later calls return at once."""
    return await _api.get()


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The handler of every `/v1/...` request: resolve it among the /v1 operations (a 404 or
    405 as aiohttp's router gives them) and call the operation's handler, with the path's
    parameters in `request.match_info` as if the app's router had matched it."""
    api = await v1_api()
    match = await api.router.resolve(request)
    if match.http_exception is not None:
        raise match.http_exception
    request[V1_ROUTE_KEY] = match.route.resource.canonical if match.route.resource else ""
    request.match_info.update(match)
    return await match.handler(request)
