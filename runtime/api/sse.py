"""Server-sent events: a run's event stream to one HTTP client.

Frames are `id: <id>\\nevent: <type>\\ndata: <json>\\n\\n` with the whole event as one JSON
object on one `data:` line; `retry:` is sent once when the stream opens and a `: ping`
comment whenever the stream has been quiet for the ping interval (proxies and browsers keep
the connection). A client resumes with `Last-Event-ID` (what `EventSource` sends when it
reconnects) or `?after=N`, and receives exactly the events after that id. The stream ends
after the terminal `complete` event.

A slow client never blocks the run: the event log drops a subscriber whose queue overflows,
and the stream then resubscribes from the last id it wrote (replaying from the store), so the
client sees every event once, in order. A client that goes away only ends its own stream;
the run goes on.

The stream reads its events a batch at a time (what was ready at once) and writes a batch's
frames in one write, so a client that is behind catches up with one send rather than one
per event; each frame is encoded once for every client of the run (`FrameCache`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import anyio
from aiohttp import web

from runtime.api.errors import bad_request
from runtime.api.schemas import MAX_INT
from runtime.events import Event, SubscriberDropped

log = logging.getLogger("agentd.api.sse")

# Batches of events after an id (`RunManager.subscribe_batches`); each batch is written at once.
Subscribe = Callable[[int], AsyncIterator[Sequence[Event]]]

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx and friends: do not buffer the stream
}


def format_event(event: Event) -> bytes:
    data = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


# What a cached frame costs beyond its bytes: the bytes object's header, the (run id, event
# id) key tuple and its int, and the dict's slot (measured with sys.getsizeof: ~170).
FRAME_OVERHEAD = 180


class FrameCache:
    """The SSE frames of recent events, encoded once for all the clients that stream them.

    Every client following a run writes the same events: the first to write one encodes it,
    the others reuse its bytes. Keyed by (run id, event id), bounded by `max_bytes` (each
    frame's length plus `FRAME_OVERHEAD`); a frame larger than that is never kept.

    A frame at the head of its run (newer than every kept frame of the run: a live event,
    or the leading reader of a catch-up) is kept, evicting the oldest frames. A frame behind
    the head that is missing (a trailing reader needs what was evicted) is encoded but only
    kept if there is room: readers that catch up on a run longer than the cache each scan it
    in order, and evicting for them would throw out the frames the readers behind them are
    about to need (every reader would then miss every frame, as a plain FIFO or LRU does);
    this way the frames nearer the head stay and every reader hits them.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._frames: dict[tuple[str, int], bytes] = {}
        self._bytes = 0
        # Per run with kept frames: the highest event id kept, and how many frames are kept.
        self._head: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self.encoded = 0  # frames encoded (cache misses), for benchmarks and tests

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames)

    def frame(self, event: Event) -> bytes:
        key = (event.run_id, event.id)
        data = self._frames.get(key)
        if data is not None:
            return data
        data = format_event(event)
        self.encoded += 1
        cost = len(data) + FRAME_OVERHEAD
        if cost > self.max_bytes:
            return data
        run_id = event.run_id
        head = self._head.get(run_id, 0)
        if event.id < head and self._bytes + cost > self.max_bytes:
            return data  # a trailing reader's frame: not worth the frames nearer the head
        while self._bytes + cost > self.max_bytes:
            self._evict_oldest()
        self._frames[key] = data
        self._bytes += cost
        self._count[run_id] = self._count.get(run_id, 0) + 1
        if event.id > head:
            self._head[run_id] = event.id
        return data

    def _evict_oldest(self) -> None:
        key = next(iter(self._frames))  # the oldest kept (dicts keep insertion order)
        data = self._frames.pop(key)
        self._bytes -= len(data) + FRAME_OVERHEAD
        run_id = key[0]
        left = self._count[run_id] - 1
        if left:
            self._count[run_id] = left
        else:
            del self._count[run_id], self._head[run_id]


