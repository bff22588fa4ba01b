"""Knowing what happens in the workspace: what it costs and how fast it notices.

    python -m benchmarks.workspace_bench [--files N] [--runs N]

Rows (every figure from this run; Linux):

- `write N files`: a command writing N (10,000) small files in 100 directories, alone (the
  floor), and the same with the run's change scan around it (baseline before, rescan after,
  as the loop does around a call): the overhead and ratio.
- `rescan, nothing changed`: what each later tool call pays on that N-file workspace.
- `inotify watcher`: the peer the scan was chosen over: a watch on each of the directories
  (set up before the command) and reading the N files' events (after it), through the
  kernel's inotify calls (ctypes), with nothing else a watcher library adds.
- `waiting for input`: from a process blocking in `input()` (it prints the time first) to
  exec_command returning with `Process is waiting for input` (median, p99), beside the
  yield_time_ms the call would otherwise wait out.
- `port opened`: from a server's `listen()` (it prints the time just after) to the port
  watcher's report, polled at the loop's PORT_POLL_S (median, p99), and the daemon CPU one
  look costs while the run has a session (a /proc process table with environments).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.workspace_watch import PORT_POLL_S
from tools.base import Toolbox
from tools.port_watch import PortWatcher
from tools.workspace_changes import WorkspaceScanner

PY = shlex.quote(sys.executable)
WRITER = """
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    d = os.path.join(root, "gen", f"d{i % 100}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"line {i}\\n")
"""


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def write_files(root: Path, count: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", WRITER, str(root), str(count)], check=True)
    return time.perf_counter() - started


def with_scan(root: Path, count: int) -> tuple[float, float, float, float]:
    """(wall, daemon CPU) of baseline + command + rescan, then of a rescan finding nothing."""
    scanner = WorkspaceScanner(root)
    started, cpu = time.perf_counter(), time.process_time()
    scanner.baseline()
    write_files(root, count)
    changes = scanner.rescan()
    wall, used = time.perf_counter() - started, time.process_time() - cpu
    assert len(changes.paths) == count, len(changes.paths)
    started, cpu = time.perf_counter(), time.process_time()
    assert not scanner.rescan().paths
    return wall, used, time.perf_counter() - started, time.process_time() - cpu


class Inotify:
    """The kernel's inotify through libc: the floor of any watcher library."""

    IN_CREATE, IN_CLOSE_WRITE, IN_DELETE, IN_MOVED = 0x100, 0x8, 0x200, 0xC0
    IN_NONBLOCK = os.O_NONBLOCK

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watches: dict[int, str] = {}

    def watch(self, path: str) -> None:
        mask = self.IN_CREATE | self.IN_CLOSE_WRITE | self.IN_DELETE | self.IN_MOVED
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd >= 0:
            self.watches[wd] = path

    def drain(self) -> list[tuple[str, str]]:
        events = []
        while True:
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                parent = self.watches.get(wd, "")
                if mask & self.IN_CREATE and name and "." not in name:  # a new directory
                    path = os.path.join(parent, name)
                    if os.path.isdir(path):
                        self.watch(path)
                events.append((parent, name))

    def close(self) -> None:
        os.close(self.fd)


def with_inotify(root: Path, count: int) -> tuple[float, float, int]:
    """(wall, daemon CPU, events read) of watching every directory while the command runs."""
    started, cpu = time.perf_counter(), time.process_time()
    watcher = Inotify()
    for directory, _dirs, _files in os.walk(root):
        watcher.watch(directory)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(count)], stdout=subprocess.DEVNULL
    )
    seen = 0
    while proc.poll() is None:  # a live watcher reads events as they come
        seen += len(watcher.drain())
        time.sleep(0.001)
    seen += len(watcher.drain())
    watcher.close()
    return time.perf_counter() - started, time.process_time() - cpu, seen


