"""A cold daemon under load: is it still responsive, and does output keep flowing?

    python -m benchmarks.load_bench [--runs 50] [--lines 100] [--interval 0.1]

Starts `agentd serve` as a fresh process (cold: nothing imported beyond start-up) with the
fake model server of tests/fakes as its Anthropic API. As soon as it listens, starts `--runs`
runs at once, each streamed over SSE; each run's model calls `exec_command` on a command
printing a line every `--interval` seconds, `--lines` times, then answers. Meanwhile
`/healthz` is requested every 20 ms. Prints:

- `/healthz` latency p50/p95/p99/max under that load, beside the same daemon's idle floor
  (measured before the runs start, after its warm-up) in the same table;
- the largest gap between two consecutive `tool_output` events of one run, as the SSE client
  receives them (median, p99, max over runs), beside the largest gap between lines as the
  command printed them (each line carries its shell's clock), which tells output the daemon
  delivered late from output a starved machine printed late; and each line's latency from
  being printed to being received;
- how long the runs took, and how many completed.

The issue's goal (issue 17) under 50 runs on 2 cores: healthz p95 < 20 ms, max < 250 ms,
largest output gap < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
from anyio.abc import Process

from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

ROOT = Path(__file__).resolve().parents[1]
MODEL = "claude-sonnet-4-6"
LISTENING = re.compile(r"listening on (http://\S+)")
PRINTED = re.compile(r"line \d+ at (\d+\.\d+)")
HEALTH_EVERY_S = 0.02


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def start_daemon(env: dict[str, str], state: Path, workspace: Path) -> tuple[Process, str]:
    process = await anyio.open_process(
        [sys.executable, "-m", "runtime.cli", "serve", "--port", "0"],
        cwd=workspace,
        env={
            **os.environ,
            **env,
            "PYTHONPATH": str(ROOT),
            "AGENTD_STATE_DIR": str(state),
            "AGENTD_WORKSPACE": str(workspace),
            "AGENTD_MAX_CONCURRENT_RUNS": "64",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    buffer = b""
    with anyio.fail_after(60):
        async for chunk in process.stderr:
            buffer += chunk
            if match := LISTENING.search(buffer.decode(errors="replace")):
                return process, match.group(1)
    raise RuntimeError("the daemon did not start: " + buffer.decode(errors="replace"))


async def drain(process: Process) -> None:
    """Keep reading the daemon's stderr so it never blocks on a full pipe."""
    assert process.stderr is not None
    async for _ in process.stderr:
        pass


async def poll_health(
    http: aiohttp.ClientSession, url: str, samples: list[float], stop: anyio.Event
) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        async with http.get(url + "/healthz") as resp:
            await resp.read()
            assert resp.status == 200
        samples.append(time.perf_counter() - started)
        await anyio.sleep(HEALTH_EVERY_S)


@dataclass
class RunFigures:
    """What one run's SSE client saw."""

    status: str = "no complete event"
    largest_gap: float = 0.0  # between consecutive tool_output events, as received
    gap_began: float = 0.0  # when that gap began, seconds after the runs started
    largest_printing_gap: float = 0.0  # between consecutive lines, as the command printed them
    latencies: list[float] = field(default_factory=list)  # printed -> received, per line


async def one_run(http: aiohttp.ClientSession, url: str, t0: float) -> RunFigures:
    figures = RunFigures()
    last: float | None = None
    printed_last: float | None = None
    async with http.post(url + "/v1/run", json={"agent": "load", "prompt": "print"}) as resp:
        assert resp.status == 200, await resp.text()
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "tool_output":
                now, wall = time.perf_counter(), time.time()
                if last is not None and now - last > figures.largest_gap:
                    figures.largest_gap, figures.gap_began = now - last, last - t0
                last = now
                for printed in PRINTED.findall(json.loads(line[5:])["chunk"]):
                    stamp = float(printed)
                    figures.latencies.append(wall - stamp)
                    if printed_last is not None:
                        figures.largest_printing_gap = max(
                            figures.largest_printing_gap, stamp - printed_last
                        )
                    printed_last = stamp
            elif line.startswith("data:") and event == "complete":
                figures.status = json.loads(line[5:])["status"]
    return figures


