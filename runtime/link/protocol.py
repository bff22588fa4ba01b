"""The link's wire contract (docs/design.md, "The link"): names, timings, JSON-RPC frames.

Frames are JSON-RPC 2.0 text messages. agentd sends the notification `hello` on every connect;
the control plane sends requests `http` and the notification `http.cancel`; agentd answers
each `http` with a result, preceded by `http.event` notifications when the route streams.
"""

from __future__ import annotations

import json
import random
from typing import Any

SUBPROTOCOL = "agentd.link.v1"
PROTOCOL_VERSION = 1
PING_INTERVAL = 15.0  # WebSocket ping every 15 s
DEAD_AFTER = 45.0  # a link silent this long is dead
BACKOFF_FIRST = 0.5  # reconnect delays: full jitter over 0.5 s, doubling, up to 30 s
BACKOFF_MAX = 30.0


def link_url(control_plane: str, device_id: str) -> str:
    return f"{control_plane.rstrip('/')}/v1/devices/{device_id}/link"


def events_url(control_plane: str, thread_id: str) -> str:
    return f"{control_plane.rstrip('/')}/v1/threads/{thread_id}/events"


def backoff(attempt: int, rng: random.Random | None = None) -> float:
    """The wait before reconnect attempt `attempt` (0-based): full jitter, AWS-style."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**attempt)
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
