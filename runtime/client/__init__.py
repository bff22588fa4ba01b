"""The Python client of the agentd HTTP API: `Client` (blocking) and `AsyncClient` (asyncio).

    from runtime.client import Client

    with Client() as agentd:                     # AGENTD_URL, AGENTD_TOKEN from the environment
        agentd.agents.upsert({"slug": "builder", "model": "claude-sonnet-5-5"})
        run = agentd.runs.start("builder", "make the tests pass")
        for event in agentd.runs.stream(run["runId"]):
            print(event.id, event.type, event.payload)

Both clients have the same resources and methods (`agents`, `runs`, `threads`, `tools`); the
async one's methods are coroutines and its streams async iterators. Results are the `data`
of the API's JSON envelope (dicts with the wire's camelCase names, see `GET /openapi.json`);
lists come as a `Page`; a run's events as `Event`s whose `typed_payload()` is the event
type's model.

Failures raise typed errors: `AuthenticationError` (401), `AuthorizationError` (403),
`ValidationError` (400, with the per-field `details`), `NotFoundError` (404),
`ConflictError` (409), `PayloadTooLargeError` (413), `RateLimitError` (429, with
`retry_after`), `ServerError` (5xx), `NetworkError` (the daemon could not be reached or the
connection broke), all `APIError`s or `AgentdError`s. `is_retryable(error)` says whether
trying again later may succeed. The client retries those itself, with exponential backoff
and jitter (or the server's `Retry-After`), but only where a retry cannot do a thing twice:
reads and idempotent writes always, other writes only when the daemon did not act on the
request (a refused connection, 429 queue full, 503 starting).

`runs.stream(run_id)` follows a run's Server-Sent Events (parsed per the WHATWG rules: ids,
multi-line data, comments) and, when the connection drops, reconnects with `Last-Event-ID`:
the daemon replays what was missed, so every event arrives once, in order, until `complete`.

Modules: `errors` (the error classes, `is_retryable`), `aio` (`AsyncClient`, the one
implementation), `sync` (`Client`, which runs an `AsyncClient` on a background thread).
"""

from __future__ import annotations

from runtime.client.aio import AsyncClient, ClientConfig, Page
from runtime.client.errors import (
    AgentdError,
    APIError,
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    ValidationError,
    error_for_status,
    is_retryable,
)
from runtime.client.sync import Client
from runtime.event_stream import SSEEvent, parse_sse
from runtime.events import Event

__all__ = [
    "APIError",
    "AgentdError",
    "AsyncClient",
    "AuthenticationError",
    "AuthorizationError",
    "Client",
    "ClientConfig",
    "ConflictError",
    "Event",
    "NetworkError",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "RateLimitError",
    "SSEEvent",
    "ServerError",
    "ValidationError",
    "error_for_status",
    "is_retryable",
    "parse_sse",
]