def resume_point(request: web.Request, after: int | None) -> int:
    """Where a (re)connecting client resumes: `Last-Event-ID` wins over `?after=`."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        try:
            value = int(header.strip())
        except ValueError:
            raise bad_request(
                f"Last-Event-ID must be an event id (an integer >= 0), got {header!r}"
            ) from None
        if not 0 <= value <= MAX_INT:
            raise bad_request(f"Last-Event-ID must be between 0 and {MAX_INT}, got {value}")
        return value
    return after or 0


class EventStream:
    """One SSE response. `await stream.run(subscribe, after)` writes until the run's
    `complete` event (or the client leaves)."""

    def __init__(
        self,
        request: web.Request,
        *,
        retry_ms: int,
        ping_interval: float,
        headers: dict[str, str] | None = None,
        on_frames: Callable[[int], Any] | None = None,
        frames: FrameCache | None = None,
    ) -> None:
        self.request = request
        self.retry_ms = retry_ms
        self.ping_interval = ping_interval
        self.response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **(headers or {})})
        self.last_id = 0
        self.events_sent = 0
        # One write at a time (pings and frames). A semaphore of one rather than a Lock: taking
        # it with acquire_nowait costs no task lookup or yield (anyio's Lock looks up the
        # current task on every acquire and release), and this is taken once per write per
        # client, the fan-out's hot path.
        self._writing = anyio.Semaphore(1, max_value=1)
        self._frames = frames
        self._on_frames = on_frames
        self._scope: anyio.CancelScope | None = None
        self.client_gone = False

    async def _write(self, data: bytes) -> None:
        if self.client_gone:
            return
        try:
            self._writing.acquire_nowait()
        except anyio.WouldBlock:
            await self._writing.acquire()
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            # RuntimeError: aiohttp's "Cannot write to closing transport".
            log.debug("SSE client left after event %s: %s", self.last_id, exc)
            self.client_gone = True
            if self._scope is not None:
                self._scope.cancel()
        finally:
            self._writing.release()

    async def run(self, subscribe: Subscribe, after: int) -> web.StreamResponse:
        self.last_id = after
        await self.response.prepare(self.request)
        await self._write(f"retry: {self.retry_ms}\n\n".encode())
        if not self.client_gone:
            try:
                async with anyio.create_task_group() as tg:
                    self._scope = tg.cancel_scope
                    tg.start_soon(self._heartbeat)
                    await self._pump(subscribe)
                    tg.cancel_scope.cancel()
            except Exception:
                # The status line is sent: all we can do is log and end the stream (the
                # client reconnects with Last-Event-ID).
                log.exception("event stream failed after event %s", self.last_id)
                self.client_gone = True
        if not self.client_gone:
            try:
                await self.response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
        return self.response

    async def _pump(self, subscribe: Subscribe) -> None:
        encode = self._frames.frame if self._frames is not None else format_event
        while True:
            try:
                async with aclosing(subscribe(self.last_id)) as batches:  # type: ignore[type-var]
                    async for batch in batches:
                        frames: list[bytes] = []
                        last_id = self.last_id
                        complete = False
                        for event in batch:
                            if event.id <= last_id:
                                continue  # never twice, whatever the source
                            frames.append(encode(event))
                            last_id = event.id
                            if event.type == "complete":
                                complete = True
                                break
                        if not frames:
                            continue
                        await self._write(frames[0] if len(frames) == 1 else b"".join(frames))
                        if self.client_gone:
                            return
                        self.last_id = last_id
                        self.events_sent += len(frames)
                        if self._on_frames is not None:
                            self._on_frames(len(frames))
                        if complete:
                            return
                return
            except SubscriberDropped:
                # Too slow for the live queue: replay from the store where we stopped.
                log.info("SSE subscriber dropped at event %s; resubscribing", self.last_id)

    async def _heartbeat(self) -> None:
        while True:
            quiet_since = self.events_sent
            await anyio.sleep(self.ping_interval)
            if self.events_sent == quiet_since:
                await self._write(b": ping\n\n")
