"""The link's wire contract (docs/design.md, "The link"): names, timings, JSON-RPC frames.

Frames are JSON-RPC 2.0 text messages. agentd sends the notification `hello` on every connect;
the control plane sends requests `http` and the notification `http.cancel`; agentd answers
each `http` with a result, preceded by `http.event` notifications when the route streams.
`parse_frame` checks an incoming frame against all this and says what it is, or which JSON-RPC
error it gets.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

SUBPROTOCOL = "agentd.link.v1"
PROTOCOL_VERSION = 1
PING_INTERVAL = 15.0  # WebSocket ping every 15 s
DEAD_AFTER = 45.0  # a link silent this long is dead
BACKOFF_FIRST = 0.5  # reconnect delays: full jitter over 0.5 s, doubling, up to 30 s
BACKOFF_MAX = 30.0
# A dial (TCP connect, WebSocket upgrade, `hello` sent) that takes longer has failed and is
# retried with the backoff: a listener that accepts and never answers must not hold the link.
HANDSHAKE_TIMEOUT = 30.0
# The backoff starts again from its first step only after a link that stayed up this long: a
# control plane that accepts the link and drops it at once is dialled ever less often, as if
# every dial failed, not ~4 times a second for ever.
STABLE_AFTER = BACKOFF_MAX
# The largest frame the control plane may send: an `http` request carries a request body as a
# JSON value, which its encoder may write with every character escaped (`\u003c`: 6 bytes for
# 1), so any body the local API accepts (`max_body_bytes`) fits, beside the method, path, query
# and headers (`FRAME_SLACK`). Never below `FRAME_MIN`, the bound before it was tied to the cap.
JSON_ESCAPE_FACTOR = 6
FRAME_SLACK = 1024 * 1024
FRAME_MIN = 16 * 1024 * 1024


def max_frame_bytes(max_body_bytes: int) -> int:
    """The largest frame the link reads when the local API takes bodies of `max_body_bytes`.
    A larger one is not read: the link is closed with 1009 and dialled again."""
    return max(FRAME_MIN, JSON_ESCAPE_FACTOR * max_body_bytes + FRAME_SLACK)


def link_url(control_plane: str, device_id: str) -> str:
    return f"{control_plane.rstrip('/')}/v1/devices/{device_id}/link"


def events_url(control_plane: str, thread_id: str) -> str:
    return f"{control_plane.rstrip('/')}/v1/threads/{thread_id}/events"


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """The wait before reconnect attempt `attempt` (0-based): full jitter, AWS-style."""
    # The exponent stops growing long after the ceiling is reached: 2.0**1024 overflows, and
    # a control plane away for some hours (~1,000 attempts) ended the link's retries with it.
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** min(attempt, 64))
    return (rng or random).uniform(0, ceiling)


def notification(method: str, params: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params})


def result(request_id: Any, value: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: Any, code: int, message: str) -> str:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    )


# JSON-RPC 2.0's own error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# What JSON-RPC 2.0 allows as an id. (A JSON number is an int or a float; `true` is not one,
# though Python's bool is an int.)
RequestId = str | int | float | None


@dataclass(frozen=True)
class HttpRequest:
    """`http`: a request to the local API. `params` is an object; its fields are checked by
    the dispatcher, which answers their faults with INVALID_PARAMS."""

    id: RequestId
    params: dict[str, Any]


@dataclass(frozen=True)
class HttpCancel:
    """`http.cancel`: stop the stream of the `http` request `request_id`. The contract makes
    it a notification; sent with an id (`is_request`), it is a request and is answered."""

    request_id: RequestId
    id: RequestId
    is_request: bool


@dataclass(frozen=True)
class Response:
    """A response (no method): agentd asks the control plane nothing, so it is ignored."""


Frame = HttpRequest | HttpCancel | Response


class FrameError(ValueError):
    """A frame that breaks the contract. `answer`: it is a request (or could not be read as
    a frame at all), so it gets the JSON-RPC error `code` with `request_id` (null when the id
    could not be read); otherwise it was a notification, which is logged and dropped."""

    def __init__(
        self, code: int, message: str, request_id: RequestId = None, *, answer: bool = True
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.answer = answer


def parse_frame(text: str) -> Frame:
    """One text frame from the control plane, checked against the contract: the JSON-RPC 2.0
    envelope, then the params of the method. Raises `FrameError` for anything else."""
    try:
        # NaN and Infinity are not JSON (an id of NaN could not be answered); nesting deeper
        # than the parser's recursion limit is not a frame either.
        frame = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise FrameError(PARSE_ERROR, "the frame is not JSON") from None
    if not isinstance(frame, dict):
        raise FrameError(INVALID_REQUEST, "expected a JSON-RPC 2.0 object")
    # The id first: an answer names it whenever it can be read, even if the rest is invalid.
    request_id = frame.get("id")
    if not is_request_id(request_id):
        raise FrameError(INVALID_REQUEST, "id must be a string, a number or null")
    if frame.get("jsonrpc") != "2.0":
        raise FrameError(
            INVALID_REQUEST, 'expected a JSON-RPC 2.0 object ("jsonrpc": "2.0")', request_id
        )
    is_request = "id" in frame
    if "method" not in frame:
        if "result" in frame or "error" in frame:
            return Response()
        raise FrameError(INVALID_REQUEST, "a request needs a method", request_id)
    method = frame["method"]
    if not isinstance(method, str):
        raise FrameError(INVALID_REQUEST, "method must be a string", request_id)
    params = frame.get("params", {})  # JSON-RPC lets a request leave params out
    if method == "http":
        if not is_request:
            raise FrameError(INVALID_REQUEST, "http must be a request (with an id)", answer=False)
        if not isinstance(params, dict):
            raise FrameError(INVALID_PARAMS, "params must be an object", request_id)
        return HttpRequest(request_id, params)
    if method == "http.cancel":
        if not (
            isinstance(params, dict)
            and "requestId" in params
            and is_request_id(params["requestId"])
        ):
            raise FrameError(
                INVALID_PARAMS,
                "params must be {requestId: the id of an http request}",
                request_id,
                answer=is_request,
            )
        return HttpCancel(params["requestId"], request_id, is_request)
    raise FrameError(
        METHOD_NOT_FOUND, f"unknown method {method[:100]!r}", request_id, answer=is_request
    )


def is_request_id(value: object) -> bool:
    """A string, a number or null. A float must be finite: `1e400` parses as infinity, and an
    answer naming it would not be JSON."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
