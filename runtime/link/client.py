"""The link itself: a WebSocket that agentd dials out to the control plane, kept up forever.

On every connect agentd sends `hello`; then it serves the control plane's `http` requests
(each in its own task, so a long stream does not hold up the rest) and `http.cancel`
notifications. The WebSocket is pinged every 15 s and a link silent for 45 s is dead; a dead or
dropped link is dialled again after a backoff with full jitter (0.5 s doubling to 30 s),
forever, while runs go on. Streams cut by a drop are not resumed here: the control plane asks
again over the new link with `Last-Event-ID`. A 401/403 at the handshake raises `LinkRefused`.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
from anyio.abc import TaskGroup

from runtime.link.dispatch import BadHttpParams, HttpDispatcher
from runtime.link.outbox import LinkRefused
from runtime.link.protocol import (
    DEAD_AFTER,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PING_INTERVAL,
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    backoff,
    error,
    link_url,
    notification,
    result,
)

log = logging.getLogger("agentd.link")

Hello = Callable[[], Awaitable[dict[str, Any]]]


class Link:
    """Keeps the link up and serves it; `run()` until cancelled or `LinkRefused`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        control_plane: str,
        device_id: str,
        token: str,
        dispatcher: HttpDispatcher,
        hello: Hello,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.url = link_url(control_plane, device_id)
        self.token = token
        self.dispatcher = dispatcher
        self.hello = hello
        self.rng = rng or random.Random()
        self.connects = 0
        self.connected = anyio.Event()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                ws = await self.session.ws_connect(
                    self.url,
                    protocols=(SUBPROTOCOL,),
                    headers={"Authorization": f"Bearer {self.token}"},
                    heartbeat=PING_INTERVAL,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=DEAD_AFTER),
                    max_msg_size=16 * 1024 * 1024,
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    raise LinkRefused(
                        f"the control plane refused the token at {self.url} ({exc.status})"
                    ) from exc
                log.warning("link: %s refused the connection (%s)", self.url, exc.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("link: cannot reach %s (%s: %s)", self.url, type(exc).__name__, exc)
            else:
                attempt = 0
                async with ws:
                    await self._serve(ws)
                log.warning("link: lost (%s); reconnecting", ws.close_code or "dropped")
            delay = backoff(attempt, self.rng)
            attempt += 1
            await anyio.sleep(delay)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        send_lock = anyio.Lock()

        async def send(text: str) -> None:
            async with send_lock:
                await ws.send_str(text)

        streams: dict[Any, anyio.CancelScope] = {}
        await send(notification("hello", await self.hello()))
        self.connects += 1
        self.connected.set()
        log.info("link: connected to %s", self.url)
        async with anyio.create_task_group() as tasks:
            try:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    await self._on_frame(message.data, send, streams, tasks)
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                log.warning("link: read failed (%s)", exc)
            finally:
                tasks.cancel_scope.cancel()  # a dropped link ends its streams

    async def _on_frame(
        self,
        text: str,
        send: Callable[[str], Awaitable[None]],
        streams: dict[Any, anyio.CancelScope],
        tasks: TaskGroup,
    ) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            await send(error(None, PARSE_ERROR, "the frame is not JSON"))
            return
        if not isinstance(frame, dict) or frame.get("jsonrpc") != "2.0":
            await send(error(None, INVALID_REQUEST, "expected a JSON-RPC 2.0 object"))
            return
        method, params, request_id = frame.get("method"), frame.get("params"), frame.get("id")
        if method == "http.cancel":
            scope = streams.get((params or {}).get("requestId"))
            if scope is not None:
                scope.cancel()
            return
        if method is None:
            return  # a response to something we never ask: ignore
        if method != "http":
            if request_id is not None:
                await send(error(request_id, METHOD_NOT_FOUND, f"unknown method {method!r}"))
            return
        if request_id is None:
            return  # `http` must be a request to be answered
        if not isinstance(params, dict):
            await send(error(request_id, INVALID_PARAMS, "params must be an object"))
            return
        scope = anyio.CancelScope()
        streams[request_id] = scope
        tasks.start_soon(self._http, request_id, params, send, streams, scope)

    async def _http(
        self,
        request_id: Any,
        params: dict[str, Any],
        send: Callable[[str], Awaitable[None]],
        streams: dict[Any, anyio.CancelScope],
        scope: anyio.CancelScope,
    ) -> None:
        answer: dict[str, Any] | None = None

        async def send_event(event: dict[str, Any]) -> None:
            await send(notification("http.event", {"requestId": request_id, **event}))

        try:
            with scope:
                answer = await self.dispatcher(params, send_event)
            if scope.cancelled_caught:
                await send(
                    result(
                        request_id, {"status": 200, "headers": {}, "body": None, "cancelled": True}
                    )
                )
            elif answer is not None:
                await send(result(request_id, answer))
        except BadHttpParams as exc:
            await send(error(request_id, INVALID_PARAMS, str(exc)))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            with anyio.move_on_after(5):
                await send(error(request_id, -32000, f"the local API failed: {exc}"))
        except ConnectionError:
            pass  # the link dropped under the answer: the control plane asks again
        finally:
            streams.pop(request_id, None)


def platform_name() -> str:
    return "darwin" if sys.platform == "darwin" else "linux"


__all__ = ["PROTOCOL_VERSION", "Link", "platform_name"]
