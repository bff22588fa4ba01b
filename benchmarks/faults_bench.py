"""Faults that need time to measure: SIGTERM with runs in flight, and process escapes.

    python -m benchmarks.faults_bench [--repeat 3] [--kill-seeds 20] [--first-seed 1]

1. SIGTERM with runs in flight: `agentd serve --shutdown-grace G` with 4 runs whose model
   stream is held open and 4 runs inside a long `exec_command`, SIGTERMed; prints the time
   from the signal to the process's exit, beside G (the goal: exit within G + 0.5 s) and the
   interrupted runs' statuses as a restarted daemon reports them.
2. Escapes: the commands of tests/tools/leave_processes.py (nohup, setsid, a double-forked
   setsid ignoring TERM/HUP, nohup ignoring TERM/HUP) started through a toolbox in a helper
   process; prints the time until none of them is alive when (a) the toolbox closes
   (cancel), with and without the helper as child subreaper, and (b) after SIGKILL of the
   helper, from the start of `kill_tagged` (what a restarted daemon does before it takes
   runs). Goal: 0 survivors within 2 s.
3. SIGKILL at random points: `--kill-seeds N` seeded kills of a daemon mid-run (text and
   exec_command/write_file/apply_patch calls), each followed by a restart on the same state
   dir and every check of tests/api/kill_points.py (events, thread, rollout, workspace, a
   continuation); prints each kill point and how it ended, and the restart times. A failing
   seed is rerun alone with `AGENTD_KILL_SEEDS=<seed> pytest tests/api/test_sigkill.py`.
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

from tests.api.kill_points import kill_at_random_point
from tests.fakes.model_server import FakeModelServer, Gate, Turn, text, tool_call
from tools.proctable import kill_tagged, read_proc

ROOT = Path(__file__).resolve().parents[1]
MODEL = "claude-sonnet-4-6"
LISTENING = re.compile(r"listening on (http://\S+)")


def alive(pid: int) -> bool:
    info = read_proc(pid)
    return info is not None and info.state not in ("Z", "X")


async def sigterm_once(grace: float, held: int, busy: int) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory(prefix="agentd-faults-") as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        gate = Gate()
        async with FakeModelServer(default_turn=Turn([text("done")])) as model:
            model.script(
                *(
                    Turn([tool_call("exec_command", {"cmd": "sleep 600", "login": False})])
                    for _ in range(busy)
                ),
                *(Turn([text("never")], hold=gate, hold_after=1) for _ in range(held)),
            )
            env = {
                **os.environ,
                **model.env(),
                "PYTHONPATH": str(ROOT),
                "AGENTD_STATE_DIR": str(Path(tmp) / "state"),
                "AGENTD_WORKSPACE": str(workspace),
                "AGENTD_SHUTDOWN_GRACE": str(grace),
            }
            process = await anyio.open_process(
                [sys.executable, "-m", "runtime.cli", "serve", "--port", "0"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            assert process.stderr is not None
            buffer = b""
            url = ""
            with anyio.fail_after(60):
                async for chunk in process.stderr:
                    buffer += chunk
                    if match := LISTENING.search(buffer.decode(errors="replace")):
                        url = match.group(1)
                        break
            statuses: list[str] = []
            async with aiohttp.ClientSession() as http, anyio.create_task_group() as tg:

                async def drain() -> None:
                    assert process.stderr is not None
                    async for _ in process.stderr:
                        pass

                tg.start_soon(drain)
                agent = {"slug": "a", "model": MODEL, "tools": ["exec_command"]}
                async with http.post(url + "/v1/agents", json=agent) as resp:
                    assert resp.status == 201
                runs = []
                for _ in range(busy + held):
                    resp = await http.post(url + "/v1/run", json={"agent": "a", "prompt": "go"})
                    runs.append(resp)
                    # The first run waits for the SDK import (seconds on a loaded machine).
                    await model.wait_for_requests(len(runs), timeout=60)
                await anyio.sleep(1.0)  # the commands are running, the held streams open
                started = time.perf_counter()
                process.send_signal(signal.SIGTERM)
                with anyio.fail_after(60):
                    await process.wait()
                took = time.perf_counter() - started
                for resp in runs:
                    tail = (await resp.read()).decode(errors="replace")
                    found = re.findall(r'"status":\s*"(\w+)"', tail)
                    statuses.append(found[-1] if found else "?")
                    resp.close()
                gate.open()
                tg.cancel_scope.cancel()
    return took, statuses


def escapes_once(mode: str) -> tuple[float, int]:
    """Seconds until every escapee is gone, and how many were found alive at the start."""
    with tempfile.TemporaryDirectory(prefix="agentd-escapes-") as tmp:
        owner = "bench-" + os.urandom(4).hex()
        helper_mode = {"cancel": "close", "cancel-subreaper": "subreaper-close"}.get(mode, "crash")
        helper = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.leave_processes", helper_mode, tmp, owner],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert helper.stdout is not None
            pids = list(json.loads(helper.stdout.readline())["pids"].values())
            start_alive = sum(alive(p) for p in pids)
            started = time.perf_counter()
            if mode == "restart":
                helper.kill()
                helper.wait()
                started = time.perf_counter()
                kill_tagged(lambda tag: tag.startswith(owner + "/"))
            deadline = started + 10
            while any(alive(p) for p in pids) and time.perf_counter() < deadline:
                time.sleep(0.005)
            took = time.perf_counter() - started
            survivors = sum(alive(p) for p in pids)
            if survivors:
                took = float("inf")
            return took, start_alive
        finally:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
            kill_tagged(lambda tag: tag.startswith(owner + "/"))


async def random_kills(seeds: range) -> None:
    print(f"\n3. SIGKILL at random points ({len(seeds)} seeds from {seeds.start})")
    restarts: list[float] = []
    statuses: list[str] = []
    failures = 0
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="agentd-kill-") as tmp:
            try:
                report = await kill_at_random_point(seed, Path(tmp))
            except (AssertionError, ExceptionGroup) as exc:  # the daemon helper's task group
                failures += 1
                print(f"seed {seed}: FAILED: {exc!r}"[:400])
                continue
        print(report.line())
        restarts.append(report.restart_s)
        statuses.append(report.status)
    if restarts:
        ordered = sorted(restarts)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"kills {len(seeds)}: failed checks {failures}, "
            + ", ".join(f"{s} {statuses.count(s)}" for s in sorted(set(statuses)))
            + f"; SIGKILL → restarted and recovered: median {statistics.median(restarts):.2f} s,"
            f" p99 {p99:.2f} s, max {ordered[-1]:.2f} s"
        )


async def main(repeat: int, kill_seeds: int, first_seed: int) -> None:
    print("1. SIGTERM with runs in flight (4 held model streams, 4 long commands)")
    print(f"{'grace (s)':>10} {'exit after SIGTERM (s)':>24} {'over grace (s)':>15}  statuses")
    for grace in (0.5, 2.0):
        for _ in range(repeat):
            took, statuses = await sigterm_once(grace, held=4, busy=4)
            summary = ", ".join(f"{s}×{statuses.count(s)}" for s in sorted(set(statuses)))
            print(f"{grace:>10.1f} {took:>24.2f} {took - grace:>15.2f}  {summary}")

    print("\n2. Escapes (nohup, setsid, double fork ignoring TERM/HUP, nohup ignoring TERM/HUP)")
    print(f"{'when':<22} {'alive at start':>15} {'median s to 0':>14} {'max s to 0':>11}")
    for mode in ("cancel", "cancel-subreaper", "restart"):
        results = [escapes_once(mode) for _ in range(repeat)]
        times = [t for t, _ in results]
        print(
            f"{mode:<22} {min(n for _, n in results):>15} {statistics.median(times):>14.3f} "
            f"{max(times):>11.3f}"
        )
    if kill_seeds:
        await random_kills(range(first_seed, first_seed + kill_seeds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kill-seeds", type=int, default=20, help="random SIGKILLs (0: none)")
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args()
    anyio.run(main, args.repeat, args.kill_seeds, args.first_seed)
