"""Event fan-out: one run's `EventLog` feeding many subscribers.

    python -m benchmarks.fanout_bench [--subscribers 100] [--events 5000] [--rate 1000]
        [--http-only] [--no-live] [--http-rate 200,250,400] [--catch-up 3000,10000,50000]
        [--frame-cache-bytes N]

Every scenario emits `--events` `tool_output` events (80-character chunks) on one log while
`--subscribers` tasks read it, and prints:

- `emit/s`: events emitted per second (wall time of the emitting task);
- `delivered/s`: events × subscribers delivered per second, until the last subscriber has
  the last event;
- delivery latency p50/p99/max: from the start of `emit()` (before the store write) to a
  subscriber receiving the event, over every (event, subscriber) pair;
- `dropped`: subscribers cut off because they fell `queue_size` events behind;
- `cpu µs/dlv`: CPU time (user + system, every thread) of the serving process per delivered
  event, from the first emit until the last delivery (emitting and storing included); over
  HTTP also the client process's. CPU per delivery is steadier than rates on a shared
  machine: compare it between builds;
- `frames/write` (over HTTP): frames per write to a client; above 1 when clients fell behind
  and caught up a batch at a time;
- `encoded` (over HTTP): frames the shared `FrameCache` encoded; the events once each when
  the cache serves every client, up to events × clients when it thrashes.

Scenarios: events kept in memory only / appended to a real SQLite store (as in the daemon),
each as a burst (emit as fast as possible) and paced at `--rate` events/s (what a busy run
looks like; deltas are coalesced to ~20 events/s per stream in practice).

`over HTTP`: the same log (SQLite-backed) served as SSE by the daemon's `EventStream` (with a
`FrameCache` and `LiveFeeds`, as the daemon serves it) from an aiohttp server on 127.0.0.1, to
`--subscribers` HTTP clients in a separate process (raw sockets, one per client, reading
frames as they come); paced at each `--http-rate`. Latency runs from the start of
`emit()` to the client reading the frame's last byte (both clocks are this machine's). The
clients share the 2 cores with the server, so the figures are lower bounds. `catch-up`: the
run's events are all there before the clients connect (what a client reconnecting after a
while or to a finished run reads); latency is from the clients' start. One catch-up row per
`--catch-up` size: runs longer than the log keeps in memory (10,000 events) are partly read
from the store, and runs longer than the `FrameCache` holds show whether it thrashes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from aiohttp import web

from runtime.api.sse import EventStream, FrameCache, LiveFeeds
from runtime.events import EventLog, SubscriberDropped
from runtime.store import Store

CHUNK = "x" * 79 + "\n"


@dataclass
class Result:
    name: str
    subscribers: int
    events: int
    emit_per_s: float
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    dropped: int
    server_cpu_us: float
    client_cpu_us: float = float("nan")
    frames_per_write: float = 1.0
    encoded: int = 0  # over HTTP: frames the FrameCache encoded (misses)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def scenario(
    name: str,
    store: Store | None,
    *,
    subscribers: int,
    events: int,
    rate: float | None,
    queue_size: int,
) -> Result:
    run_id = f"run_bench_{name.replace(' ', '_')}"
    log = EventLog(run_id, "thr_bench", store, queue_size=queue_size)
    sent: list[float] = [0.0] * (events + 1)
    latencies: list[float] = []
    dropped = 0
    finished_at = 0.0

    async def subscriber(ready: anyio.Event) -> None:
        nonlocal dropped, finished_at
        subscription = log.subscribe()
        ready.set()
        try:
            async for event in subscription:
                latencies.append(time.perf_counter() - sent[event.id])
        except SubscriberDropped:
            dropped += 1
        finished_at = max(finished_at, time.perf_counter())

    async with anyio.create_task_group() as tg:
        for _ in range(subscribers):
            ready = anyio.Event()
            tg.start_soon(subscriber, ready)
            await ready.wait()
        interval = 1 / rate if rate else 0.0
        cpu_start = cpu_seconds()
        start = time.perf_counter()
        for i in range(1, events + 1):
            if interval:
                delay = start + i * interval - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
            sent[i] = time.perf_counter()
            await log.emit("tool_output", callId="c1", chunk=CHUNK)
        emit_done = time.perf_counter()
        await log.close()
    cpu = cpu_seconds() - cpu_start
    elapsed_emit = emit_done - start
    elapsed_all = max(finished_at, emit_done) - start
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return Result(
        name=name,
        subscribers=subscribers,
        events=events,
        emit_per_s=events / elapsed_emit,
        delivered_per_s=len(latencies) / elapsed_all,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p99_ms=pct(0.99),
        max_ms=latencies[-1] * 1000 if latencies else float("nan"),
        dropped=dropped,
        server_cpu_us=cpu / max(1, len(latencies)) * 1e6,
    )


async def http_scenario(
    name: str,
    store: Store,
    *,
    subscribers: int,
    events: int,
    rate: float | None,
    queue_size: int,
    catch_up: bool = False,
    frame_cache_bytes: int | None = None,
) -> Result:
    """`EventStream` over real HTTP to clients in another process (see the module doc).
    `catch_up`: the events are all emitted before the clients connect."""
    log = EventLog(
        f"run_bench_http_{int(time.time() * 1000)}", "thr_bench", store, queue_size=queue_size
    )
    sent: list[float] = [0.0] * (events + 1)

    async def emit_all() -> None:
        interval = 1 / rate if rate else 0.0
        start = time.time()
        for i in range(1, events + 1):
            if interval:
                delay = start + i * interval - time.time()
                if delay > 0:
                    await anyio.sleep(delay)
            sent[i] = time.time()
            await log.emit("tool_output", callId="c1", chunk=CHUNK)
        await log.emit("complete", status="completed")
        await log.close()

    if catch_up:
        await emit_all()
    frames = FrameCache() if frame_cache_bytes is None else FrameCache(frame_cache_bytes)
    feeds = LiveFeeds()
    writes: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = EventStream(
            request,
            retry_ms=1000,
            ping_interval=15.0,
            frames=frames,
            on_frames=writes.append,
            feeds=feeds,
            feed_key=log.run_id,
        )
        return await stream.run(lambda last: log.subscribe(last).batches(), 0)

    app = web.Application()
    app.router.add_get("/events", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cpu_start = cpu_seconds()
    start = time.time()
    clients = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "benchmarks.fanout_bench",
            "--clients-of",
            str(port),
            "--subscribers",
            str(subscribers),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    assert clients.stdout is not None and clients.stdin is not None
    try:
        # the child says "connected" once every client has its response headers
        line = b""
        while not line.endswith(b"\n"):
            line += await clients.stdout.receive(1)

        def subscribed() -> int:  # clients reading alone, and those following the feed
            members = feeds.member_count(log.run_id)
            return log.subscriber_count - (1 if members else 0) + members

        if catch_up:
            # latency: from the clients' start to reading each event
            sent = [start] * (events + 1)
            emit_done = start
        else:
            while subscribed() < subscribers:
                await anyio.sleep(0.01)
            cpu_start = cpu_seconds()
            start = time.time()
            await emit_all()
            emit_done = time.time()
        await clients.stdin.send(json.dumps(sent).encode() + b"\n")
        output = b""
        async for chunk in clients.stdout:
            output += chunk
        cpu = cpu_seconds() - cpu_start
        await clients.wait()
    finally:
        if clients.returncode is None:
            clients.kill()
            await clients.wait()
        await runner.cleanup()
    report = json.loads(output)
    return Result(
        name=name,
        subscribers=subscribers,
        events=events,
        emit_per_s=float("nan") if catch_up else events / (emit_done - start),
        delivered_per_s=report["delivered"] / (report["last"] - start),
        p50_ms=report["p50"],
        p99_ms=report["p99"],
        max_ms=report["max"],
        dropped=subscribers - report["complete"],
        server_cpu_us=cpu / max(1, report["delivered"]) * 1e6,
        client_cpu_us=report["cpu"] / max(1, report["delivered"]) * 1e6,
        frames_per_write=sum(writes) / max(1, len(writes)),
        encoded=frames.encoded,
    )


async def http_clients(port: int, count: int) -> None:
    """The client process: `count` SSE clients on 127.0.0.1:port; after the run, reads the
    emit times from stdin and prints delivery figures as JSON."""
    arrivals: list[list[tuple[int, float]]] = [[] for _ in range(count)]
    complete = 0

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # HTTP/1.0: the body is the raw stream until the server closes it (no chunking)
        writer.write(b"GET /events HTTP/1.0\r\nHost: bench\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        return reader, writer

    async def follow(k: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal complete
        buffer = b""
        mine = arrivals[k]
        while True:
            data = await reader.read(65536)
            if not data:
                break
            now = time.time()
            buffer += data
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                if frame.startswith(b"id: "):
                    event_id = int(frame[4 : frame.index(b"\n")])
                    mine.append((event_id, now))
                    if b"event: complete" in frame:
                        complete += 1
        writer.close()

    connections = [await connect() for _ in range(count)]
    print("connected", flush=True)
    cpu_start = cpu_seconds()
    await asyncio.gather(*(follow(k, r, w) for k, (r, w) in enumerate(connections)))
    cpu = cpu_seconds() - cpu_start
    sent = json.loads(sys.stdin.readline())
    latencies = sorted(
        (at - sent[event_id]) * 1000
        for mine in arrivals
        for event_id, at in mine
        if event_id < len(sent) and sent[event_id]
    )
    last = max((mine[-1][1] for mine in arrivals if mine), default=0.0)
    print(
        json.dumps(
            {
                "delivered": len(latencies),
                "last": last,
                "complete": complete,
                "p50": statistics.median(latencies) if latencies else float("nan"),
                "p99": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
                "max": latencies[-1] if latencies else float("nan"),
                "cpu": cpu,
            }
        )
    )


def print_table(results: list[Result]) -> None:
    header = (
        f"{'scenario':<24} {'subs':>5} {'events':>7} {'emit/s':>9} {'delivered/s':>12} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'dropped':>8} {'cpu µs/dlv':>11} "
        f"{'client':>7} {'frames/write':>12} {'encoded':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<24} {r.subscribers:>5} {r.events:>7} {r.emit_per_s:>9,.0f} "
            f"{r.delivered_per_s:>12,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f} "
            f"{r.dropped:>8} {r.server_cpu_us:>11.1f} {r.client_cpu_us:>7.1f} "
            f"{r.frames_per_write:>12.2f} {r.encoded:>8}"
        )


async def main(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp))
        try:
            for backing in ("memory", "sqlite") if not args.http_only else ():
                for rate in (None, args.rate):
                    name = f"{backing}, {'burst' if rate is None else f'{rate:g}/s'}"
                    events = args.events if rate is None else min(args.events, int(rate * 3))
                    results.append(
                        await scenario(
                            name,
                            store if backing == "sqlite" else None,
                            subscribers=args.subscribers,
                            events=events,
                            rate=rate,
                            queue_size=args.queue_size,
                        )
                    )
            for rate in (None, *args.http_rate) if not args.no_live else ():
                name = f"over HTTP, {'burst' if rate is None else f'{rate:g}/s'}"
                events = args.events if rate is None else min(args.events, int(rate * 3))
                results.append(
                    await http_scenario(
                        name,
                        store,
                        subscribers=args.subscribers,
                        events=events,
                        rate=rate,
                        queue_size=args.queue_size,
                    )
                )
            for events in args.catch_up:
                results.append(
                    await http_scenario(
                        "over HTTP, catch-up",
                        store,
                        subscribers=args.subscribers,
                        events=events,
                        rate=None,
                        queue_size=args.queue_size,
                        catch_up=True,
                        frame_cache_bytes=args.frame_cache_bytes,
                    )
                )
        finally:
            await store.close()
    print_table(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s when paced")
    parser.add_argument("--queue-size", type=int, default=1000)
    parser.add_argument(
        "--http-rate",
        type=lambda text: [float(n) for n in text.split(",") if n],
        default=[200.0, 250.0, 400.0],
        help="events/s when paced over HTTP, one row each (comma-separated)",
    )
    parser.add_argument("--http-only", action="store_true", help="only the over-HTTP scenarios")
    parser.add_argument(
        "--catch-up",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[3000, 10000, 50000],
        help="stored events the catch-up clients read, one row each (comma-separated)",
    )
    parser.add_argument(
        "--frame-cache-bytes", type=int, help="the FrameCache's budget (default: the daemon's)"
    )
    parser.add_argument("--no-live", action="store_true", help="over HTTP: only the catch-up rows")
    parser.add_argument("--clients-of", type=int, help=argparse.SUPPRESS)  # the client process
    arguments = parser.parse_args()
    if arguments.clients_of:
        asyncio.run(http_clients(arguments.clients_of, arguments.subscribers))
    else:
        anyio.run(main, arguments)
