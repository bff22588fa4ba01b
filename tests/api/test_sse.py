"""The SSE event stream: framing, retry, heartbeats, resumption, several clients."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import anyio
import anyio.abc
import httpx_sse
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.api.sse import FRAME_OVERHEAD, EventStream, FrameCache, LiveFeeds, format_event
from runtime.api.state import STATE_KEY
from runtime.events import Event, EventLog, SubscriberDropped
from tests.api.conftest import Daemon, DaemonFactory, collect_events, read_frames
from tests.fakes.model_server import Gate, Turn, text


async def finished_run(daemon: Daemon, *chunks: str) -> str:
    await daemon.upsert()
    daemon.model.script(Turn([text(*chunks)]))
    return (await daemon.run())["runId"]


async def test_frames_retry_and_end_after_complete(daemon: Daemon) -> None:
    run_id = await finished_run(daemon, "a", "b", "c")
    async with daemon.session.get(daemon.u(f"/v1/runs/{run_id}/events")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"].startswith("no-cache")
        assert resp.headers["X-Run-ID"] == run_id
        raw = (await resp.read()).decode()
    blocks = raw.split("\n\n")
    assert blocks[0] == "retry: 2000" and raw.count("retry:") == 1
    assert blocks[-1] == ""  # ends with a blank line, then the connection closes
    events = [b for b in blocks[1:] if b]
    for number, block in enumerate(events, start=1):
        lines = block.split("\n")
        assert lines[0] == f"id: {number}" and lines[1].startswith("event: ")
        assert len(lines) == 3 and lines[2].startswith("data: {")
    assert events[-1].split("\n")[1] == "event: complete"


@pytest.mark.parametrize("how", ["header", "query", "both"])
async def test_resume_after_an_event_id(daemon: Daemon, how: str) -> None:
    run_id = await finished_run(daemon, "x", "y")
    async with daemon.session.get(daemon.u(f"/v1/runs/{run_id}/events")) as resp:
        everything = await collect_events(resp)
    cut = 2
    headers, query = {}, ""
    if how in ("header", "both"):
        headers["Last-Event-ID"] = str(cut)
    if how == "query":
        query = f"?after={cut}"
    if how == "both":
        query = "?after=0"  # Last-Event-ID (what a reconnecting EventSource sends) wins
    url = daemon.u(f"/v1/runs/{run_id}/events{query}")
    async with daemon.session.get(url, headers=headers) as resp:
        rest = await collect_events(resp)
    assert [f.id for f in rest] == [f.id for f in everything if f.id > cut]
    assert [f.data for f in rest] == [f.data for f in everything[cut:]]


async def test_resume_past_the_end_yields_nothing_and_bad_ids_are_400(daemon: Daemon) -> None:
    run_id = await finished_run(daemon, "x")
    async with daemon.session.get(daemon.u(f"/v1/runs/{run_id}/events?after=999")) as resp:
        assert await collect_events(resp) == []
    for headers, query in (({"Last-Event-ID": "abc"}, ""), ({}, "?after=-1")):
        url = daemon.u(f"/v1/runs/{run_id}/events{query}")
        async with daemon.session.get(url, headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] in ("invalid_request", "validation_error")


async def test_two_clients_on_one_live_run_see_the_same_events(daemon: Daemon) -> None:
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("live ", "and ", "shared")], hold=gate, hold_after=3))
    seen: dict[str, list] = {}
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "go"}
    ) as starter:
        run_id = starter.headers["X-Run-ID"]

        async def watch(name: str) -> None:
            async with httpx_sse.aconnect_sse(
                daemon.http, "GET", daemon.u(f"/v1/runs/{run_id}/events")
            ) as source:
                seen[name] = [
                    (int(e.id), e.event, e.json()) async for e in source.aiter_sse() if e.data
                ]

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, "a")
            tg.start_soon(watch, "b")
            feeds = daemon.app[STATE_KEY].feeds
            with anyio.fail_after(10):
                await gate.reached.wait()
                (run,) = daemon.manager.active_runs()
                # the starter, a and b have caught up and follow the run's feed, which reads
                # the run once for the three
                while feeds.member_count(run_id) < 3:
                    await anyio.sleep(0.01)
                assert run.events.subscriber_count == 1
            gate.open()
        seen["starter"] = [(f.id, f.event, f.data) for f in await collect_events(starter)]
    assert seen["a"] == seen["b"] == seen["starter"]
    assert seen["a"][-1][1] == "complete" and seen["a"][-1][2]["output"] == "live and shared"


async def test_a_client_caught_up_from_the_cache_follows_the_feed_before_the_next_event(
    daemon: Daemon,
) -> None:
    """A client that connects while the run is held, after every event so far was written,
    catches up from the frame cache and joins the run's feed at once: it does not wait for
    the run's next event, holding a subscription of its own meanwhile."""
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("held ", "then ", "done")], hold=gate, hold_after=3))
    feeds = daemon.app[STATE_KEY].feeds
    seen: list[tuple[int, str, dict]] = []
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "go"}
    ) as starter:
        run_id = starter.headers["X-Run-ID"]

        async def watch() -> None:
            async with httpx_sse.aconnect_sse(
                daemon.http, "GET", daemon.u(f"/v1/runs/{run_id}/events")
            ) as source:
                seen.extend(
                    [(int(e.id), e.event, e.json()) async for e in source.aiter_sse() if e.data]
                )

        with anyio.fail_after(10):
            await gate.reached.wait()
            while feeds.member_count(run_id) < 1:  # the starter follows the feed
                await anyio.sleep(0.01)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                with anyio.fail_after(10):
                    while feeds.member_count(run_id) < 2:  # no event comes until the gate opens
                        await anyio.sleep(0.01)
            finally:
                gate.open()
        frames = [(f.id, f.event, f.data) for f in await collect_events(starter)]
    assert seen == frames and seen[-1][1] == "complete"


