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
per event; each frame is encoded once for every client of the run (`FrameCache`). Clients
that have caught up with a live run follow its `LiveFeed`: one of their streams reads the run
and writes each batch to all of them, so an event wakes one task rather than one per client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from aiohttp import web

from runtime import events
from runtime.api.errors import bad_request
from runtime.api.wire import MAX_INT

if TYPE_CHECKING:
    from runtime.events import Event

log = logging.getLogger("agentd.api.sse")

# Batches of events after an id (`RunManager.subscribe_batches`); each batch is written at once.
Subscribe = Callable[[int], AsyncIterator[Sequence["Event"]]]

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
        # Per run whose `complete` frame is kept: that event's id.
        self._complete: dict[str, int] = {}
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
        if event.type == "complete":
            self._complete[run_id] = event.id
        return data

    def has(self, run_id: str, event_id: int) -> bool:
        """Whether the frame of the run's event `event_id` is kept."""
        return (run_id, event_id) in self._frames

    def kept_after(self, run_id: str, after: int, limit: int) -> tuple[list[bytes], bool]:
        """The kept frames of the run's events `after + 1`, `after + 2`, … up to the first
        one not kept (at most `limit`), and whether the last of them is the run's `complete`.
        A client catching up on what other clients' streams have written gets these bytes
        without its own read of the run's events or their decoding."""
        frames: list[bytes] = []
        get = self._frames.get
        next_id = after + 1
        while len(frames) < limit:
            data = get((run_id, next_id))
            if data is None:
                break
            frames.append(data)
            next_id += 1
        return frames, bool(frames) and self._complete.get(run_id) == next_id - 1

    def _evict_oldest(self) -> None:
        key = next(iter(self._frames))  # the oldest kept (dicts keep insertion order)
        data = self._frames.pop(key)
        self._bytes -= len(data) + FRAME_OVERHEAD
        run_id = key[0]
        if self._complete.get(run_id) == key[1]:
            del self._complete[run_id]
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


# The most frames a stream writes at once from the frame cache, as many as a batch of events
# (`RunManager.subscribe_batches`).
BATCH_LIMIT = 256

# A stream joins its run's feed after a batch of fewer events than this: the batch was all
# that was waiting, so it has caught up. (Batches of a catch-up are 256 events, the limit of
# `RunManager.subscribe_batches`: those readers stay alone, each at its own pace.)
JOIN_BELOW = 64


class LiveFeed:
    """The streams of one run that are caught up with it, and the one of them that reads the
    run for all (the driver).

    A live event used to wake every client's task to write one frame; now the driver's task
    wakes once and writes the frame to every member, whose tasks sleep until they are
    released: the run ended, their client left, or they fell behind (their transport's
    buffer would pass its high-water mark, so a write could wait) and go back to reading on
    their own, from their last id, until they are caught up again. `LiveFeeds` holds them."""

    def __init__(self, key: str, last_id: int) -> None:
        self.key = key
        # Every event up to here has been handed to the members (each has it, or was released
        # before it); a stream may join once it has written this far.
        self.last_id = last_id
        self.members: list[EventStream] = []
        self.driver: EventStream | None = None


class LiveFeeds:
    """The `LiveFeed` of each run that has caught-up streams (on the API state)."""

    def __init__(self) -> None:
        self._feeds: dict[str, LiveFeed] = {}

    def get(self, key: str) -> LiveFeed | None:
        """The run's feed, while it has members."""
        return self._feeds.get(key)

    def member_count(self, key: str) -> int:
        """How many streams of the run are following its feed."""
        feed = self._feeds.get(key)
        return len(feed.members) if feed is not None else 0

    def join(self, key: str, stream: EventStream) -> LiveFeed | None:
        """Add `stream` to the run's feed if it has written every event the feed has handed
        out (making the feed, with `stream` its driver, if there is none); None otherwise."""
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = LiveFeed(key, stream.last_id)
        elif stream.last_id < feed.last_id:
            return None
        feed.members.append(stream)
        if feed.driver is None:
            feed.driver = stream
        return feed

    def leave(self, feed: LiveFeed, stream: EventStream) -> None:
        """Take `stream` out of the feed; a driver hands its part to the oldest member left."""
        if stream in feed.members:
            feed.members.remove(stream)
        if feed.driver is stream:
            feed.driver = None
            if feed.members:
                feed.driver = feed.members[0]
                feed.members[0].released("drive")
        if not feed.members and self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]

    def end(self, feed: LiveFeed, reason: str) -> None:
        """The run's events are over: release every member (`complete` or `ended`)."""
        members, feed.members = feed.members, []
        feed.driver = None
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
        for member in members:
            member.released(reason)


