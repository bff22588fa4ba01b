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
  receives them (max and p99 over runs), against the command's own interval;
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
from pathlib import Path

import aiohttp
import anyio
from anyio.abc import Process

from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

ROOT = Path(__file__).resolve().parents[1]
MODEL = "claude-sonnet-4-6"
LISTENING = re.compile(r"listening on (http://\S+)")
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


async def one_run(
    http: aiohttp.ClientSession,
    url: str,
    gaps: list[float],
    gap_starts: list[float],
    outcomes: list[str],
    t0: float,
) -> None:
    last: float | None = None
    biggest = 0.0
    biggest_at = 0.0
    status = "no complete event"
    async with http.post(url + "/v1/run", json={"agent": "load", "prompt": "print"}) as resp:
        assert resp.status == 200, await resp.text()
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "tool_output":
                now = time.perf_counter()
                if last is not None and now - last > biggest:
                    biggest, biggest_at = now - last, last - t0
                last = now
            elif line.startswith("data:") and event == "complete":
                status = json.loads(line[5:])["status"]
    gaps.append(biggest)
    gap_starts.append(biggest_at)
    outcomes.append(status)


async def main(runs: int, lines: int, interval: float) -> None:
    command = f"for i in $(seq 1 {lines}); do echo line $i; sleep {interval}; done"
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
            gaps: list[float] = []
            gap_starts: list[float] = []  # when each run's largest gap began (s after start)
            outcomes: list[str] = []
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
                            runs_group.start_soon(
                                one_run, http, url, gaps, gap_starts, outcomes, started
                            )
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
    print(
        f"\nlargest tool_output gap per run (s): max {max(gaps):.3f}, "
        f"p99 {percentile(gaps, 0.99):.3f}, median {statistics.median(gaps):.3f} "
        f"(command interval {interval:.3f})"
    )
    starts = sorted(gap_starts)
    print(
        f"the largest gaps began {starts[0]:.1f}-{starts[-1]:.1f} s after the runs started "
        f"(median {statistics.median(starts):.1f} s)"
    )
    done = outcomes.count("completed")
    print(f"runs completed: {done}/{runs} in {took:.1f} s (ideal {lines * interval:.1f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    anyio.run(main, args.runs, args.lines, args.interval)