def frame_event(run_id: str, number: int) -> Event:
    """Event `number` (< 1000) of a run; every such event's frame has the same length."""
    return Event(
        id=1000 + number,
        run_id=run_id,
        type="text",
        ts="2026-01-01T00:00:00.000Z",
        payload={"content": f"chunk {number:05}"},
    )


def frame_cost(run_id: str = "run_a") -> int:
    """What one of `frame_event`'s frames costs the cache (all are the same length)."""
    return len(format_event(frame_event(run_id, 1))) + FRAME_OVERHEAD


def test_frame_cache_encodes_each_event_once_per_run_and_keeps_the_recent_ones() -> None:
    cache = FrameCache(max_bytes=2 * frame_cost())
    first = cache.frame(frame_event("run_a", 1))
    assert first == format_event(frame_event("run_a", 1))
    assert cache.frame(frame_event("run_a", 1)) is first  # the second client reuses the bytes
    other = cache.frame(frame_event("run_b", 1))  # same id, another run: its own frame
    assert other != first and b"run_b" in other
    cache.frame(frame_event("run_a", 2))  # the head of run_a: the oldest (run_a 1) goes
    assert len(cache) == 2 and cache.bytes_used == 2 * frame_cost()
    again = cache.frame(frame_event("run_a", 1))
    assert again == first and again is not first
    assert cache.encoded == 4


def test_frame_cache_stays_within_its_byte_budget() -> None:
    budget = 10 * frame_cost() + frame_cost() // 2
    cache = FrameCache(max_bytes=budget)
    for number in range(1, 101):  # live events of two runs, interleaved
        for run_id in ("run_a", "run_b"):
            cache.frame(frame_event(run_id, number))
            assert cache.bytes_used <= budget
    assert len(cache) == 10
    # the 10 newest stayed: 96..100 of both runs
    encoded = cache.encoded
    for number in range(96, 101):
        cache.frame(frame_event("run_a", number))
        cache.frame(frame_event("run_b", number))
    assert cache.encoded == encoded
    # a frame larger than the whole budget is encoded, returned, and not kept
    huge = Event(id=101, run_id="run_a", type="text", ts="t", payload={"content": "x" * budget})
    assert cache.frame(huge) == format_event(huge)
    assert len(cache) == 10 and cache.bytes_used <= budget