class EventStream:
    """One SSE response. `await stream.run(subscribe, after)` writes until the run's
    `complete` event (or the client leaves).

    With `feeds` and `feed_key` (the run id), a stream that has caught up with the run joins
    its `LiveFeed`: from then on one stream's task reads the run and writes each batch to every
    caught-up client, instead of every client's task waking for every event. With `frames`
    and `feed_key`, a stream catching up writes what the cache keeps of the run after its
    last event before it reads the run (`_write_kept_frames`)."""

    def __init__(
        self,
        request: web.Request,
        *,
        retry_ms: int,
        ping_interval: float,
        headers: dict[str, str] | None = None,
        on_frames: Callable[[int], Any] | None = None,
        frames: FrameCache | None = None,
        feeds: LiveFeeds | None = None,
        feed_key: str | None = None,
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
        self._encode = frames.frame if frames is not None else format_event
        self._on_frames = on_frames
        self._feeds = feeds if feed_key is not None else None
        self._feed_key = feed_key or ""
        # Set when this stream, a member of a feed, is released (why: `_release_reason`).
        self._released = anyio.Event()
        self._release_reason: str | None = None
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
        while True:
            feed = await self._read_alone(subscribe)
            if feed is None or not await self._follow(feed, subscribe):
                return

    async def _read_alone(self, subscribe: Subscribe) -> LiveFeed | None:
        """Read the run with a subscription of its own (catching up, or without feeds) until
        the end (None: `complete` written, client gone, or no more events) or until it has
        caught up with the run's feed and joined it."""
        while True:
            if not await self._write_kept_frames():
                return None
            if self._feeds is not None and self._feeds.get(self._feed_key) is not None:
                # Caught up, from the cache, with what the run's feed has handed out: follow
                # it now. Reading on alone, it would join only after the run's next event,
                # keeping a subscription of its own until then.
                feed = self._feeds.join(self._feed_key, self)
                if feed is not None:
                    return feed
            try:
                async with aclosing(subscribe(self.last_id)) as batches:  # type: ignore[type-var]
                    async for batch in batches:
                        if not await self._write_batch(batch):
                            return None
                        if self._feeds is not None and len(batch) < JOIN_BELOW:
                            feed = self._feeds.join(self._feed_key, self)
                            if feed is not None:
                                return feed
                        if self._next_frame_kept():
                            break  # another stream is ahead: take what it wrote from the cache
                    else:
                        return None
            except events.SubscriberDropped:
                # Too slow for the live queue: replay from the store where we stopped.
                log.info("SSE subscriber dropped at event %s; resubscribing", self.last_id)

    def _next_frame_kept(self) -> bool:
        return (
            self._frames is not None
            and bool(self._feed_key)
            and self._frames.has(self._feed_key, self.last_id + 1)
        )

    async def _write_kept_frames(self) -> bool:
        """Write what the frame cache keeps of the run right after `last_id`, a batch at a
        time, before reading the run: a client catching up on events other clients' streams
        have written reads none of them from the store and decodes none (on a run longer than
        the in-memory log, each reader used to decode every stored event for itself). False
        once `complete` is written or the client is gone."""
        if self._frames is None or not self._feed_key:
            return True
        while True:
            frames, complete = self._frames.kept_after(self._feed_key, self.last_id, BATCH_LIMIT)
            if not frames:
                return True
            if not await self._send(frames, self.last_id + len(frames)) or complete:
                return False
            await anyio.lowlevel.checkpoint()  # other streams' turn between batches

    async def _write_batch(self, batch: Sequence[Event]) -> bool:
        """Write the batch's events after `last_id`; False once `complete` is written or the
        client is gone."""
        frames: list[bytes] = []
        last_id = self.last_id
        complete = False
        for event in batch:
            if event.id <= last_id:
                continue  # never twice, whatever the source
            frames.append(self._encode(event))
            last_id = event.id
            if event.type == "complete":
                complete = True
                break
        if not frames:
            return True
        return await self._send(frames, last_id) and not complete

    async def _send(self, frames: list[bytes], last_id: int) -> bool:
        """Write `frames` (the events up to `last_id`) in one write and count them; False if
        the client is gone."""
        await self._write(frames[0] if len(frames) == 1 else b"".join(frames))
        if self.client_gone:
            return False
        self.last_id = last_id
        self.events_sent += len(frames)
        if self._on_frames is not None:
            self._on_frames(len(frames))
        return True

    # -- following a run's feed ----------------------------------------------------------

    def released(self, reason: str) -> None:
        """Wake this member of a feed: `drive` (read the run for the feed now), `behind`
        (read alone again), `gone` (its client left), `complete` or `ended` (the run's
        events are over). A later reason replaces one not yet acted on."""
        self._release_reason = reason
        self._released.set()

    async def _follow(self, feed: LiveFeed, subscribe: Subscribe) -> bool:
        """Follow the feed (driving it when it is this stream's turn) until released; True:
        it fell behind and reads alone again."""
        assert self._feeds is not None
        try:
            while True:
                if feed.driver is self:
                    await self._drive(feed, subscribe)
                await self._released.wait()
                reason = self._release_reason
                self._released = anyio.Event()
                self._release_reason = None
                if reason != "drive":
                    return reason == "behind"
        finally:
            self._feeds.leave(feed, self)

    async def _drive(self, feed: LiveFeed, subscribe: Subscribe) -> None:
        """Read the run and hand each batch to the feed's members, until this stream is no
        longer the driver (released, or the run's events are over)."""
        assert self._feeds is not None
        while feed.driver is self:
            after = min((m.last_id for m in feed.members), default=self.last_id)
            try:
                async with aclosing(subscribe(after)) as batches:  # type: ignore[type-var]
                    async for batch in batches:
                        await self._hand_out(feed, batch)
                        if feed.driver is not self:
                            return
                self._feeds.end(feed, "ended")  # no more events, and no `complete`
            except events.SubscriberDropped:
                log.info("SSE feed of %s dropped at event %s; resubscribing", feed.key, after)

    async def _hand_out(self, feed: LiveFeed, batch: Sequence[Event]) -> None:
        """Write the batch to every member (each from its own last id: members normally
        share one buffer), releasing those that fell behind or left."""
        assert self._feeds is not None
        events: list[Event] = []
        complete = False
        for event in batch:
            events.append(event)
            if event.type == "complete":
                complete = True
                break
        if not events:
            return
        last = events[-1].id
        feed.last_id = max(feed.last_id, last)
        shared: dict[int, tuple[bytes, int]] = {}
        for member in list(feed.members):
            if member.last_id >= last:
                continue
            entry = shared.get(member.last_id)
            if entry is None:
                frames = [self._encode(e) for e in events if e.id > member.last_id]
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                entry = shared[member.last_id] = (data, len(frames))
            reason = await member.take_frames(entry[0], entry[1], last)
            if reason is not None:
                self._feeds.leave(feed, member)
                member.released(reason)
        if complete:
            self._feeds.end(feed, "complete")

    async def take_frames(self, data: bytes, count: int, last_id: int) -> str | None:
        """(From the feed's driver.) Write frames up to `last_id` to this client now, or say
        why not: `behind` when its transport's buffer would pass the high-water mark (the
        write could wait, holding up every other member), `gone` when the client left."""
        if self.client_gone:
            return "gone"
        transport = self.request.transport
        if transport is None or transport.is_closing():
            self.client_gone = True
            return "gone"
        if transport.get_write_buffer_size() + len(data) > transport.get_write_buffer_limits()[1]:
            return "behind"
        try:
            self._writing.acquire_nowait()
        except anyio.WouldBlock:
            return "behind"  # a ping is being written
        # Before the write: should it wait after all, a driver taking over meanwhile must
        # not write these frames again.
        self.last_id = last_id
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("SSE client left after event %s: %s", last_id, exc)
            self.client_gone = True
            return "gone"
        finally:
            self._writing.release()
        self.events_sent += count
        if self._on_frames is not None:
            self._on_frames(count)
        return None

    async def _heartbeat(self) -> None:
        while True:
            quiet_since = self.events_sent
            await anyio.sleep(self.ping_interval)
            if self.events_sent == quiet_since:
                await self._write(b": ping\n\n")
