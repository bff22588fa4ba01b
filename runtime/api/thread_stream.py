"""The thread stream: one WebSocket client following a thread (`GET /v1/threads/{id}/stream`).

Server → client frames are JSON text:

- first `{"type": "snapshot", "protocol_version": 1, "thread": {…}, "events": [persisted
  events after ?after= (or all)], "activeRunId": … | null}`;
- then every event of every run of the thread as it happens, each frame the event itself: a
  persisted event `{sequence, rolloutId, threadId, runId, type, payload, createdAt}` or a
  live-only one `{type, threadId, runId, payload, createdAt}`;
- `{"type": "control_result", "control", "runId", "ok": true}` or `{"type": "error", "code",
  "message"}` answering a client frame.

Client → server frames: `{"type": "ack", "sequence": N}` (optional: the client has everything
up to N), and the controls of the HTTP routes for the thread's active run (or `runId`):
`{"type": "pause"|"resume"|"cancel"}`, `{"type": "input", "text": …}`.

A client never slows a run and never grows the daemon's memory: it reads from a bounded
`ThreadSubscription`; one that falls behind is dropped and the connection closed with code
4001 (`SLOW_CLIENT`) and a reason naming where to resume (`after=` the last sequence it
acknowledged); a reconnect with `after=` loses nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

import anyio
from aiohttp import WSMsgType, web
from pydantic import ValidationError

from runtime.api.schemas import AckFrame, ClientFrame, ControlFrame, InputFrame
from runtime.api.validation import decode_body
from runtime.runs import RunError
from runtime.store import ThreadRecord
from runtime.thread_log import ThreadEventLog, ThreadSubscriberDropped, ThreadSubscription

log = logging.getLogger("agentd.api.threads")

PROTOCOL_VERSION = 1
SLOW_CLIENT = 4001
"""WebSocket close code: the client read too slowly and was dropped (reconnect with after=)."""
MAX_CLIENT_FRAME = 1024 * 1024


class ThreadRunControls(Protocol):
    """What the stream needs from the run manager: the thread's active run and the controls
    the HTTP routes use (they raise `RunError`s, answered as `error` frames)."""

    def active_run_of(self, thread_id: str) -> str | None: ...

    async def run_thread(self, run_id: str) -> str | None: ...

    async def pause(self, run_id: str) -> Any: ...

    async def resume(self, run_id: str) -> Any: ...

    async def cancel(self, run_id: str) -> Any: ...

    async def send_input(self, run_id: str, text: str) -> Any: ...


class FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ThreadStream:
    """One WebSocket session. `await ThreadStream(...).run()` returns the prepared response
    once the client has gone (or was dropped)."""

    def __init__(
        self,
        request: web.Request,
        thread: ThreadRecord,
        log: ThreadEventLog,
        controls: ThreadRunControls,
        *,
        after: int,
        heartbeat: float,
        close_timeout: float = 5.0,
    ) -> None:
        self.request = request
        self.thread = thread
        self.log = log
        self.controls = controls
        self.after = after
        self.close_timeout = close_timeout
        self.ws = web.WebSocketResponse(
            heartbeat=heartbeat, max_msg_size=MAX_CLIENT_FRAME, timeout=close_timeout
        )
        self.acked = after
        self.sent_sequence = after
        self._send_lock = anyio.Lock()
        self._gone = False

    async def run(self) -> web.WebSocketResponse:
        await self.ws.prepare(self.request)
        subscription = self.log.subscribe(self.after)
        drop_reason: str | None = None
        try:
            events = await subscription.catch_up()
            if events:
                self.sent_sequence = events[-1].sequence
            await self._send(
                json.dumps(
                    {
                        "type": "snapshot",
                        "protocol_version": PROTOCOL_VERSION,
                        "thread": self.thread.model_dump(mode="json", by_alias=True),
                        "events": [e.to_dict() for e in events],
                        "activeRunId": self.controls.active_run_of(self.thread.id),
                    },
                    ensure_ascii=False,
                    separators=(",", ":"),
                )
            )
            async with anyio.create_task_group() as tg:

                async def watch_drop() -> None:
                    nonlocal drop_reason
                    drop_reason = await subscription.wait_dropped()
                    tg.cancel_scope.cancel()

                tg.start_soon(self._pump, subscription, tg.cancel_scope)
                tg.start_soon(watch_drop)
                await self._receive()
                tg.cancel_scope.cancel()
        finally:
            subscription.close()
        if drop_reason is not None:
            log.info(
                "thread %s: dropped a slow stream client (%s); it has up to %d",
                self.thread.id,
                drop_reason,
                self.acked,
            )
            reason = f"slow client: resume with after={self.acked}".encode()
            with anyio.move_on_after(self.close_timeout):
                await self.ws.close(code=SLOW_CLIENT, message=reason)
        elif not self.ws.closed:
            with anyio.move_on_after(self.close_timeout):
                await self.ws.close()
        return self.ws

    async def _send(self, text: str) -> None:
        if self._gone:
            return
        async with self._send_lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                # RuntimeError: aiohttp's "Cannot write to closing transport".
                log.debug("thread stream client left: %s", exc)
                self._gone = True

    async def _pump(self, subscription: ThreadSubscription, scope: anyio.CancelScope) -> None:
        try:
            async for event in subscription:
                await self._send(event.json_text)
                if self._gone:
                    break
                sequence = getattr(event, "sequence", None)
                if sequence is not None:
                    self.sent_sequence = sequence
        except ThreadSubscriberDropped:
            return  # watch_drop closes the connection with SLOW_CLIENT
        scope.cancel()

    async def _receive(self) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                reply = await self._handle(message.data)
            elif message.type == WSMsgType.BINARY:
                reply = _error("invalid_frame", "frames are JSON text, not binary")
            else:  # ERROR (CLOSE and friends end the iteration)
                return
            if reply is not None:
                await self._send(json.dumps(reply, ensure_ascii=False, separators=(",", ":")))
            if self._gone:
                return

    async def _handle(self, data: str) -> dict[str, Any] | None:
        """The answer to one client frame (None for an accepted ack)."""
        try:
            try:
                # the bodies' decoder: a frame nesting thousands deep is refused, not a
                # RecursionError
                frame = ClientFrame.model_validate({"frame": decode_body(data.encode())}).frame
            except ValueError as exc:  # JSON, depth and pydantic's ValidationError alike
                raise FrameError("invalid_frame", _describe(exc)) from None
            if isinstance(frame, AckFrame):
                self._ack(frame)
                return None
            return await self._control(frame)
        except FrameError as exc:
            return _error(exc.code, exc.message)

    def _ack(self, frame: AckFrame) -> None:
        if frame.sequence > self.sent_sequence:
            raise FrameError(
                "invalid_ack",
                f"ack {frame.sequence} is beyond the last event sent ({self.sent_sequence})",
            )
        self.acked = max(self.acked, frame.sequence)

    async def _control(self, frame: ControlFrame | InputFrame) -> dict[str, Any]:
        run_id = frame.run_id or self.controls.active_run_of(self.thread.id)
        if run_id is None:
            raise FrameError("no_active_run", f"thread {self.thread.id} has no active run")
        try:
            if frame.run_id is not None:
                owner = await self.controls.run_thread(run_id)
                if owner != self.thread.id:
                    raise FrameError(
                        "not_found", f"run {run_id!r} is not a run of thread {self.thread.id}"
                    )
            if isinstance(frame, InputFrame):
                await self.controls.send_input(run_id, frame.text)
            elif frame.type == "pause":
                await self.controls.pause(run_id)
            elif frame.type == "resume":
                await self.controls.resume(run_id)
            else:
                await self.controls.cancel(run_id)
        except RunError as exc:
            raise FrameError(exc.code, exc.message) from None
        return {"type": "control_result", "control": frame.type, "runId": run_id, "ok": True}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def _describe(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"][1:]) or "frame"
            problems.append(f"{where}: {error['msg']}")
        return "invalid frame: " + "; ".join(problems)
    return f"frames are JSON objects: {exc}"
