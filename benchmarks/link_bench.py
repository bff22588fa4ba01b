"""The link (`agentd connect`) against a fake control plane on loopback.

    python -m benchmarks.link_bench [--drops N] [--turns N]

1. Reconnect time after the control plane drops the link: from the drop to agentd's next
   `hello` (median, p99). The first retry waits a full-jitter backoff of 0–0.5 s by design.
2. Events/s of a finished run's event stream read through the link (`http` request, one
   `http.event` notification per event), next to the same stream read over local SSE, in the
   same run of the benchmark.
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

from runtime.config import Settings
from runtime.daemon import serve
from runtime.link.connect import LinkTarget, link_companion
from tests.fakes.control_plane import FakeControlPlane
from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

TOKEN = "bench-token"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--turns", type=int, default=90)
    parser.add_argument("--reads", type=int, default=5)
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

            print(f"1. reconnect after a drop ({args.drops} drops)")
            waits = []
            for drop in range(args.drops):
                started = time.perf_counter()
                await cp.drop()
                await cp.wait_connected(drop + 2)
                waits.append(time.perf_counter() - started)
            print(
                f"   median {statistics.median(waits) * 1e3:.0f} ms, "
                f"p99 {percentile(waits, 0.99) * 1e3:.0f} ms, max {max(waits) * 1e3:.0f} ms "
                "(backoff before the first retry: uniform 0-500 ms)"
            )

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


if __name__ == "__main__":
    anyio.run(main)
