"""agentd's HTTP daemon side by side with SWE-ReX's in-sandbox server, in the same run.

    python -m benchmarks.api_bench [--rtt N] [--starts N] [--clients N] [--turns N] [--calls N]

(from the repository root; `pip install swe-rex` for the peer, else its column is n/a).
Both daemons run as real processes on 127.0.0.1, driven by one aiohttp client with
keep-alive connections. Figures:

- start-up: process spawn → first ready answer (`GET /readyz` for agentd, `GET /is_alive`
  for `swerex-remote`), polled every 2 ms; median of `--starts` starts after one untimed
  warm-up. Both run with a bytecode cache (`PYTHONPYCACHEPREFIX` in a temp dir, overriding
  `PYTHONDONTWRITEBYTECODE`), as an installed wheel has: otherwise agentd, run from a
  source checkout, would recompile itself on every start while swerex comes precompiled.
- round trips, median and p99: the HTTP layer alone (`GET /healthz` vs `GET /is_alive`);
  `true` in a terminal: agentd `POST /v1/tools/exec_command {"cmd": "true", "login": false}`
  (a fresh process on a new PTY per call) vs swerex `POST /run_in_session` (a command typed
  into its long-lived bash session); `true` as a plain subprocess: agentd's exec_command with
  `"tty": false` vs swerex `POST /execute`.
- 5 MiB of command output: wall time and how many bytes come back. agentd returns what a
  model may read (head + tail within `max_output_tokens`, default 10k tokens ≈ 40 KB, with
  a marker saying how much was cut) — by design; swerex returns everything.
- SSE fan-out (agentd only): `--clients` clients follow one live run (`GET
  /v1/runs/{id}/events`) whose model (the fake model server, in this process) calls a tool
  `--calls` times at once in each of `--turns` turns (an agent runs at most 100 model turns,
  the last of which answers); events/s delivered across clients, and the latency from an event's
  timestamp to its arrival at a client (median, p99). The clients' parsing runs in this
  process on the same cores as the daemon, so these are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from runtime.limits import MAX_ITERATIONS

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
BIG_BYTES = 5 * 1024 * 1024
BIG_CMD = f"yes {'0123456789' * 10} | head -c {BIG_BYTES}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    headers: dict[str, str]
    ready_path: str
    startup_s: float = 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def swerex_command() -> list[str] | None:
    script = Path(sys.executable).parent / "swerex-remote"
    if script.exists():
        return [str(script)]
    found = shutil.which("swerex-remote")
    return [found] if found else None


def python_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


async def start(
    session: aiohttp.ClientSession,
    name: str,
    argv: list[str],
    ready_path: str,
    headers: dict[str, str],
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Server:
    url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(name, process, url, headers, ready_path)
    deadline = began + 30
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} while starting")
        try:
            async with session.get(
                url + ready_path, headers=headers, timeout=aiohttp.ClientTimeout(total=1)
            ) as resp:
                if resp.status == 200:
                    server.startup_s = time.perf_counter() - began
                    return server
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.002)
    server.stop()
    raise RuntimeError(f"{name} did not become ready in 30 s")


def agentd_module(root: Path = ROOT) -> str:
    """What `python -m` runs as the `agentd` command in the tree at `root` (older trees had
    no runtime/__main__.py)."""
    return "runtime" if (root / "runtime" / "__main__.py").exists() else "runtime.cli"


def agentd_argv(port: int, state: Path, workspace: Path, root: Path = ROOT) -> list[str]:
    return [
        sys.executable,
        "-m",
        agentd_module(root),
        "serve",
        "--port",
        str(port),
        "--state-dir",
        str(state),
        "--workspace",
        str(workspace),
        "--token",
        TOKEN,
        "--log-level",
        "warning",
    ]


async def start_agentd(
    session: aiohttp.ClientSession,
    tmp: Path,
    env: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Server:
    """`agentd serve` from the tree at `root` (this one by default), ready."""
    port = free_port()
    state = Path(tempfile.mkdtemp(dir=tmp, prefix="state"))
    workspace = tmp / "workspace"
    workspace.mkdir(exist_ok=True)
    return await start(
        session,
        "agentd",
        agentd_argv(port, state, workspace, root),
        "/readyz",
        {"Authorization": f"Bearer {TOKEN}"},
        port,
        env={**python_env(tmp), "PYTHONPATH": str(root), **(env or {})},
        cwd=workspace,
    )


async def start_swerex(session: aiohttp.ClientSession, command: list[str], tmp: Path) -> Server:
    port = free_port()
    argv = [*command, "--host", "127.0.0.1", "--port", str(port), "--auth-token", TOKEN]
    headers = {"X-API-Key": TOKEN}
    return await start(session, "swerex", argv, "/is_alive", headers, port, python_env(tmp))


async def timed_post(
    session: aiohttp.ClientSession, server: Server, path: str, body: dict[str, Any]
) -> tuple[float, Any]:
    began = time.perf_counter()
    async with session.post(
        server.url + path,
        json=body,
        headers=server.headers,
        timeout=aiohttp.ClientTimeout(total=120),
    ) as resp:
        payload = await resp.json()
        if resp.status not in (200, 201):
            raise RuntimeError(f"{server.name} {path}: HTTP {resp.status}: {payload}")
    return time.perf_counter() - began, payload


async def timed_get(session: aiohttp.ClientSession, server: Server, path: str) -> tuple[float, Any]:
    began = time.perf_counter()
    async with session.get(server.url + path, headers=server.headers) as resp:
        payload = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{server.name} {path}: HTTP {resp.status}: {payload!r}")
    return time.perf_counter() - began, payload


async def repeat(
    n: int, call: Callable[[], Awaitable[tuple[float, Any]]], warmup: int = 5
) -> list[float]:
    for _ in range(warmup):
        await call()
    return [(await call())[0] for _ in range(n)]


# -- SSE fan-out ---------------------------------------------------------------------------


@dataclass
class FanOut:
    events: int = 0
    per_client: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def follow(
    session: aiohttp.ClientSession,
    server: Server,
    run_id: str,
    connected: asyncio.Event,
    counts: list[int],
    latencies: list[float],
    remaining: list[int],
) -> None:
    async with session.get(
        f"{server.url}/v1/runs/{run_id}/events",
        headers=server.headers,
        timeout=aiohttp.ClientTimeout(total=300),
    ) as resp:
        remaining[0] -= 1
        if remaining[0] == 0:
            connected.set()
        count = 0
        async for raw in resp.content:
            if raw.startswith(b"data: "):
                now = time.time()
                event = json.loads(raw[6:])
                stamp = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
                latencies.append((now - stamp) * 1000)
                count += 1
                if event["type"] == "complete":
                    break
        counts.append(count)


async def sse_fanout(
    session: aiohttp.ClientSession, tmp: Path, clients: int, turns: int, calls: int
) -> FanOut:
    sys.path.insert(0, str(ROOT))
    from tests.fakes.model_server import FakeModelServer, Gate, Turn, text, tool_call

    async with FakeModelServer() as model:
        gate = Gate()
        script = [
            Turn([tool_call("list_dir", {"path": "."}, id=f"call_{i}_{k}") for k in range(calls)])
            for i in range(turns)
        ]
        script[0].hold, script[0].hold_after = gate, 0
        model.script(*script, Turn([text("done")]))
        server = await start_agentd(session, tmp, env=model.env())
        try:
            agent = {
                "slug": "fan",
                "model": "claude-sonnet-4-6",
                "tools": ["list_dir"],
                "maxIterations": turns + 1,  # the tool turns and the answer
            }
            await timed_post(session, server, "/v1/agents", agent)
            async with session.post(
                server.url + "/v1/run",
                json={"agent": "fan", "prompt": "go"},
                headers=server.headers,
            ) as resp:
                run_id = resp.headers["X-Run-ID"]  # leaving does not stop the run
            await asyncio.wait_for(gate.reached.wait(), 30)
            connected = asyncio.Event()
            counts: list[int] = []
            latencies: list[float] = []
            remaining = [clients]
            # Enough connections for every follower at once.
            conn = aiohttp.TCPConnector(limit=clients + 10)
            async with aiohttp.ClientSession(connector=conn) as fan_session:
                tasks = [
                    asyncio.create_task(
                        follow(fan_session, server, run_id, connected, counts, latencies, remaining)
                    )
                    for _ in range(clients)
                ]
                await asyncio.wait_for(connected.wait(), 60)
                began = time.perf_counter()
                gate.open()
                await asyncio.wait_for(asyncio.gather(*tasks), 300)
                elapsed = time.perf_counter() - began
            return FanOut(sum(counts), counts, latencies, elapsed)
        finally:
            server.stop()


# -- the table -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def ratio(peer: float | None, ours: float) -> str:
    return "n/a" if peer is None or ours <= 0 else f"{peer / ours:.1f}×"


def compare(what: str, ours: list[float], peer: list[float]) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, p in (("median", 50.0), ("p99", 99.0)):
        mine = pct(ours, p)
        theirs = pct(peer, p) if peer else None
        rows.append(
            (
                f"{what}, {label}",
                ms(mine),
                ms(theirs) if theirs is not None else "n/a",
                ratio(theirs, mine),
            )
        )
    return rows


async def main_async(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str, str, str]] = []
    peer = swerex_command()
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with aiohttp.ClientSession() as session:
            # Start-up.
            ours_starts, peer_starts = [], []
            for attempt in range(args.starts + 1):  # the first fills the bytecode caches
                server = await start_agentd(session, tmp)
                server.stop()
                if attempt:
                    ours_starts.append(server.startup_s)
                if peer:
                    server = await start_swerex(session, peer, tmp)
                    server.stop()
                    if attempt:
                        peer_starts.append(server.startup_s)
            ours = statistics.median(ours_starts)
            theirs = statistics.median(peer_starts) if peer_starts else None
            rows.append(
                (
                    f"start-up → first ready answer (median of {args.starts})",
                    ms(ours),
                    ms(theirs) if theirs else "n/a",
                    ratio(theirs, ours),
                )
            )

            agentd = await start_agentd(session, tmp)
            swerex = await start_swerex(session, peer, tmp) if peer else None
            try:
                # The HTTP layer alone, then a trivial command.
                ours_ping = await repeat(args.rtt, lambda: timed_get(session, agentd, "/healthz"))
                ours_pty = await repeat(
                    args.rtt,
                    lambda: timed_post(
                        session, agentd, "/v1/tools/exec_command", {"cmd": "true", "login": False}
                    ),
                )
                plain = {"cmd": "true", "login": False, "tty": False}
                ours_plain = await repeat(
                    args.rtt,
                    lambda: timed_post(session, agentd, "/v1/tools/exec_command", plain),
                )
                peer_ping: list[float] = []
                session_rtt: list[float] = []
                execute_rtt: list[float] = []
                if swerex:
                    peer_ping = await repeat(
                        args.rtt, lambda: timed_get(session, swerex, "/is_alive")
                    )
                    await timed_post(
                        session,
                        swerex,
                        "/create_session",
                        {"session": "default", "session_type": "bash"},
                    )
                    action = {"command": "true", "check": "silent", "action_type": "bash"}
                    session_rtt = await repeat(
                        args.rtt, lambda: timed_post(session, swerex, "/run_in_session", action)
                    )
                    execute_rtt = await repeat(
                        args.rtt,
                        lambda: timed_post(
                            session, swerex, "/execute", {"command": "true", "shell": True}
                        ),
                    )
                n = f"n={args.rtt}"
                rows.extend(compare(f"HTTP only (healthz / is_alive), {n}", ours_ping, peer_ping))
                rows.extend(
                    compare(
                        f"`true` in a PTY (exec_command / run_in_session), {n}",
                        ours_pty,
                        session_rtt,
                    )
                )
                rows.extend(
                    compare(
                        f"`true` plain subprocess (exec_command tty=false / execute), {n}",
                        ours_plain,
                        execute_rtt,
                    )
                )

                # 5 MiB of output.
                big = {"cmd": BIG_CMD, "login": False, "yield_time_ms": 30000}
                ours_big, ours_payload = await timed_post(
                    session, agentd, "/v1/tools/exec_command", big
                )
                ours_returned = len(ours_payload["data"]["output"].encode())
                peer_cells = ["n/a", "n/a"]
                peer_walls: list[float | None] = [None, None]
                if swerex:
                    action = {
                        "command": BIG_CMD,
                        "check": "silent",
                        "action_type": "bash",
                        "timeout": 120,
                    }
                    wall, payload = await timed_post(session, swerex, "/run_in_session", action)
                    peer_walls[0] = wall
                    peer_cells[0] = f"{ms(wall)}, {len(payload['output'].encode()):,} B"
                    wall, payload = await timed_post(
                        session, swerex, "/execute", {"command": BIG_CMD, "shell": True}
                    )
                    peer_walls[1] = wall
                    peer_cells[1] = f"{ms(wall)}, {len(payload['stdout'].encode()):,} B"
                rows.append(
                    (
                        "5 MiB of output: wall, bytes returned",
                        f"{ms(ours_big)}, {ours_returned:,} B (truncated for the model)",
                        f"{peer_cells[0]} (run_in_session) / {peer_cells[1]} (execute)",
                        f"{ratio(peer_walls[0], ours_big)} / {ratio(peer_walls[1], ours_big)}",
                    )
                )
            finally:
                agentd.stop()
                if swerex:
                    swerex.stop()

            # SSE fan-out.
            fan = await sse_fanout(session, tmp, args.clients, args.turns, args.calls)
            per_client = fan.per_client[0] if fan.per_client else 0
            rows.append(
                (
                    f"SSE: {args.clients} clients on one run ({per_client} events each)",
                    f"{fan.events / fan.seconds:,.0f} events/s delivered",
                    "n/a",
                    "",
                )
            )
            rows.append(
                (
                    "SSE: event ts → client, median / p99",
                    f"{statistics.median(fan.latencies_ms):.1f} / "
                    f"{pct(fan.latencies_ms, 99):.1f} ms",
                    "n/a",
                    "",
                )
            )
            if len(set(fan.per_client)) != 1 or len(fan.per_client) != args.clients:
                rows.append(
                    ("SSE: WARNING clients saw different counts", str(fan.per_client), "", "")
                )

    print_table(rows, peer is not None)


def print_table(rows: list[tuple[str, str, str, str]], have_peer: bool) -> None:
    header = (
        "metric",
        "agentd",
        "swerex-remote" if have_peer else "swerex (not installed)",
        "swerex/agentd",
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=5, help="cold starts per daemon")
    parser.add_argument("--rtt", type=int, default=200, help="round trips per endpoint")
    parser.add_argument("--clients", type=int, default=100, help="SSE clients")
    parser.add_argument(
        "--turns",
        type=int,
        default=MAX_ITERATIONS - 1,
        help=f"tool-call turns of the run (at most {MAX_ITERATIONS - 1})",
    )
    parser.add_argument("--calls", type=int, default=2, help="tool calls in each turn")
    args = parser.parse_args()
    if not 1 <= args.turns < MAX_ITERATIONS:
        parser.error(
            f"--turns must be 1 to {MAX_ITERATIONS - 1}: a run has at most "
            f"{MAX_ITERATIONS} model turns, and the last one answers"
        )
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
