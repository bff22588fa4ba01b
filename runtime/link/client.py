"""The link itself: a WebSocket that agentd dials out to the control plane, kept up forever.

On every connect agentd sends `hello`; then it serves the control plane's `http` requests
(each in its own task, so a long stream does not hold up the rest) and `http.cancel`
notifications. The WebSocket is pinged every 15 s and a link silent for 45 s (no frame of any
kind, pongs included) is dead; a dead or dropped link is dialled again after a backoff with
full jitter (0.5 s doubling to 30 s), forever, while runs go on. The backoff starts again from
its first step only after a link that stayed up for `STABLE_AFTER` (30 s): a link accepted and
dropped at once counts as a failed dial. Streams cut by a drop are not resumed here: the
control plane asks again over the new link with `Last-Event-ID`. A 401/403 at the handshake
raises `LinkRefused`.

A dial is bounded: connect, WebSocket upgrade and `hello` within `HANDSHAKE_TIMEOUT`, or it
failed and is retried with the backoff; a link that drops during the handshake is a dropped
link like any other. A frame that breaks the contract gets its JSON-RPC error (a notification
is logged and dropped), and a failure while handling one frame is logged and answered
-32603: no frame ends the link, let alone the daemon. The one exception is a frame over
`max_frame_bytes` (`protocol.max_frame_bytes`: any request body the local API accepts fits),
which is not read: the link is closed with 1009 and dialled again.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
from anyio.abc import TaskGroup

from runtime.link.dispatch import BadHttpParams, Dispatch
from runtime.link.outbox import LinkRefused
from runtime.link.protocol import (
    DEAD_AFTER,
    FRAME_MIN,
    HANDSHAKE_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    PING_INTERVAL,
    PROTOCOL_VERSION,
    STABLE_AFTER,
    SUBPROTOCOL,
    FrameError,
    HttpCancel,
    HttpRequest,
    RequestId,
    backoff,
    error,
    link_url,
    notification,
    parse_frame,
    result,
)

log = logging.getLogger("agentd.link")

Hello = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[str], Awaitable[None]]
Streams = dict[RequestId, anyio.CancelScope]

# The longest an answer that reports a failure may wait for room on a congested link.
ERROR_SEND_TIMEOUT = 5.0
# The longest closing a WebSocket whose handshake failed may take (its peer may not answer).
CLOSE_TIMEOUT = 5.0
LOCAL_API_FAILED = -32000  # a server error of our own (JSON-RPC leaves -32000..-32099 to us)


class Link:
    """Keeps the link up and serves it; `run()` until cancelled or `LinkRefused`.

    The timings are the contract's (`protocol`); a test may shorten them. `rng` draws the
    backoff's waits (`random.Random.uniform` over [0, the attempt's ceiling]).
    `max_frame_bytes`: the largest frame read (`connect` ties it to the daemon's body cap)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        control_plane: str,
        device_id: str,
        token: str,
        dispatcher: Dispatch,
        hello: Hello,
        rng: random.Random | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        ping_interval: float = PING_INTERVAL,
        dead_after: float = DEAD_AFTER,
        stable_after: float = STABLE_AFTER,
        max_frame_bytes: int = FRAME_MIN,
    ) -> None:
        self.session = session
        self.url = link_url(control_plane, device_id)
        self.token = token
        self.dispatcher = dispatcher
        self.hello = hello
        self.rng = rng or random.Random()
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.dead_after = dead_after
        self.stable_after = stable_after
        self.max_frame_bytes = max_frame_bytes
        self.connects = 0
        self.connected = anyio.Event()

    async def run(self) -> None:
        attempt = 0
        while True:
            ws = await self._handshake()
            if ws is not None:
                opened = anyio.current_time()
                async with ws:
                    try:
                        await self._serve(ws)
                    except Exception:
                        # A bug here must not stop the daemon: the link is dialled again,
                        # as after any drop, and the traceback says what went wrong.
                        log.exception("link: serving %s failed", self.url)
                log.warning("link: lost (%s); reconnecting", ws.close_code or "dropped")
                if anyio.current_time() - opened >= self.stable_after:
                    attempt = 0  # it stayed up: the control plane took it, dial again soon
            delay = backoff(attempt, self.rng)
            attempt += 1
            await anyio.sleep(delay)

    async def _handshake(self) -> aiohttp.ClientWebSocketResponse | None:
        """Dial, upgrade and send `hello`, all within `handshake_timeout`: the open link, or
        None when this dial failed (logged in one line). A 401/403 raises `LinkRefused`."""
        ws: aiohttp.ClientWebSocketResponse | None = None
        opened = False
        try:
            with anyio.move_on_after(self.handshake_timeout) as deadline:
                ws = await self.session.ws_connect(
                    self.url,
                    protocols=(SUBPROTOCOL,),
                    headers={"Authorization": f"Bearer {self.token}"},
                    # No `heartbeat`: aiohttp's closes a link whose pong is late by half the
                    # interval (silent for 22.5 s). `_ping` pings; a receive that hears
                    # nothing (pongs included) for `dead_after` raises TimeoutError.
                    timeout=aiohttp.ClientWSTimeout(
                        ws_receive=self.dead_after, ws_close=CLOSE_TIMEOUT
                    ),
                    max_msg_size=self.max_frame_bytes,
                )
                await ws.send_str(notification("hello", await self.hello()))
                opened = True
            if deadline.cancelled_caught:
                log.warning(
                    "link: no handshake with %s within %g s; dialling again",
                    self.url,
                    self.handshake_timeout,
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise LinkRefused(
                    f"the control plane refused the token at {self.url} ({exc.status})"
                ) from exc
            log.warning("link: %s refused the connection (%s)", self.url, exc.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # After the upgrade, this is the link dropping under `hello`: a drop like any other.
            failed = "dropped during the handshake" if ws is not None else "cannot reach"
            log.warning("link: %s %s (%s: %s)", failed, self.url, type(exc).__name__, exc)
        finally:
            if ws is not None and not opened:
                with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                    await ws.close()
        return ws if opened else None

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        send_lock = anyio.Lock()

        async def send(text: str) -> None:
            async with send_lock:
                await ws.send_str(text)

        streams: Streams = {}
        self.connects += 1
        self.connected.set()
        log.info("link: connected to %s", self.url)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._ping, ws)
            try:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.ERROR:
                        # aiohttp closes the link after it (a frame over `max_frame_bytes`
                        # is 1009, unread): say why
                        log.warning("link: closing it (%s)", message.data)
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    await self._on_frame(message.data, send, streams, tasks)
            except TimeoutError:
                log.warning("link: nothing heard for %g s; it is dead", self.dead_after)
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.warning("link: read failed (%s)", exc)
            finally:
                tasks.cancel_scope.cancel()  # a dropped link ends its streams and its pings

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A ping every `ping_interval`: a live control plane's pongs keep a quiet link from
        counting as silent. Only silence ends the link (the receive in `_serve`, after
        `dead_after`): a late pong is no failure of its own. Not under the send lock: a ping
        is written whole at once, between frames, like aiohttp's own."""
        while True:
            await anyio.sleep(self.ping_interval)
            try:
                await ws.ping()
            except (aiohttp.ClientError, ConnectionError):
                return  # the link is going: `_serve`'s receive sees it

    async def _on_frame(self, text: str, send: Send, streams: Streams, tasks: TaskGroup) -> None:
        """One frame from the control plane. Whatever it holds, the link stays up: a frame
        that breaks the contract gets its JSON-RPC error (a notification is logged and
        dropped), and an unexpected failure is logged and answered INTERNAL_ERROR. Only a
        failed send (the link is gone) goes up, to `_serve`."""
        frame = None
        try:
            frame = parse_frame(text)
            if isinstance(frame, HttpRequest):
                scope = anyio.CancelScope()
                streams[frame.id] = scope
                tasks.start_soon(self._http, frame, send, streams, scope)
            elif isinstance(frame, HttpCancel):
                stream = streams.get(frame.request_id)
                if stream is not None:
                    stream.cancel()
                if frame.is_request:
                    await send(result(frame.id, {}))
            # else a response: agentd asks nothing, so there is nothing to match it with
        except FrameError as exc:
            if exc.answer:
                await send(error(exc.request_id, exc.code, exc.message))
            else:
                log.warning("link: dropped a notification that breaks the contract: %s", exc)
        except (aiohttp.ClientError, ConnectionError):
            raise
        except Exception:
            log.exception("link: a frame could not be handled")
            if isinstance(frame, HttpRequest) or (
                isinstance(frame, HttpCancel) and frame.is_request
            ):
                await send(error(frame.id, INTERNAL_ERROR, "internal error"))

    async def _http(
        self, request: HttpRequest, send: Send, streams: Streams, scope: anyio.CancelScope
    ) -> None:
        """One `http` request, in a task of its own. It ends in its answer (none if the link
        dropped under it), never in an exception: that would end the link's task group."""
        request_id = request.id

        async def send_event(event: dict[str, Any]) -> None:
            await send(notification("http.event", {"requestId": request_id, **event}))

        send_within: float | None = None  # a result waits its turn like the events before it
        try:
            with scope:
                answer = await self.dispatcher(request.params, send_event)
            if scope.cancelled_caught:
                answer = {"status": 200, "headers": {}, "body": None, "cancelled": True}
            reply = result(request_id, answer)
        except BadHttpParams as exc:
            reply = error(request_id, INVALID_PARAMS, str(exc))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reply = error(request_id, LOCAL_API_FAILED, f"the local API failed: {exc}")
            send_within = ERROR_SEND_TIMEOUT
        except ConnectionError:
            return  # the link dropped under the stream: the control plane asks again
        except Exception:
            log.exception("link: the http request %r failed", request_id)
            reply = error(request_id, INTERNAL_ERROR, "internal error")
            send_within = ERROR_SEND_TIMEOUT
        finally:
            if streams.get(request_id) is scope:  # not a later request that reused the id
                del streams[request_id]
        try:
            with anyio.move_on_after(send_within):
                await send(reply)
        except (aiohttp.ClientError, ConnectionError):
            pass  # the link dropped under the answer: the control plane asks again


def platform_name() -> str:
    return "darwin" if sys.platform == "darwin" else "linux"


__all__ = ["PROTOCOL_VERSION", "Link", "platform_name"]
