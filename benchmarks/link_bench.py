"""The link (`agentd connect`) against a fake control plane on loopback.

    python -m benchmarks.link_bench [--drops N] [--turns N]

1. Reconnect time after the control plane drops the link, drop after drop: from each drop to
   agentd's next `hello`, beside that attempt's backoff ceiling. The link had been up less
   than `STABLE_AFTER` (30 s) each time, so by design the waits grow as for a failed dial
   (full jitter, 0–0.5 s doubling to 30 s): a control plane that accepts and drops the link
   at once is not redialled several times a second. The first wait is what a control plane
   restart costs a link that was up.
2. Events/s of a finished run's event stream read through the link (`http` request, one
   `http.event` notification per event), next to the same stream read over local SSE, in the
   same run of the benchmark.
3. The outbox (the push of persisted thread events) in a store of 10 to 5,000 threads (a
   Mac's history grows by one per conversation), each thread's events already pushed: the
   store reads and the outbox's CPU time over `--idle` seconds with nothing happening, and
   the time from an event stored on one thread to its arrival at the control plane (median
   and p99 of `--appends`); what the outbox does when it starts with nothing pending
   (`push_pending()`: one look at every thread's last sequence). The peer, in the same run:
   a page read of every thread, which the outbox did every 0.2 s before the store told it
   which threads got events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import anyio

from runtime.agents import AgentSpec
from runtime.config import Settings
from runtime.daemon import serve
from runtime.link.connect import LinkTarget, link_companion
from runtime.link.outbox import BATCH, ThreadEventOutbox
from runtime.link.protocol import BACKOFF_FIRST, BACKOFF_MAX
from runtime.store import Store
from runtime.thread_events import PersistedThreadEvent
from tests.fakes.control_plane import FakeControlPlane
from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

TOKEN = "bench-token"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drops", type=int, default=6)
    parser.add_argument("--turns", type=int, default=90)
    parser.add_argument("--reads", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[10, 1000, 5000],
        help="thread counts of the outbox table (comma-separated)",
    )
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idling measured")
    parser.add_argument("--appends", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="link-bench-"))
    (root / "ws").mkdir()
    (root / "ws" / "notes.txt").write_text("a line of notes\n" * 20)
    async with FakeControlPlane(TOKEN) as cp, FakeModelServer() as model:
        # Many short turns: ~5 events each (text, usage, tool_call, tool_result, ...).
        model.script(
            *(
                Turn([text(f"step {i}"), tool_call("read_file", {"path": "notes.txt"}, id=f"c{i}")])
                for i in range(args.turns)
            ),
            Turn([text("done")]),
        )
        os.environ.update(model.env())
        settings = Settings(
            workspace=root / "ws",
            state_dir=root / "state",
            port=0,
            token=TOKEN,
            control_plane=cp.url,
            device_id="bench",
        )
        stop = asyncio.Event()
        local: list[str] = []
        async with anyio.create_task_group() as tg:
            companion = link_companion(settings, LinkTarget(cp.url, "bench", TOKEN))
            tg.start_soon(
                lambda: serve(
                    settings,
                    stop=stop,
                    handle_signals=False,
                    companion=companion,
                    on_ready=local.append,
                )
            )
            await cp.wait_connected()
            await cp.call(
                "POST",
                "/v1/agents",
                body={
                    "slug": "b",
                    "model": "claude-sonnet-4-6",
                    "tools": ["read_file"],
                    "maxIterations": args.turns + 1,
                },
            )
            _, events = await cp.call("POST", "/v1/run", body={"agent": "b", "prompt": "go"})
            run_id = events[0]["data"]["runId"]

            print(f"1. reconnect after each of {args.drops} drops in a row")
            for drop in range(args.drops):
                started = time.perf_counter()
                await cp.drop()
                await cp.wait_connected(drop + 2)
                wait = time.perf_counter() - started
                ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**drop)
                print(f"   drop {drop + 1}: {wait * 1e3:,.0f} ms (backoff uniform 0-{ceiling:g} s)")

            print(f"2. reading the run's {len(events)} events: link vs local SSE")
            link_rates, sse_rates = [], []
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                for _ in range(args.reads):
                    started = time.perf_counter()
                    _, read = await cp.call("GET", f"/v1/runs/{run_id}/events")
                    link_rates.append(len(read) / (time.perf_counter() - started))
                    started = time.perf_counter()
                    count = 0
                    async with http.get(f"{local[0]}/v1/runs/{run_id}/events") as response:
                        async for line in response.content:
                            count += line.startswith(b"data: ")
                    sse_rates.append(count / (time.perf_counter() - started))
            link, sse = statistics.median(link_rates), statistics.median(sse_rates)
            print(
                f"   link {link:,.0f} events/s, local SSE {sse:,.0f} events/s "
                f"(median of {args.reads}; link/SSE {link / sse:.2f})"
            )
            stop.set()
        await outbox_table(cp, root, args.threads, args.idle, args.appends)


async def outbox_table(
    cp: FakeControlPlane, root: Path, sizes: list[int], idle: float, appends: int
) -> None:
    print(f"3. the outbox in a store of many threads ({idle:g} s idle, {appends} appends)")
    header = (
        f"   {'threads':>7} {'idle reads':>10} {'idle CPU %':>10} {'append → pushed p50 ms':>22} "
        f"{'p99 ms':>7} {'start ms':>8} {'peer: a page of every thread ms':>31}"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    store = await Store.open(root / "outbox-state")
    await store.upsert_agent(AgentSpec(slug="helper", model="m"))
    threads: list[str] = []
    async with aiohttp.ClientSession() as session:
        for size in sizes:
            while len(threads) < size:
                thread_id = (await store.create_thread("helper")).id
                await store.append_thread_events([_event(thread_id, 1)])
                threads.append(thread_id)
            outbox = await ThreadEventOutbox.open(
                store, root / "outbox-state", session, cp.url, TOKEN
            )
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(outbox.run)
                for thread_id in threads:  # the first pass pushes what is pending
                    await cp.wait_pushed(thread_id, 1)
                await anyio.sleep(0.5)  # the last answer taken and recorded: now it idles
                # this process's CPU: the outbox, the store's thread and the control plane
                reads, cpu = outbox.pages_read, time.process_time()
                await anyio.sleep(idle)
                idle_reads = outbox.pages_read - reads
                idle_cpu = (time.process_time() - cpu) / idle
                delays = []
                for n in range(appends):
                    thread_id = threads[n * 7919 % len(threads)]
                    sequence = await store.last_thread_sequence(thread_id) + 1
                    started = time.perf_counter()
                    await store.append_thread_events([_event(thread_id, sequence)])
                    await cp.wait_pushed(thread_id, sequence)
                    delays.append(time.perf_counter() - started)
                tasks.cancel_scope.cancel()
            starts, polls = [], []
            for _ in range(3):
                started = time.perf_counter()
                await outbox.push_pending()
                starts.append(time.perf_counter() - started)
                started = time.perf_counter()
                for thread in await store.all_threads():  # what each poll read before
                    pushed = outbox.state.pushed.get(thread.id, 0)
                    await store.thread_events_after(thread.id, pushed, BATCH)
                polls.append(time.perf_counter() - started)
            print(
                f"   {size:>7} {idle_reads:>10} {idle_cpu * 100:>10.1f} "
                f"{statistics.median(delays) * 1e3:>22.1f} {percentile(delays, 0.99) * 1e3:>7.1f} "
                f"{statistics.median(starts) * 1e3:>8.1f} {statistics.median(polls) * 1e3:>31.1f}"
            )
    await store.close()


def _event(thread_id: str, sequence: int) -> PersistedThreadEvent:
    return PersistedThreadEvent(
        sequence=sequence,
        rollout_id="rol_bench",
        thread_id=thread_id,
        run_id="run_bench",
        type="user_message",
        payload={"role": "user", "content": [{"type": "text", "text": "hello"}]},
        created_at="2026-01-01T00:00:00.000Z",
    )


if __name__ == "__main__":
    anyio.run(main)
