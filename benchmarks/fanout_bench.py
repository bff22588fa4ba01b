"""Event fan-out: one run's `EventLog` feeding many subscribers.

    python -m benchmarks.fanout_bench [--subscribers 100] [--events 5000] [--rate 1000]

Every scenario emits `--events` `tool_output` events (80-character chunks) on one log while
`--subscribers` tasks read it, and prints:

- `emit/s`: events emitted per second (wall time of the emitting task);
- `delivered/s`: events × subscribers delivered per second, until the last subscriber has
  the last event;
- delivery latency p50/p99/max: from the start of `emit()` (before the store write) to a
  subscriber receiving the event, over every (event, subscriber) pair;
- `dropped`: subscribers cut off because they fell `queue_size` events behind.

Scenarios: events kept in memory only / appended to a real SQLite store (as in the daemon),
each as a burst (emit as fast as possible) and paced at `--rate` events/s (what a busy run
looks like; deltas are coalesced to ~20 events/s per stream in practice).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

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
    )


def print_table(results: list[Result]) -> None:
    header = (
        f"{'scenario':<24} {'subs':>5} {'events':>7} {'emit/s':>9} {'delivered/s':>12} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'dropped':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<24} {r.subscribers:>5} {r.events:>7} {r.emit_per_s:>9,.0f} "
            f"{r.delivered_per_s:>12,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f} "
            f"{r.dropped:>8}"
        )


async def main(args: argparse.Namespace) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp))
        try:
            for backing in ("memory", "sqlite"):
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
        finally:
            await store.close()
    print_table(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s when paced")
    parser.add_argument("--queue-size", type=int, default=1000)
    anyio.run(main, parser.parse_args())