def overhead(count: int, runs: int) -> None:
    """The floor, the scan and the inotify peer, interleaved so load hits all alike."""
    floor: list[float] = []
    scan: list[tuple[float, float, float, float]] = []
    peer: list[tuple[float, float, int]] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            floor.append(write_files(Path(tmp), count))
        with tempfile.TemporaryDirectory() as tmp:
            scan.append(with_scan(Path(tmp), count))
        with tempfile.TemporaryDirectory() as tmp:
            peer.append(with_inotify(Path(tmp), count))

    def med(rows: list[tuple[float, ...]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    base = statistics.median(floor)
    print(f"write {count} files: the command alone  {ms(base)} (floor)")
    for name, wall, cpu in (
        ("+ scan (baseline, rescan)", med(scan, 0), med(scan, 1)),
        ("+ inotify watcher (peer)", med(peer, 0), med(peer, 1)),
    ):
        print(f"  {name:26} {ms(wall)}  ratio {wall / base:.2f}x  daemon CPU {ms(cpu)}")
    print(
        f"  rescan with nothing changed ({count} files, each later tool call): "
        f"{ms(med(scan, 2)).strip()}, daemon CPU {ms(med(scan, 3)).strip()}"
    )
    print(f"  inotify events read per run: {peer[-1][2]}")


async def input_latency(runs: int) -> None:
    script = "import time; print(time.time(), flush=True); input()"
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Toolbox(tmp) as box:
            for _ in range(runs):
                result = await box.call(
                    "exec_command",
                    {
                        "cmd": f"{PY} -c {shlex.quote(script)}",
                        "login": False,
                        "yield_time_ms": 10_000,
                    },
                )
                returned = time.time()
                assert result.data.get("waiting_for_input"), result.output
                latencies.append(returned - float(result.data["output"].split()[0]))
                await box.call(
                    "write_stdin", {"session_id": result.data["session_id"], "chars": "\n"}
                )
    print(
        f"waiting for input detected        median {ms(statistics.median(latencies))}  "
        f"p99 {ms(percentile(latencies, 99))}  (instead of yield_time_ms 10000 ms)"
    )


async def port_latency(runs: int) -> None:
    script = (
        "import http.server, time\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n"
        "print(time.time(), flush=True)\n"
        "s.serve_forever()\n"
    )
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Toolbox(tmp) as box:
            for _ in range(runs):
                watcher = PortWatcher(box)
                await watcher.poll()

                async def look(watcher: PortWatcher = watcher) -> float:
                    while True:  # the loop's cadence: a look every PORT_POLL_S
                        if any(c.kind == "opened" for c in await watcher.poll()):
                            return time.time()
                        await asyncio.sleep(PORT_POLL_S)

                looking = asyncio.create_task(look())
                result = await box.call(
                    "exec_command",
                    {"cmd": f"{PY} -c {shlex.quote(script)}", "login": False, "yield_time_ms": 250},
                )
                session = result.data["session_id"]
                output = result.data["output"]
                found = await looking
                while not output.strip():
                    polled = await box.call("write_stdin", {"session_id": session})
                    output += polled.data["output"]
                latencies.append(found - float(output.split()[0]))
                await box.call("write_stdin", {"session_id": session, "chars": "\x03"})
        # What one look costs while the run has a session (the loop looks every PORT_POLL_S).
        async with Toolbox(tmp) as box:
            await box.call(
                "exec_command", {"cmd": "sleep 30", "login": False, "yield_time_ms": 250}
            )
            watcher = PortWatcher(box)
            looks, cpu = 20, time.process_time()
            for _ in range(looks):
                await watcher.poll()
            per_look = (time.process_time() - cpu) / looks
    print(
        f"port opened detected              median {ms(statistics.median(latencies))}  "
        f"p99 {ms(percentile(latencies, 99))}  (polled every {PORT_POLL_S * 1000:.0f} ms)"
    )
    print(
        f"  one look: daemon CPU {ms(per_look).strip()} "
        f"({per_look / PORT_POLL_S:.1%} of a core at one look per {PORT_POLL_S * 1000:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=30)
    args = parser.parse_args()
    if not os.path.isdir("/proc/self"):
        sys.exit("workspace_bench needs Linux (/proc, inotify)")
    overhead(args.files, args.runs)
    asyncio.run(input_latency(args.latency_runs))
    asyncio.run(port_latency(args.latency_runs))


if __name__ == "__main__":
    main()