def test_frame_cache_readers_catching_up_on_a_longer_run_share_the_newer_frames() -> None:
    """Readers that each scan a run longer than the cache, in order, one after another (what
    catch-up clients do): a FIFO or LRU cache would have every reader miss every frame; this
    one keeps the frames nearer the head, so every reader after the first hits those."""
    events, kept, readers = 100, 40, 5
    cache = FrameCache(max_bytes=kept * frame_cost())
    for _ in range(readers):
        for number in range(1, events + 1):
            assert cache.frame(frame_event("run_a", number)) == format_event(
                frame_event("run_a", number)
            )
    assert cache.encoded == events + (readers - 1) * (events - kept)
    # a live event of another run still gets in (the oldest frames go)
    live = cache.frame(frame_event("run_b", 1))
    assert cache.frame(frame_event("run_b", 1)) is live
    assert cache.bytes_used <= kept * frame_cost()


def test_frame_cache_forgets_a_run_whose_frames_are_all_gone() -> None:
    cache = FrameCache(max_bytes=5 * frame_cost())
    for number in range(100, 105):
        cache.frame(frame_event("run_a", number))
    for number in range(1, 6):  # run_b's live events push out every frame of run_a
        cache.frame(frame_event("run_b", number))
    # run_a has nothing kept: its event 1 is not behind a kept head, so it is kept again
    first = cache.frame(frame_event("run_a", 1))
    assert cache.frame(frame_event("run_a", 1)) is first


def test_frame_cache_hands_out_the_kept_frames_after_an_id_up_to_the_first_missing_one() -> None:
    cache = FrameCache(max_bytes=100 * frame_cost())
    frames = [cache.frame(frame_event("run_a", number)) for number in (1, 2, 3, 5)]
    kept, complete = cache.kept_after("run_a", 1000, limit=10)
    assert kept == frames[:3] and not complete  # 1001-1003: 1004 was never kept
    assert cache.kept_after("run_a", 1001, limit=1) == ([frames[1]], False)
    assert cache.kept_after("run_a", 1003, limit=10) == ([], False)
    assert cache.kept_after("run_b", 1000, limit=10) == ([], False)
    end = Event(id=1006, run_id="run_a", type="complete", ts="t", payload={"status": "completed"})
    last = cache.frame(end)
    assert cache.kept_after("run_a", 1004, limit=10) == ([frames[3], last], True)
    assert cache.kept_after("run_a", 1004, limit=1) == ([frames[3]], False)


def test_frame_cache_forgets_a_complete_frame_it_evicts() -> None:
    cache = FrameCache(max_bytes=2 * frame_cost() + 200)
    end = Event(id=1001, run_id="run_a", type="complete", ts="t", payload={})
    cache.frame(end)
    cache.frame(frame_event("run_b", 1))
    cache.frame(frame_event("run_b", 2))  # the oldest, run_a's complete, goes
    assert cache.kept_after("run_a", 1000, limit=10) == ([], False)
    cache.frame(frame_event("run_a", 1))  # another run_a event 1001 kept: not a complete
    assert cache.kept_after("run_a", 1000, limit=10)[1] is False


async def test_quiet_streams_get_ping_comments(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(sse_ping_interval=0.05)
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("late")], hold=gate, hold_after=1))
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "go"}
    ) as resp:
        pings = 0
        with anyio.fail_after(10):
            async for frame in read_frames(resp):
                if "ping" in frame.comments:
                    pings += 1
                    if pings == 2:
                        gate.open()
                if frame.event == "complete":
                    break
    assert pings >= 2


