"""Persisted thread events: what the rollout file in the workspace costs.

    python -m benchmarks.thread_events_bench [--events 3000] [--rounds 5] [--batch 1]
        [--backlog 10000] [--clients 1,10,100]

Appends `--events` persisted events (a `tool_result` of ~200 bytes of output, what a busy run
persists most) to one thread's `ThreadEventLog` over a real SQLite store, one `append` call
per `--batch` events, with one live subscriber reading them (as a WebSocket client would),
and prints per scenario the events/s and the per-append latency (median, p99):

- `store only`: `ThreadEventHub(rollouts=False)`;
- `store + rollout`: the rollout JSONL in the workspace as well (the default);
- `run EventLog` (the peer, measured in the same run): the per-run event path every run
  already pays per event (`EventLog.emit` of a `tool_result` into the same store).

The rounds alternate the scenarios so machine noise hits each alike; the table reports the
median round. `added µs/event` is the rollout's cost: (store + rollout) − (store only), per
event; the fsync at run boundaries is measured separately (`sync ms`).

Then the catch-up: `--clients` subscribers of one thread holding `--backlog` stored events
made at once from the same point (every stream of a long thread reconnecting, e.g. after the
control plane restarted), each taking its snapshot (`ThreadSubscription.catch_up`, what a
WebSocket stream sends first): the wall time until all have it, the events delivered per
second, and the store's page reads. The peer, in the same run: the same pages read by each
subscriber alone (`Store.thread_events_after` without `shared`), as every snapshot read
them before concurrent page reads were shared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from runtime.events import EventLog
from runtime.store import Store
from runtime.thread_log import ThreadEventHub, ThreadSubscription

OUTPUT = ("ok " * 66)[:200]


@dataclass
class Round:
    events_per_s: float
    p50_us: float
    p99_us: float
    sync_ms: float


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def _drain(subscription: ThreadSubscription, count: int, done: anyio.Event) -> None:
    seen = 0
    async for _ in subscription:
        seen += 1
        if seen == count:
            break
    done.set()


async def thread_round(
    store: Store, workspace: Path, thread_id: str, *, rollouts: bool, events: int, batch: int
) -> Round:
    hub = ThreadEventHub(store, workspace, rollouts=rollouts, queue_size=events + 1)
    log = await hub.log(thread_id)
    subscription = log.subscribe(after=log.last_sequence)
    done = anyio.Event()
    latencies: list[float] = []
    payload = {"callId": "call_1", "tool": "exec_command", "output": OUTPUT, "isError": False}
    async with anyio.create_task_group() as tg:
        tg.start_soon(_drain, subscription, events, done)
        start = time.perf_counter()
        for _ in range(events // batch):
            began = time.perf_counter()
            await log.append("run_bench", "rol_bench", [("tool_result", payload)] * batch)
            latencies.append(time.perf_counter() - began)
        await done.wait()
        elapsed = time.perf_counter() - start
    began = time.perf_counter()
    await log.sync()
    sync_s = time.perf_counter() - began
    await hub.close()
    return Round(
        events_per_s=events / elapsed,
        p50_us=statistics.median(latencies) * 1e6,
        p99_us=_pct(latencies, 0.99) * 1e6,
        sync_ms=sync_s * 1000,
    )


async def run_event_round(store: Store, run_id: str, *, events: int) -> Round:
    log = EventLog(run_id, "thr_peer", store, queue_size=events + 1)
    subscription = log.subscribe()
    latencies: list[float] = []

    async def drain(done: anyio.Event) -> None:
        seen = 0
        async for _ in subscription:
            seen += 1
            if seen == events:
                break
        done.set()

    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, done)
        start = time.perf_counter()
        for _ in range(events):
            began = time.perf_counter()
            await log.emit("tool_result", callId="call_1", tool="exec_command", output=OUTPUT)
            latencies.append(time.perf_counter() - began)
        await done.wait()
        elapsed = time.perf_counter() - start
    await log.close()
    return Round(
        events_per_s=events / elapsed,
        p50_us=statistics.median(latencies) * 1e6,
        p99_us=_pct(latencies, 0.99) * 1e6,
        sync_ms=0.0,
    )


async def _fill_backlog(store: Store, workspace: Path, thread_id: str, events: int) -> None:
    hub = ThreadEventHub(store, workspace, rollouts=False)
    log = await hub.log(thread_id)
    payload = {"callId": "call_1", "tool": "exec_command", "output": OUTPUT, "isError": False}
    for start in range(0, events, 500):
        await log.append(
            "run_bench", "rol_bench", [("tool_result", payload)] * min(500, events - start)
        )
    await hub.close()


async def catch_up_round(
    store: Store, workspace: Path, thread_id: str, clients: int, *, shared: bool
) -> tuple[float, int]:
    """(seconds until every client has its snapshot, page reads made) for `clients`
    subscribers made at once from sequence 0; `shared=False`: each reads its pages alone."""
    hub = ThreadEventHub(store, workspace, rollouts=False)
    log = await hub.log(thread_id)
    last = log.last_sequence
    counts: list[int] = []
    reads = store.thread_event_page_reads
    reads_alone = 0

    async def snapshot() -> None:
        nonlocal reads_alone
        if shared:
            subscription = log.subscribe(0)
            counts.append(len(await subscription.catch_up()))
            subscription.close()
            return
        got, after = 0, 0
        while after < last:  # catch_up's pages (of up to 5,000 events), each read alone
            page = await store.thread_events_after(thread_id, after, min(last - after, 5000))
            got, after = got + len(page), page[-1].sequence
            reads_alone += 1
        counts.append(got)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(snapshot)
    elapsed = time.perf_counter() - started
    await hub.close()
    if counts != [last] * clients:
        raise SystemExit(f"a snapshot missed events: {sorted(set(counts))} of {last}")
    return elapsed, store.thread_event_page_reads - reads if shared else reads_alone


async def catch_up_table(
    store: Store, workspace: Path, backlog: int, clients: list[int], rounds: int
) -> None:
    await _fill_backlog(store, workspace, "thr_backlog", backlog)
    print(
        f"catch-up: subscribers of one thread of {backlog:,} stored events, made at once; "
        f"median of {rounds} rounds"
    )
    header = (
        f"{'clients':>7} {'page reads':>10} {'wall ms':>9} {'events/s delivered':>19} "
        f"{'alone: reads':>12} {'alone: wall ms':>14} {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for count in clients:
        alone: list[float] = []
        together: list[float] = []
        for _ in range(rounds):  # alternated, so that machine noise hits both alike
            alone_s, alone_reads = await catch_up_round(
                store, workspace, "thr_backlog", count, shared=False
            )
            shared_s, shared_reads = await catch_up_round(
                store, workspace, "thr_backlog", count, shared=True
            )
            alone.append(alone_s)
            together.append(shared_s)
        alone_s, shared_s = statistics.median(alone), statistics.median(together)
        print(
            f"{count:>7} {shared_reads:>10} {shared_s * 1000:>9.1f} "
            f"{count * backlog / shared_s:>19,.0f} {alone_reads:>12} {alone_s * 1000:>14.1f} "
            f"{alone_s / shared_s:>8.1f}×"
        )


def _median_round(rounds: list[Round]) -> Round:
    return sorted(rounds, key=lambda r: r.events_per_s)[len(rounds) // 2]


@asynccontextmanager
async def scratch_store() -> AsyncIterator[tuple[Store, Path]]:
    """A new store and an empty workspace, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        workspace = root / "workspace"
        workspace.mkdir()
        store = await Store.open(root / "state")
        try:
            yield store, workspace
        finally:
            await store.close()


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[Round]] = {"store only": [], "store + rollout": [], "run EventLog": []}
    async with scratch_store() as (store, workspace):
        for i in range(args.rounds):
            for label, prefix, rollouts in (
                ("store only", "thr_off", False),
                ("store + rollout", "thr_on", True),
            ):
                results[label].append(
                    await thread_round(
                        store,
                        workspace,
                        f"{prefix}{i}",
                        rollouts=rollouts,
                        events=args.events,
                        batch=args.batch,
                    )
                )
            results["run EventLog"].append(
                await run_event_round(store, f"run_peer{i}", events=args.events)
            )
    print(
        f"{args.events} persisted events per round, {args.rounds} rounds, "
        f"{args.batch} event(s) per append; median round"
    )
    header = (
        f"{'scenario':<18} {'events/s':>10} {'append p50 µs':>14} {'append p99 µs':>14} "
        f"{'sync ms':>8}"
    )
    print(header)
    print("-" * len(header))
    medians = {name: _median_round(rounds) for name, rounds in results.items()}
    for name, r in medians.items():
        print(
            f"{name:<18} {r.events_per_s:>10,.0f} {r.p50_us:>14.1f} {r.p99_us:>14.1f} "
            f"{r.sync_ms:>8.2f}"
        )
    off, on = medians["store only"], medians["store + rollout"]
    added = (1 / on.events_per_s - 1 / off.events_per_s) * 1e6
    print(
        f"rollout: {on.events_per_s / off.events_per_s:.2f}× the events/s of store only; "
        f"added cost {added:.1f} µs/event "
        f"({(on.p50_us - off.p50_us) / args.batch:.1f} µs/event at the append median)"
    )
    peer = medians["run EventLog"]
    print(
        f"thread events with rollout: {on.events_per_s / peer.events_per_s:.2f}× the events/s "
        "of the per-run EventLog into the same store"
    )
    print()
    async with scratch_store() as (store, workspace):
        await catch_up_table(store, workspace, args.backlog, args.clients, args.rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="events per append call")
    parser.add_argument("--backlog", type=int, default=10_000, help="stored events to catch up")
    parser.add_argument(
        "--clients",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 10, 100],
        help="subscriber counts of the catch-up table (comma-separated)",
    )
    anyio.run(main, parser.parse_args())