async def main(runs: int, lines: int, interval: float) -> None:
    # Each line carries the time the shell printed it (bash's $EPOCHREALTIME, no fork), so
    # the client can tell output the daemon delivered late from output printed late (a
    # starved machine slows the commands themselves).
    command = (
        f"for i in $(seq 1 {lines}); do echo line $i at $EPOCHREALTIME; sleep {interval}; done"
    )
    with tempfile.TemporaryDirectory(prefix="agentd-load-") as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        async with FakeModelServer(default_turn=Turn([text("done")])) as model:
            model.script(
                *(
                    Turn(
                        [
                            tool_call(
                                "exec_command",
                                {"cmd": command, "login": False, "yield_time_ms": 30000},
                            )
                        ]
                    )
                    for _ in range(runs)
                )
            )
            cold = time.perf_counter()
            process, url = await start_daemon(model.env(), Path(tmp) / "state", workspace)
            print(f"daemon listening after {time.perf_counter() - cold:.2f} s (cold start)")
            health: list[float] = []
            results: list[RunFigures] = []
            try:
                async with (
                    anyio.create_task_group() as tg,
                    aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=None),
                        connector=aiohttp.TCPConnector(limit=0),
                    ) as http,
                ):
                    tg.start_soon(drain, process)
                    agent = {"slug": "load", "model": MODEL, "tools": ["exec_command"]}
                    async with http.post(url + "/v1/agents", json=agent) as resp:
                        assert resp.status in (200, 201), await resp.text()
                    stop = anyio.Event()
                    tg.start_soon(poll_health, http, url, health, stop)
                    started = time.perf_counter()
                    async with anyio.create_task_group() as runs_group:
                        for _ in range(runs):
                            runs_group.start_soon(collect, one_run(http, url, started), results)
                    took = time.perf_counter() - started
                    loaded = list(health)
                    # The idle floor: the same daemon, warm, with nothing running.
                    health.clear()
                    with anyio.move_on_after(3):
                        await anyio.sleep_forever()
                    idle = list(health)
                    stop.set()
                    tg.cancel_scope.cancel()
            finally:
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(30), anyio.CancelScope(shield=True):
                    await process.wait()

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"{name:<26} {len(ms):>6} {statistics.median(ms):>8.1f} {percentile(ms, 0.95):>8.1f} "
            f"{percentile(ms, 0.99):>8.1f} {max(ms):>8.1f}"
        )

    print(f"\n{runs} runs, each printing {lines} lines every {interval * 1000:.0f} ms, over SSE")
    print(f"{'/healthz latency (ms)':<26} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    print(row("under load (cold start)", loaded))
    print(row("idle floor (same daemon)", idle))
    ratio = percentile(loaded, 0.95) / max(percentile(idle, 0.95), 1e-9)
    print(f"p95 under load / idle p95: {ratio:.1f}x")
    gaps = [r.largest_gap for r in results]
    printing = [r.largest_printing_gap for r in results]
    latencies = [v * 1000 for r in results for v in r.latencies]
    starts = sorted(r.gap_began for r in results)
    print(f"\n{'per run (s)':<40} {'median':>8} {'p99':>8} {'max':>8}")
    for name, values in (
        ("largest gap between tool_output events", gaps),
        ("largest gap as the command printed", printing),
    ):
        print(
            f"{name:<40} {statistics.median(values):>8.3f} {percentile(values, 0.99):>8.3f} "
            f"{max(values):>8.3f}"
        )
    print(
        f"(command interval {interval:.3f} s; the largest received gaps began "
        f"{starts[0]:.1f}-{starts[-1]:.1f} s after the runs started)"
    )
    print(
        f"line printed -> received by the SSE client (ms), {len(latencies)} lines: "
        f"p50 {statistics.median(latencies):.1f}, p99 {percentile(latencies, 0.99):.1f}, "
        f"max {max(latencies):.1f}"
    )
    done = sum(1 for r in results if r.status == "completed")
    print(f"runs completed: {done}/{runs} in {took:.1f} s (ideal {lines * interval:.1f} s)")


async def collect(figures: Awaitable[RunFigures], into: list[RunFigures]) -> None:
    into.append(await figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    anyio.run(main, args.runs, args.lines, args.interval)
