"""The link's `http` request: any route of the local API, answered through the link.

The request is sent to the daemon's own HTTP server on loopback, so it goes through exactly
the handlers, validation, error envelope and limits an HTTP client gets: the link adds no
second implementation of any route. (The alternative, calling the aiohttp application in
process, would need aiohttp's test-only request factory.) A JSON response becomes `body`;
another text `bodyText`; anything else `bodyBase64`. A streamed (SSE) response becomes one
`http.event` notification per event, then the result with `body: null`. The result's `headers`
are the local response's, less those that describe the loopback hop (`Transfer-Encoding`,
`Connection`, the local `Content-Length`, ...): the result carries the body re-encoded.

A value in `query` or `headers` is a string, sent as it is; a number or a boolean, sent as its
JSON text (`5`, `1.5`, `true`); null, which leaves the parameter out; or a list of strings,
numbers and booleans, one parameter (or header line) per item. Anything else (an object, a
list holding null or a list) is INVALID_PARAMS naming the key: it has no one spelling in a URL
(Python's `str()` used to send `None` and `['a']`).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from runtime.event_stream import parse_sse, sse_lines

# Headers of the local response that describe its hop, not the result: the transfer framing
# and connection, and the length and encoding of a body the result carries decoded and
# re-encoded (and its date, which says when the loopback answer was made).
_RESULT_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
    }
)

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
            headers.append(("Authorization", f"Bearer {self.token}"))
        kwargs: dict[str, Any] = {"params": query, "headers": headers}
        if body is not None:
            kwargs["data"] = _encode_body(body)
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers.append(("Content-Type", "application/json"))
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            answer: dict[str, Any] = {
                "status": response.status,
                "headers": {
                    k: v for k, v in response.headers.items() if k.lower() not in _RESULT_DROPPED
                },
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


Pairs = list[tuple[str, str]]


def _parse(params: Mapping[str, Any]) -> tuple[str, str, Pairs, Pairs, Any]:
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
        _pairs("query", query),
        [(k, v) for k, v in _pairs("headers", headers) if k.lower() not in _HOP_HEADERS],
        params.get("body"),
    )


def _pairs(field: str, values: Mapping[str, Any]) -> Pairs:
    """`params.query` or `params.headers` as (name, value) pairs: null leaves a name out, a
    list repeats it, a number or a boolean is its JSON text."""
    pairs: Pairs = []
    for name, value in values.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            text = _scalar_text(item)
            if text is None:
                raise BadHttpParams(
                    f"params.{field}[{name[:100]!r}] must be a string, a number, a boolean, "
                    "null (left out) or a list of strings, numbers and booleans"
                )
            pairs.append((name, text))
    return pairs


def _scalar_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return json.dumps(value)
    return None


def _encode_body(body: object) -> bytes:
    """The body as compact UTF-8 JSON, so a body the local API would take over HTTP is not
    made longer than its cap (`max_body_bytes`) on the way: `json.dumps`'s default spelling
    (`\\uXXXX` for every non-ASCII character, spaces after separators) can double it or more.
    A string with a lone surrogate has no UTF-8: it goes as its ASCII escape."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


async def _relay_events(response: aiohttp.ClientResponse, send_event: SendEvent) -> None:
    """SSE frames (`id:`, `event:`, `data:` lines, a blank line ending each) as events;
    comments (`: ping`) and `retry:` are the transport's business and are not relayed."""
    async for frame in parse_sse(sse_lines(response)):
        await send_event({"id": frame.id, "event": frame.event, "data": frame.json()})
