"""Middleware: request ids, the error envelope, authentication, the readiness gate.

Every response carries `X-Request-ID` (the client's, if it sent a sane one, else a new id),
and the id is on every log line written while the request is handled (`request_id` on the
log record, see `RequestIdFilter`). Every failure, including aiohttp's own 404/405/413,
leaves as the JSON error envelope.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import os
import re
import time
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from runtime.api.errors import STATUS_CODES, ApiError, error_response
from runtime.api.v1 import V1_ROUTE_KEY, V1_ROUTE_NAME, v1_api
from runtime.runs import RunError
from runtime.runs.machinery import run_machinery
from runtime.store import StoreFull
from tools import core_tools_ready

if TYPE_CHECKING:
    from runtime.api.state import ApiState

log = logging.getLogger("agentd.api")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_KEY = web.RequestKey("request_id", str)
CORS_KEY = web.RequestKey("cors_headers", dict)
CORS_REQUEST_HEADERS = "Authorization, Content-Type, X-API-Key, Last-Event-ID, X-Request-ID"
CORS_EXPOSED_HEADERS = "X-Run-ID, X-Thread-ID, X-Request-ID, Retry-After"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` (the request being handled, or `-`) to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def new_request_id() -> str:
    return "req_" + os.urandom(8).hex()


def request_id(request: web.Request) -> str:
    return str(request.get(REQUEST_ID_KEY, "-"))


def _message_for(exc: web.HTTPException, request: web.Request, max_body: int) -> str:
    if exc.status == 404:
        return f"no route for {request.method} {request.path}; see GET /openapi.json"
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 413:
        return f"the request body is larger than the daemon's limit of {max_body} bytes"
    return exc.reason or exc.text or "request failed"


def make_middlewares(state: ApiState) -> list[Middleware]:
    public = state.table.public_paths()

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _CLIENT_REQUEST_ID.match(incoming) else new_request_id()
        request[REQUEST_ID_KEY] = rid
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            if exc.status >= 500:
                log.error(
                    "%s %s → %s: %s",
                    request.method,
                    request.path,
                    exc.status,
                    exc,
                    extra={"request_id": rid},
                )
            return error_response(
                exc.status, exc.code, exc.message, rid, details=exc.details, headers=exc.headers
            )
        except RunError as exc:
            status = exc.status
            headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
            return error_response(exc.status, exc.code, exc.message, rid, headers=headers)
        except StoreFull as exc:
            status = 507  # Insufficient Storage: the state dir's disk is full
            log.error("%s %s → 507: %s", request.method, request.path, exc)
            return error_response(507, StoreFull.code, str(exc), rid)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:  # redirects and the like pass through
                raise
            headers = {
                k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")
            }
            return error_response(
                exc.status,
                STATUS_CODES.get(exc.status, "http_error"),
                _message_for(exc, request, state.settings.max_body_bytes),
                rid,
                headers=headers,
            )
        except Exception:
            log.exception(
                "unhandled error in %s %s",
                request.method,
                request.path,
                extra={"request_id": rid},
            )
            return error_response(
                500,
                "internal_error",
                f"internal error; the daemon log has the details under request id {rid}",
                rid,
            )
        finally:
            state.metrics.request_finished(
                request.method, _route_name(request), status, time.perf_counter() - started
            )
            request_id_var.reset(token)

    origins = state.settings.allowed_origins
    cors_methods: list[str] = []  # the routes' methods, once the /v1 operations are loaded

    async def allowed_methods() -> str:
        """Every method some route has (from the route tables, so a new one cannot be left
        out), and OPTIONS; the /v1 operations load on the first preflight if not yet."""
        if not cors_methods:
            operations = [*state.table.operations, *(await v1_api()).table.operations]
            cors_methods[:] = sorted({op.method for op in operations} | {"OPTIONS"})
        return ", ".join(cors_methods)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Browsers (an `EventSource` on another origin) may call the API when their origin
        is in `cors_origins`; preflights are answered here, before authentication."""
        origin = request.headers.get("Origin")
        if not origin or not origins or ("*" not in origins and origin not in origins):
            return await handler(request)
        allow = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(
                status=204,
                headers={
                    **allow,
                    "Access-Control-Allow-Methods": await allowed_methods(),
                    "Access-Control-Allow-Headers": CORS_REQUEST_HEADERS,
                    "Access-Control-Max-Age": "600",
                },
            )
        request[CORS_KEY] = {**allow, "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS}
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        expected = state.settings.token
        if expected is None or _route_path(request) in public or request.method == "OPTIONS":
            return await handler(request)
        presented = _credential(request)
        if presented is None:
            raise ApiError(
                401,
                "unauthorized",
                "missing credentials: send `Authorization: Bearer <token>` or `X-API-Key: <token>`",
                headers={"WWW-Authenticate": 'Bearer realm="agentd"'},
            )
        if not hmac.compare_digest(_token_bytes(presented), _token_bytes(expected)):
            raise ApiError(
                401,
                "unauthorized",
                "invalid API token",
                headers={"WWW-Authenticate": 'Bearer realm="agentd", error="invalid_token"'},
            )
        return await handler(request)

    @web.middleware
    async def readiness(request: web.Request, handler: Handler) -> web.StreamResponse:
        if state.manager is None and request.path.startswith("/v1/"):
            raise ApiError(
                503,
                "starting",
                "the daemon is still starting; retry when GET /readyz answers 200",
                headers={"Retry-After": "1"},
            )
        if request.path.startswith("/v1/"):
            # Agents, runs and tool calls read the tool registry, whose first use imports
            # every tool module, and runs (and the checks of agents' models) need the run
            # machinery, which start-up does not load: both load in a worker thread, never
            # on the event loop (at once if the daemon's warm-up has loaded them).
            await core_tools_ready()
            await run_machinery()
        return await handler(request)

    return [errors, cors, auth, readiness]


def _credential(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    if api_key:
        return api_key
    # EventSource and browser WebSockets cannot send headers: the event streams and the thread
    # stream also take ?access_token=.
    if request.method == "GET" and request.path.endswith(("/events", "/stream")):
        return request.query.get("access_token") or None
    return None


def _token_bytes(token: str) -> bytes:
    """A token as bytes to compare. aiohttp decodes header bytes that are not UTF-8 to lone
    surrogates (`surrogateescape`), which plain `encode()` refuses; `surrogatepass` encodes
    any text, and only a token that is valid text encodes to valid UTF-8, so such a header
    never equals a real token."""
    return token.encode("utf-8", "surrogatepass")


def _route_path(request: web.Request) -> str:
    """The path template of the route the request matched (`/viewer/{file}`), or its path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def _route_name(request: web.Request) -> str:
    if V1_ROUTE_KEY in request:
        return request[V1_ROUTE_KEY]  # the /v1 operation `v1.dispatch` resolved it to
    match = request.match_info
    route = getattr(match, "route", None)
    if getattr(route, "name", None) == V1_ROUTE_NAME:
        return "unmatched"  # under /v1/ but no /v1 operation's path
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    if canonical is None or getattr(match, "http_exception", None) is not None:
        return "unmatched"
    return str(canonical)