@asynccontextmanager
async def serve_handler(handler: web.Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


async def test_a_dropped_subscriber_resumes_from_its_last_event_without_gaps(
    daemon: Daemon,
) -> None:
    """The event log drops a subscriber that falls behind; the stream resubscribes from the
    last id it wrote, so the client sees every event once, in order."""
    events = [
        Event(id=i, run_id="r", type="text", ts="t", payload={"content": str(i)})
        for i in range(1, 7)
    ]
    events.append(Event(id=7, run_id="r", type="complete", ts="t", payload={}))
    calls: list[int] = []

    async def subscribe(after: int) -> AsyncIterator[list[Event]]:
        calls.append(after)
        for event in events:
            if event.id > after:
                yield [event]
                if len(calls) == 1 and event.id == 3:
                    raise SubscriberDropped("r", 3)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await EventStream(request, retry_ms=10, ping_interval=5).run(subscribe, 1)

    async with serve_handler(handler) as url:
        async with daemon.session.get(url) as resp:
            frames = await collect_events(resp)
    assert [f.id for f in frames] == [2, 3, 4, 5, 6, 7]
    assert calls == [1, 3]


async def test_a_client_that_is_behind_gets_its_waiting_frames_in_one_write(
    daemon: Daemon,
) -> None:
    """Events that are waiting when the stream reads go out as one write (at most a batch's
    limit of 256), byte for byte the frames one at a time would have been."""
    log = EventLog("run_batched", None, None)
    for i in range(300):
        await log.emit("tool_output", callId="c1", chunk=f"line {i}\n")
    await log.emit("complete", status="completed")
    writes: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = EventStream(
            request, retry_ms=10, ping_interval=5, on_frames=writes.append, frames=FrameCache()
        )
        return await stream.run(lambda last: log.subscribe(last).batches(), 0)

    async with serve_handler(handler) as url:
        async with daemon.session.get(url) as resp:
            with anyio.fail_after(15):
                raw = await resp.read()
    assert raw == b"retry: 10\n\n" + b"".join(format_event(e) for e in log.events)
    assert writes == [256, 45]
    assert log.subscriber_count == 0


class RawClient:
    """An SSE client on a raw socket (HTTP/1.0: the body is the stream, unchunked) that
    reads only when told to."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.frames: list[bytes] = []
        self.eof = False

    @classmethod
    async def open(
        cls, url: str, *, receive_buffer: int | None = None, host: str = "test"
    ) -> RawClient:
        address = url.split("//", 1)[1].split("/", 1)[0]
        address_host, port = address.rsplit(":", 1)
        stream = await anyio.connect_tcp(address_host, int(port))
        client = cls(stream)
        if receive_buffer is not None:
            client.set_receive_buffer(receive_buffer)
        await stream.send(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        while b"\r\n\r\n" not in client.buffer:
            client.buffer += await stream.receive()
        client.buffer = client.buffer.split(b"\r\n\r\n", 1)[1]
        return client

    @property
    def ids(self) -> list[int]:
        return [int(f[4 : f.index(b"\n")]) for f in self.frames if f.startswith(b"id: ")]

    async def read_until(self, event_id: int) -> None:
        """Read until the frame of `event_id` (or the end of the stream)."""
        while True:
            *frames, self.buffer = self.buffer.split(b"\n\n")
            self.frames += [frame + b"\n\n" for frame in frames]
            if self.eof or event_id in self.ids:
                return
            try:
                self.buffer += await self.stream.receive()
            except anyio.EndOfStream:
                self.eof = True

    def set_receive_buffer(self, size: int) -> None:
        raw = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    async def reset(self) -> None:
        """Leave abruptly (a reset, as when a client's machine drops the connection)."""
        raw = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.stream.aclose()


@asynccontextmanager
async def closed_at_exit(log: EventLog) -> AsyncIterator[None]:
    """Streams of the log end when the block does, even when it fails (the server then
    closes at once instead of waiting for them)."""
    try:
        yield
    finally:
        await log.close()


async def wait_members(feeds: LiveFeeds, key: str, count: int) -> None:
    with anyio.fail_after(10):
        while feeds.member_count(key) != count:
            await anyio.sleep(0.01)


async def test_caught_up_clients_follow_one_reader_which_hands_over_when_its_client_leaves(
    daemon: Daemon,
) -> None:
    """Clients that have caught up with a live run follow its feed: one of their streams
    reads the run and writes each event to all (the log has one subscriber for the three).
    When that stream's client leaves, another stream takes over without a gap."""
    log = EventLog("run_feed", None, None)
    feeds = LiveFeeds()
    streams: list[EventStream] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = EventStream(
            request,
            retry_ms=10,
            ping_interval=30,
            frames=FrameCache(),
            feeds=feeds,
            feed_key="run_feed",
        )
        streams.append(stream)
        return await stream.run(lambda last: log.subscribe(last).batches(), 0)

    await log.emit("text", content="1")
    await log.emit("text", content="2")
    async with serve_handler(handler) as url, closed_at_exit(log):
        clients = []
        with anyio.fail_after(20):
            for count in (1, 2, 3):
                client = await RawClient.open(url)
                await client.read_until(2)
                await wait_members(feeds, "run_feed", count)
                clients.append(client)
            feed = feeds.get("run_feed")
            assert feed is not None and feed.driver is streams[0]
            assert log.subscriber_count == 1  # one reader for the three
            await clients[0].reset()
            await log.emit("text", content="3")
            for client in clients[1:]:
                await client.read_until(3)
            # the first to write to the gone client noticed, and the next member drives
            await wait_members(feeds, "run_feed", 2)
            assert feed.driver is streams[1] and log.subscriber_count == 1
            for number in range(4, 11):
                await log.emit("text", content=str(number))
            await log.emit("complete", status="completed")
            for client in clients[1:]:
                await client.read_until(12)
                await client.read_until(-1)  # then the stream ends
                assert client.eof
    expected = [format_event(event) for event in log.events]
    assert [event.id for event in log.events] == list(range(1, 12))
    for client in clients[1:]:
        assert client.frames[0] == b"retry: 10\n\n" and client.frames[1:] == expected
    assert feeds.member_count("run_feed") == 0 and log.subscriber_count == 0


async def test_a_client_too_slow_for_the_feed_reads_alone_and_holds_up_no_one(
    daemon: Daemon,
) -> None:
    """A member whose transport is full is released from the feed (a write to it could
    wait, and would hold up every other client): it reads alone from its last event, and
    gets every event once, in order, when it reads again; the others are not held up."""
    log = EventLog("run_slow", None, None)
    feeds = LiveFeeds()

    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        if request.headers.get("Host") == "slow":
            transport.set_write_buffer_limits(high=4096)
            raw = transport.get_extra_info("socket")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        stream = EventStream(
            request,
            retry_ms=10,
            ping_interval=30,
            frames=FrameCache(),
            feeds=feeds,
            feed_key="run_slow",
        )
        return await stream.run(lambda last: log.subscribe(last).batches(), 0)

    await log.emit("text", content="first")
    async with serve_handler(handler) as url, closed_at_exit(log):
        with anyio.fail_after(30):
            fast = await RawClient.open(url)
            await fast.read_until(1)
            slow = await RawClient.open(url, receive_buffer=4096, host="slow")
            await slow.read_until(1)
            await wait_members(feeds, "run_slow", 2)
            chunk = "x" * 1000
            for _ in range(100):  # 100 kB: far more than the slow client's buffers hold
                await log.emit("tool_output", callId="c1", chunk=chunk)
                await fast.read_until(log.last_id)
            await log.emit("complete", status="completed")
            await fast.read_until(-1)
            assert fast.eof  # all of it while the slow client read nothing
            await wait_members(feeds, "run_slow", 0)
            slow.set_receive_buffer(1 << 20)
            await slow.read_until(-1)
    expected = [format_event(event) for event in log.events]
    assert fast.frames[1:] == expected and slow.frames[1:] == expected


async def test_an_sse_client_leaving_ends_only_its_stream(daemon: Daemon) -> None:
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("still ", "running")], hold=gate, hold_after=2))
    resp = await daemon.session.post(daemon.u("/v1/run"), json={"agent": "helper", "prompt": "x"})
    run_id = resp.headers["X-Run-ID"]
    async with daemon.session.get(daemon.u(f"/v1/runs/{run_id}/events")) as watcher:
        with anyio.fail_after(10):
            await gate.reached.wait()
        resp.close()
        gate.open()
        frames = await collect_events(watcher)
    assert frames[-1].event == "complete" and frames[-1].data["output"] == "still running"


