"""The Python client's own cost, beside a bare aiohttp floor measured in the same run.

    python -m benchmarks.client_bench [--requests 300] [--lines 2000]

Against a real `agentd serve` (a subprocess on 127.0.0.1), prints:

- request round trip (`GET /v1/agents`), median and p99, for a bare aiohttp session (the
  floor: one request, the JSON parsed), `AsyncClient.agents.list()` and the blocking
  `Client.agents.list()` (which hands each call to the client's I/O thread);
- replaying one finished run's event stream (a command printing `--lines` lines a few ms
  apart, so about as many `tool_output` events): events/s for a bare aiohttp SSE read (lines split,
  JSON parsed) and for `AsyncClient.runs.stream()` / `Client.runs.stream()` (which also
  build an `Event` per frame), with each one's ratio to the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from runtime.client import AsyncClient, Client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_daemon(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (root / "workspace").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "RUNTOOLS_"))}
    env["HOME"] = str(root)  # login shells: not this machine's ~/.profile
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "serve",
            "--port",
            str(port),
            "--workspace",
            str(root / "workspace"),
            "--state-dir",
            str(root / "state"),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("agentd serve did not start")


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def bare_round_trips(url: str, count: int) -> list[float]:
    samples = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.get(url + "/v1/agents") as response:
                json.loads(await response.text())
            samples.append(time.perf_counter() - started)
    return samples


async def async_client_round_trips(url: str, count: int) -> list[float]:
    samples = []
    async with AsyncClient(url) as agentd:
        for _ in range(count):
            started = time.perf_counter()
            await agentd.agents.list()
            samples.append(time.perf_counter() - started)
    return samples


def sync_client_round_trips(url: str, count: int) -> list[float]:
    samples = []
    with Client(url) as agentd:
        for _ in range(count):
            started = time.perf_counter()
            agentd.agents.list()
            samples.append(time.perf_counter() - started)
    return samples


async def bare_replay(url: str, run_id: str) -> int:
    events = 0
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/runs/{run_id}/events") as response:
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        json.loads(line[6:])
                        events += 1
    return events


async def async_client_replay(url: str, run_id: str) -> int:
    async with AsyncClient(url) as agentd:
        return len([event async for event in agentd.runs.stream(run_id)])


def sync_client_replay(url: str, run_id: str) -> int:
    with Client(url) as agentd:
        return sum(1 for _ in agentd.runs.stream(run_id))


def timed(call: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--lines", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentd-client-bench-") as scratch:
        proc, url = start_daemon(Path(scratch))
        try:
            with Client(url) as agentd:
                agentd.tools.call("exec_command", {"cmd": "true", "login": False})  # warm up
                agentd.agents.upsert({"slug": "bench", "model": "replay:/nonexistent", "tools": []})
            print(f"request round trip, GET /v1/agents x{args.requests} (ms)")
            print(f"  {'':28} {'median':>8} {'p99':>8} {'ratio':>7}")
            asyncio.run(bare_round_trips(url, 20))  # warm up
            rows = [
                ("aiohttp, bare (floor)", asyncio.run(bare_round_trips(url, args.requests))),
                (
                    "AsyncClient.agents.list",
                    asyncio.run(async_client_round_trips(url, args.requests)),
                ),
                ("Client.agents.list", sync_client_round_trips(url, args.requests)),
            ]
            floor = summary(rows[0][1])[0]
            for name, samples in rows:
                median, p99 = summary(samples)
                print(f"  {name:28} {median:8.2f} {p99:8.2f} {median / floor:6.2f}x")

            run_id = make_long_run(url, args.lines)
            print(f"replaying run {run_id}'s stream (events/s, best of 3)")
            results = []
            for name, make in (
                ("aiohttp SSE, bare (floor)", lambda: asyncio.run(bare_replay(url, run_id))),
                ("AsyncClient.runs.stream", lambda: asyncio.run(async_client_replay(url, run_id))),
                ("Client.runs.stream", lambda: sync_client_replay(url, run_id)),
            ):
                best: float | None = None
                for _ in range(3):
                    events, seconds = timed(make)
                    best = seconds if best is None else min(best, seconds)
                results.append((name, events, events / best))
            floor_rate = results[0][2]
            for name, events, rate in results:
                print(
                    f"  {name:28} {events:6d} events {rate:10.0f}/s {floor_rate / rate:6.2f}x time"
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def make_long_run(url: str, lines: int) -> str:
    """A finished run with thousands of events: its model is a cassette that runs one
    command printing `lines` lines."""
    from runtime.messages import TextPart, ToolCallPart
    from tests.cli.support import turn, write_cassette

    tape = Path(tempfile.mkdtemp(prefix="agentd-client-bench-tape-")) / "tape.jsonl"
    # Paced, so that the output arrives as many PTY reads (many events), not one big one.
    command = f"for i in $(seq 1 {lines}); do echo line $i; sleep 0.002; done"
    write_cassette(
        tape,
        [
            turn(
                ToolCallPart(
                    id="c1",
                    name="exec_command",
                    arguments={"cmd": command, "login": False, "yield_time_ms": 30000},
                ),
                stop="tool_use",
            ),
            turn(TextPart(text="done")),
        ],
    )
    with Client(url) as agentd:
        agentd.agents.upsert({"slug": "long", "model": f"replay:{tape}", "tools": ["exec_command"]})
        run = agentd.runs.start("long", "print lines")
        agentd.runs.wait(run["runId"], timeout=120)
        return str(run["runId"])


if __name__ == "__main__":
    main()
