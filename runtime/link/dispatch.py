"""The link's `http` request: any route of the local API, answered through the link.

The request is sent to the daemon's own HTTP server on loopback, so it goes through exactly
the handlers, validation, error envelope and limits an HTTP client gets: the link adds no
second implementation of any route. (The alternative, calling the aiohttp application in
process, would need aiohttp's test-only request factory.) A JSON response becomes `body`;
another text `bodyText`; anything else `bodyBase64`. A streamed (SSE) response becomes one
`http.event` notification per event, then the result with `body: null`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

# Headers that describe one hop, or that the local request sets itself.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "x-api-key",
        "accept-encoding",
    }
)

SendEvent = Callable[[dict[str, Any]], Awaitable[None]]
# What answers an `http` request (`HttpDispatcher`; a test may pass its own).
Dispatch = Callable[[Mapping[str, Any], SendEvent], Awaitable[dict[str, Any]]]


class BadHttpParams(ValueError):
    """The `http` request's params are not `{method, path, query?, headers?, body?}`."""


class HttpDispatcher:
    """Sends link `http` requests to the local API at `base_url` (with its token, if any)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token

    async def __call__(self, params: Mapping[str, Any], send_event: SendEvent) -> dict[str, Any]:
        method, path, query, headers, body = _parse(params)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            answer: dict[str, Any] = {
                "status": response.status,
                "headers": {k: v for k, v in response.headers.items() if k.lower() != "date"},
            }
            if response.content_type == "text/event-stream":
                await _relay_events(response, send_event)
                answer["body"] = None
                return answer
            raw = await response.read()
            if response.content_type == "application/json" and raw:
                answer["body"] = json.loads(raw)
            else:
                try:
                    answer["bodyText"] = raw.decode()
                except UnicodeDecodeError:
                    answer["bodyBase64"] = base64.b64encode(raw).decode()
            return answer


def _parse(
    params: Mapping[str, Any],
) -> tuple[str, str, dict[str, str], dict[str, str], Any]:
    method = params.get("method")
    path = params.get("path")
    if not isinstance(method, str) or not method.isalpha():
        raise BadHttpParams("params.method must be an HTTP method, e.g. GET")
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadHttpParams("params.path must be an absolute path such as /v1/runs")
    query = params.get("query") or {}
    headers = params.get("headers") or {}
    if not isinstance(query, Mapping) or not isinstance(headers, Mapping):
        raise BadHttpParams("params.query and params.headers must be objects")
    return (
        method.upper(),
        path,
        {str(k): str(v) for k, v in query.items()},
        {str(k): str(v) for k, v in headers.items() if str(k).lower() not in _HOP_HEADERS},
        params.get("body"),
    )


async def _relay_events(response: aiohttp.ClientResponse, send_event: SendEvent) -> None:
    """SSE frames (`id:`, `event:`, `data:` lines, a blank line ending each) as events;
    comments (`: ping`) and `retry:` are the transport's business and are not relayed."""
    fields: dict[str, str] = {}
    async for raw_line in response.content:
        line = raw_line.decode().rstrip("\r\n")
        if not line:
            if "data" in fields:
                await send_event(
                    {
                        "id": fields.get("id"),
                        "event": fields.get("event", "message"),
                        "data": json.loads(fields["data"]),
                    }
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        elif name in ("id", "event", "data"):
            fields[name] = value
