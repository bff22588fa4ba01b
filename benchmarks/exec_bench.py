"""exec_command / write_stdin cost against the raw-PTY floor, all measured in one run.

    python benchmarks/exec_bench.py [--runs N] [--rtt-runs N] [--mb N]

Rows (every figure comes from this run; floor and tool runs are interleaved so machine load
affects both alike):

- `exec_command <cmd>`: a full `Toolbox.call("exec_command", {cmd, login: false})` round
  trip, next to the floor: `os.openpty()` + `subprocess.Popen(["bash", "-c", cmd])` read to
  EOF. Target: within 1.5x of the floor. `, cgroup`: the same where the toolbox has a
  cgroup v2 of its own (tools/cgroups.py), when this process may make one.
- `write_stdin echo hi`: typing `echo hi\\n` into a running interactive bash session until
  `hi` comes back (seen in the live `tool_output` events), next to the same exchange on a
  raw PTY. The call itself returns at its yield_time_ms (250 ms), as in Codex: a running
  session's call only returns early when the process exits.
- `throughput <cmd>`: MB/s of 100 MB of output consumed through a session, next to a raw
  blocking read loop on the PTY. Two producers: `yes` (newline-heavy: the terminal's
  newline-to-CRLF translation bounds the PTY itself) and one without newlines.
- `peak RSS`: the daemon's (this process's) peak resident memory during the floods, and
  how much it grew over the resident size before them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.base import Toolbox, ToolSettings
from tools.cgroups import CgroupTree


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def floor_run(cmd: str) -> tuple[float, int]:
    """The floor: a PTY, bash -c, read to EOF (EIO), wait. Returns (seconds, bytes)."""
    started = time.perf_counter()
    master, slave = os.openpty()
    proc = subprocess.Popen(["bash", "-c", cmd], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    total = 0
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        total += len(data)
    proc.wait()
    os.close(master)
    return time.perf_counter() - started, total


def floor_echo_rtt(runs: int) -> list[float]:
    """The floor for a session round trip: `echo hi` typed into bash on a raw PTY."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "PS1": "$ ", "TERM": "dumb"},
    )
    os.close(slave)
    buf = b""
    while b"$ " not in buf:
        buf += os.read(master, 65536)
    times = []
    for _ in range(runs):
        buf = b""
        started = time.perf_counter()
        os.write(master, b"echo hi\n")
        while b"\nhi\r\n" not in buf:
            buf += os.read(master, 65536)
        times.append(time.perf_counter() - started)
        while not buf.endswith(b"$ "):
            buf += os.read(master, 65536)
    os.write(master, b"exit\n")
    proc.wait()
    os.close(master)
    return times


async def exec_round_trips(box: Toolbox, cmd: str, runs: int) -> tuple[list[float], list[float]]:
    ours, floor = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = await box.call("exec_command", {"cmd": cmd, "login": False})
        ours.append(time.perf_counter() - started)
        assert result.data["exit_code"] == 0, result.output
        floor.append(floor_run(cmd)[0])
    return ours, floor


class LiveView:
    """The toolbox's `on_event`: counts streamed bytes, and resolves a waiter when a text
    shows up in the live output (stamped with the time the event arrived)."""

    def __init__(self) -> None:
        self.bytes = 0
        self._text = ""
        self._target: str | None = None
        self._arrived: asyncio.Future[float] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        chunk = event["chunk"]
        self.bytes += len(chunk)
        if self._target is None or self._arrived is None:
            return
        self._text += chunk
        if self._target in self._text and not self._arrived.done():
            self._arrived.set_result(time.perf_counter())

    def expect(self, target: str) -> asyncio.Future[float]:
        self._text, self._target = "", target
        self._arrived = asyncio.get_running_loop().create_future()
        return self._arrived

    def stop(self) -> None:
        self._target = self._arrived = None
        self._text = ""


async def session_rtt(box: Toolbox, view: LiveView, runs: int) -> tuple[list[float], float]:
    start = await box.call(
        "exec_command",
        {"cmd": "PS1='$ ' exec bash --noprofile --norc -i", "login": False, "yield_time_ms": 250},
    )
    session = start.data["session_id"]
    assert session is not None, start.output
    times, call_times = [], []
    for _ in range(runs):
        arrived = view.expect("\nhi\r\n")
        started = time.perf_counter()
        result = await box.call("write_stdin", {"session_id": session, "chars": "echo hi\n"})
        call_times.append(time.perf_counter() - started)
        assert arrived.done(), result.output
        times.append(arrived.result() - started)
    view.stop()
    await box.call("write_stdin", {"session_id": session, "chars": "exit\n"})
    return times, statistics.median(call_times)