async def test_a_client_catching_up_gets_the_kept_frames_without_reading_the_run(
    daemon: Daemon,
) -> None:
    """Frames other clients' streams have written are handed to a client catching up from
    the frame cache: it reads the run (and decodes its events) only after the last kept one,
    and writes the same bytes as a client that read everything."""
    log = EventLog("run_kept", None, None)
    for i in range(600):
        await log.emit("tool_output", callId="c1", chunk=f"line {i}\n")
    cache = FrameCache()
    reads: list[int] = []  # the ids each stream's reads of the run started after
    writes: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = EventStream(
            request,
            retry_ms=10,
            ping_interval=5,
            on_frames=writes.append,
            frames=cache,
            feed_key="run_kept",
        )

        def subscribe(last: int) -> AsyncIterator[list[Event]]:
            reads.append(last)
            return log.subscribe(last).batches()

        return await stream.run(subscribe, int(request.query.get("after", "0")))

    async def read_to_the_end(url: str) -> bytes:
        async with daemon.session.get(url) as resp:
            with anyio.fail_after(15):
                return await resp.read()

    results: dict[str, bytes] = {}

    async def client(name: str, url: str) -> None:
        results[name] = await read_to_the_end(url)

    def kept() -> int:
        return len(cache.kept_after("run_kept", 0, 1000)[0])

    async with serve_handler(handler) as url:
        async with anyio.create_task_group() as tg:
            # the first client reads the run while it is live: every frame is encoded once
            tg.start_soon(client, "first", url)
            with anyio.fail_after(15):
                while kept() < 600:
                    await anyio.sleep(0.01)
            assert reads == [0]
            # a second client, while the run is still live: the 600 kept frames, then it
            # reads the run after event 600
            reads.clear()
            writes.clear()
            tg.start_soon(client, "second", url)
            with anyio.fail_after(15):
                while not reads:
                    await anyio.sleep(0.01)
            assert reads == [600]
            assert writes == [256, 256, 88]
            for i in range(600, 700):
                await log.emit("tool_output", callId="c1", chunk=f"line {i}\n")
            await log.emit("complete", status="completed")
    expected = b"retry: 10\n\n" + b"".join(format_event(e) for e in log.events)
    assert results["first"] == results["second"] == expected
    # once the run is over and its frames are all kept, a client reads nothing of it, even
    # resuming half way
    reads.clear()
    writes.clear()
    async with serve_handler(handler) as url:
        assert await read_to_the_end(url + "?after=300") == b"retry: 10\n\n" + b"".join(
            format_event(e) for e in log.events[300:]
        )
    assert reads == []
    assert writes == [256, 145]


