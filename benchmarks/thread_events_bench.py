"""Persisted thread events: what the rollout file in the workspace costs.

    python -m benchmarks.thread_events_bench [--events 3000] [--rounds 5] [--batch 1]

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
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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


def _median_round(rounds: list[Round]) -> Round:
    return sorted(rounds, key=lambda r: r.events_per_s)[len(rounds) // 2]


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[Round]] = {"store only": [], "store + rollout": [], "run EventLog": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        workspace = root / "workspace"
        workspace.mkdir()
        store = await Store.open(root / "state")
        try:
            for i in range(args.rounds):
                results["store only"].append(
                    await thread_round(
                        store,
                        workspace,
                        f"thr_off{i}",
                        rollouts=False,
                        events=args.events,
                        batch=args.batch,
                    )
                )
                results["store + rollout"].append(
                    await thread_round(
                        store,
                        workspace,
                        f"thr_on{i}",
                        rollouts=True,
                        events=args.events,
                        batch=args.batch,
                    )
                )
                results["run EventLog"].append(
                    await run_event_round(store, f"run_peer{i}", events=args.events)
                )
        finally:
            await store.close()
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="events per append call")
    anyio.run(main, parser.parse_args())