async def throughput(box: Toolbox, cmd: str) -> tuple[float, int]:
    started = time.perf_counter()
    result = await box.call("exec_command", {"cmd": cmd, "login": False, "yield_time_ms": 30_000})
    total = result.data["original_bytes"]
    while result.data["session_id"] is not None:
        result = await box.call(
            "write_stdin", {"session_id": result.data["session_id"], "yield_time_ms": 30_000}
        )
        total += result.data["original_bytes"]
    return time.perf_counter() - started, total


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="exec_command round trips per cmd")
    parser.add_argument("--rtt-runs", type=int, default=40, help="write_stdin round trips")
    parser.add_argument("--mb", type=int, default=100, help="MB of output per throughput run")
    opts = parser.parse_args()

    view = LiveView()
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Toolbox(Path(tmp), on_event=view) as box:
            await exec_round_trips(box, "true", 10)  # warm up imports, caches, the shell
            for cmd in ("true", "echo hello"):
                ours, floor = await exec_round_trips(box, cmd, opts.runs)
                ours_med, ours_p99 = statistics.median(ours), percentile(ours, 99)
                fl_med, fl_p99 = statistics.median(floor), percentile(floor, 99)
                rows.append(
                    (
                        f"exec_command `{cmd}`",
                        ms(ours_med),
                        ms(ours_p99),
                        ms(fl_med),
                        ms(fl_p99),
                        f"{ours_med / fl_med:.2f}x",
                        f"{ours_p99 / fl_p99:.2f}x",
                    )
                )

            # The same in a cgroup per toolbox (what a daemon does where it may make them):
            # each command first runs as the /bin/sh that moves itself in (tools/cgroups.py).
            cgroups = CgroupTree.open(f"bench-{os.getpid()}")
            if cgroups is not None:
                settings = ToolSettings(cgroups=cgroups)
                async with Toolbox(Path(tmp), settings=settings, run_id="bench") as boxed:
                    await exec_round_trips(boxed, "true", 10)
                    ours, floor = await exec_round_trips(boxed, "true", opts.runs)
                cgroups.close()
                rows.append(
                    (
                        "exec_command `true`, cgroup",
                        ms(statistics.median(ours)),
                        ms(percentile(ours, 99)),
                        ms(statistics.median(floor)),
                        ms(percentile(floor, 99)),
                        f"{statistics.median(ours) / statistics.median(floor):.2f}x",
                        f"{percentile(ours, 99) / percentile(floor, 99):.2f}x",
                    )
                )

            rtt, call_median = await session_rtt(box, view, opts.rtt_runs)
            floor_rtt = floor_echo_rtt(opts.rtt_runs)
            rows.append(
                (
                    "write_stdin `echo hi` → `hi`",
                    ms(statistics.median(rtt)),
                    ms(percentile(rtt, 99)),
                    ms(statistics.median(floor_rtt)),
                    ms(percentile(floor_rtt, 99)),
                    f"{statistics.median(rtt) / statistics.median(floor_rtt):.2f}x",
                    f"{percentile(rtt, 99) / percentile(floor_rtt, 99):.2f}x",
                )
            )

            before = rss("VmRSS")
            peak_known = reset_peak_rss()
            for label, cmd in (
                ("yes", f"yes | head -c {opts.mb}M"),
                ("no newlines", f"head -c {opts.mb}M /dev/zero | tr '\\0' y"),
            ):
                seconds, total = await throughput(box, cmd)
                floor_seconds, floor_total = floor_run(cmd)
                ours_rate = total / seconds / 1e6
                floor_rate = floor_total / floor_seconds / 1e6
                rows.append(
                    (
                        f"throughput `{label}` ({total / 1e6:.0f} MB)",
                        f"{ours_rate:.1f} MB/s",
                        "",
                        f"{floor_rate:.1f} MB/s",
                        "",
                        f"{ours_rate / floor_rate:.0%}",
                        "",
                    )
                )
            peak = rss("VmHWM")
            rows.append(
                (
                    "peak RSS during the floods",
                    f"{peak / 2**20:.1f} MiB" if peak_known else "n/a",
                    "",
                    "",
                    "",
                    f"+{(peak - before) / 2**20:.1f} MiB" if peak_known else "",
                    "",
                )
            )

    header = ("scenario", "median", "p99", "floor median", "floor p99", "ratio", "ratio p99")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, row in enumerate([header, *rows]):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(
        f"\nexec_command runs: {opts.runs} per command; write_stdin round trips: {opts.rtt_runs} "
        f"(each call returns at its 250 ms yield, median {ms(call_median)}); live bytes "
        f"streamed: {view.bytes}; ratio for throughput = session / raw PTY; peak RSS ratio "
        "column = growth over the RSS before the floods."
    )


if __name__ == "__main__":
    asyncio.run(main())
