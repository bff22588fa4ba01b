"""A small client for the agentd HTTP API (used by `agentd run --url` and `agentd demo`).

It speaks the same API as the control plane: JSON envelopes, and Server-Sent Events for a
run's stream, parsed here per the WHATWG event-stream rules (ids, multi-line data, comments).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp


class ApiError(Exception):
    """The daemon answered with an error envelope (or something that was not JSON)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class SSEEvent:
    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, data: str, id: str | None) -> None:
        self.event = event
        self.data = data
        self.id = id

    def json(self) -> Any:
        return json.loads(self.data)


async def parse_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Yield events from an event-stream body given as raw lines."""
    event, last_id = "", None
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value
    if data:
        yield SSEEvent(event or "message", "\n".join(data), last_id)


class DaemonClient:
    """`async with DaemonClient(url, token) as client:` — one HTTP session to a daemon."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No overall timeout: a run's event stream lasts as long as the run.
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )

    async def __aenter__(self) -> DaemonClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        async with self._session.request(method, self.base_url + path, json=body) as response:
            return await _data_or_raise(response)

    async def upsert_agent(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/agents", spec)
        return result

    async def control(self, run_id: str, action: str, body: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "POST", f"/v1/runs/{run_id}/{action}", body or {}
        )
        return result

    async def stream_run(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Start a run (`POST /v1/run`, streaming) and yield its events as dicts."""
        async with self._session.post(
            self.base_url + "/v1/run", json={**body, "stream": True}
        ) as response:
            if response.status >= 400 or not response.content_type.startswith("text/event-stream"):
                await _data_or_raise(response)
            async for sse in parse_sse(_lines(response)):
                yield sse.json()

    async def stream_events(self, run_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Follow `GET /v1/runs/{id}/events` from event id `after` until the run ends."""
        async with self._session.get(
            f"{self.base_url}/v1/runs/{run_id}/events", params={"after": str(after)}
        ) as response:
            if response.status >= 400:
                await _data_or_raise(response)
            async for sse in parse_sse(_lines(response)):
                yield sse.json()


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    # Split chunks ourselves: aiohttp's readline() refuses lines over its buffer limit
    # (128 KiB), and one event's `data:` line (a large patch, a long output) can be bigger.
    pending = b""
    async for chunk in response.content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
    if pending:
        yield pending


async def _data_or_raise(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise ApiError(response.status, "bad_response", text[:200]) from None
    if response.status >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(
            response.status, error.get("code", "error"), error.get("message", text[:200])
        )
    return body.get("data", body) if isinstance(body, dict) else body