async def test_a_reader_that_finds_the_next_frames_kept_takes_them_from_the_cache(
    daemon: Daemon,
) -> None:
    """Between two batches of its own read, a stream whose next frames another stream has
    written already (a client ahead of it) stops reading, writes those from the cache, then
    reads on after them: each event once, in order."""
    log = EventLog("run_ahead", None, None)
    for i in range(30):
        await log.emit("tool_output", callId="c1", chunk=f"line {i}\n")
    await log.emit("complete", status="completed")
    cache = FrameCache()
    reads: list[int] = []
    first_read_closed = anyio.Event()

    async def subscribe(last: int) -> AsyncIterator[list[Event]]:
        reads.append(last)
        if last:
            async with aclosing(log.subscribe(last).batches()) as batches:
                async for batch in batches:
                    yield batch
            return
        try:
            for event in log.events[10:20]:  # another client's stream is ahead: 11-20 written
                cache.frame(event)
            yield log.events[:10]
            yield log.events[10:]  # not asked for: the stream takes 11-20 from the cache
        finally:
            first_read_closed.set()

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = EventStream(
            request, retry_ms=10, ping_interval=5, frames=cache, feed_key="run_ahead"
        )
        return await stream.run(subscribe, 0)

    async with serve_handler(handler) as url:
        async with daemon.session.get(url) as resp:
            with anyio.fail_after(15):
                raw = await resp.read()
    assert raw == b"retry: 10\n\n" + b"".join(format_event(e) for e in log.events)
    assert reads == [0, 20]
    assert first_read_closed.is_set()
