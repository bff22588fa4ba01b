"""How costs grow with the work: one small table per axis, so a change in the growth shows.

    python -m benchmarks.growth_bench [--quick | --smoke] [--repeat N]    (from the repository root)

Axes (each row is one size; `×` columns divide by the smallest size's figure, beside the
size ratio, so linear growth reads as the same number twice):

- thread length: one thread holding the history of 10, 100 and 1,000 1-turn runs (a user
  and an assistant message each, appended to the store as runs leave them), then 100k more
  events stored for other runs: a real 1-turn run's start → `complete` latency on that
  thread (through the `RunManager`, a real SQLite store, a provider that answers at once)
  and the thread read `GET /v1/run/threads/{id}` does (`get_thread` + `thread_messages`),
  and how many message rows each run adds to the store;
- workspace size: 1k, 10k and 100k files (100 per directory, 4 lines each): the tools
  `list_dir` (depth 2), `grep` (a word in one file in ten) with ripgrep and with the Python
  fallback, `glob` (`**/*.py`), and the files API (`GET /v1/runs/{id}/files` of one
  directory, over HTTP); beside them two floors: ripgrep alone over the whole tree, and a
  bare `os.walk`;
- concurrent runs: 1, 10 and 50 runs at once, each 20 turns calling `list_dir`: the delay
  from an event's timestamp to a subscriber receiving it (p50, p99) and the process RSS;
- command output: `exec_command` printing 1 MB, 100 MB and 1 GB (no TTY), each in a fresh
  process: wall time, MB/s and the process's peak RSS, beside the same command alone (its
  output to /dev/null) as the floor.

Every figure is a median of `--repeat` measurements (p99 where stated). Everything runs in
this process but the output axis; the whole benchmark takes a few minutes (`--quick`: the
smaller sizes only; `--smoke`: two tiny sizes per axis, which only shows that it runs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import anyio
from aiohttp import web

from runtime.agents import AgentSpec
from runtime.api.app import create_app
from runtime.config import Settings
from runtime.events import Event
from runtime.messages import Message, TextPart, ToolCallPart
from runtime.providers.base import (
    AssistantTurn,
    ModelSettings,
    StreamItem,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from runtime.runs import RunManager
from runtime.store import Store
from tools.base import Toolbox, ToolSettings

Row = tuple[str, ...]


class ScriptedProvider:
    """Answers at once: `tool_turns` turns calling `list_dir`, then a text answer."""

    name = "instant"

    def __init__(self, tool_turns: int = 0) -> None:
        self.tool_turns = tool_turns
        self.calls = 0

    def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]:
        self.calls += 1
        return self._play(self.calls)

    async def _play(self, n: int) -> AsyncIterator[StreamItem]:
        usage = Usage(input_tokens=100, output_tokens=10)
        if n <= self.tool_turns:
            call = ToolCallPart(id=f"call_{n}", name="list_dir", arguments={"path": "."})
            yield ToolCallStart(index=0, id=call.id, name=call.name)
            yield ToolCallEnd(index=0, call=call)
            yield AssistantTurn(content=[call], stop_reason="tool_use", usage=usage)
        else:
            yield TextDelta(text="done")
            yield AssistantTurn(content=[TextPart(text="done")], usage=usage)

    async def aclose(self) -> None:
        return None


def manager_for(store: Store, workspace: Path, tool_turns: int = 0, **kw: Any) -> RunManager:
    def factory(model: Any, *, env: Any = None) -> tuple[ScriptedProvider, str]:
        return ScriptedProvider(tool_turns), "instant"

    return RunManager(store, workspace, provider_factory=factory, env={}, **kw)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def growth(value: float, base: float) -> str:
    return f"{value / base:.1f}×" if base > 0 else "n/a"


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def print_table(title: str, header: Row, rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


async def timed(action: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return times


# -- thread length ---------------------------------------------------------------------------


async def thread_axis(tmp: Path, sizes: list[int], repeat: int, extra_events: int) -> None:
    workspace = tmp / "thread_ws"
    workspace.mkdir()
    store = await Store.open(tmp / "thread_state")
    rows: list[Row] = []
    base: tuple[float, float] | None = None
    try:
        await store.upsert_agent(AgentSpec(slug="growth", model="instant", tools=[]))
        async with manager_for(store, workspace) as manager:
            first = await manager.start("growth", prompt="go")
            await manager.wait(first.run_id)
            thread_id = first.thread_id
            assert thread_id is not None
            runs = 1

            async def one_run() -> None:
                run = await manager.start("growth", prompt="go", thread_id=thread_id)
                await manager.wait(run.run_id)

            async def read_thread() -> None:
                await store.get_thread(thread_id)
                await store.thread_messages(thread_id)

            checkpoints = [(f"{n:,} runs", n, 0) for n in sizes]
            if extra_events:
                checkpoints.append(
                    (f"{sizes[-1]:,} runs + {extra_events:,} events", sizes[-1], extra_events)
                )
            for label, target, events in checkpoints:
                if runs < target:
                    # the history `target - runs` more 1-turn runs leave on the thread (running
                    # them all would take a while: every run reads the whole history)
                    await store.append_thread_messages(
                        thread_id,
                        [
                            message
                            for _ in range(target - runs)
                            for message in (Message.user("go"), Message.assistant("done"))
                        ],
                    )
                    runs = target
                if events:
                    await fill_events(store, events)
                rows_before = stored_message_rows(store)
                start_times = await timed(one_run, repeat)
                written = (stored_message_rows(store) - rows_before) / repeat
                runs += repeat
                read_times = await timed(read_thread, repeat)
                start, read = statistics.median(start_times), statistics.median(read_times)
                base = base or (start, read)
                rows.append(
                    (
                        label,
                        ms(start),
                        ms(pct(start_times, 99)),
                        growth(start, base[0]),
                        ms(read),
                        ms(pct(read_times, 99)),
                        growth(read, base[1]),
                        f"{written:,.0f}",
                        f"{target / sizes[0]:.0f}×",
                    )
                )
    finally:
        await store.close()
    print_table(
        "Thread length (one thread, 1-turn runs; start → complete, the thread read, and the "
        "message rows each run stores)",
        (
            "thread",
            "run ms",
            "run p99 ms",
            "run ×",
            "read ms",
            "read p99 ms",
            "read ×",
            "rows/run",
            "size ×",
        ),
        rows,
    )


def stored_message_rows(store: Store) -> int:
    """Message rows in the store's database, counted beside it (a second connection)."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


async def fill_events(store: Store, count: int) -> None:
    """`count` events of other runs, written in batches as an EventLog would store them."""
    batch = 10_000
    stamp = "2026-01-01T00:00:00.000Z"
    for start in range(0, count, batch):
        run_id = f"run_filler_{start // batch}"
        await store.append_events(
            Event(
                id=i + 1,
                run_id=run_id,
                type="tool_output",
                ts=stamp,
                payload={"callId": "c1", "chunk": "x" * 80},
            )
            for i in range(min(batch, count - start))
        )


# -- workspace size --------------------------------------------------------------------------


def make_workspace(root: Path, files: int) -> None:
    per_dir = 100
    for d in range(math.ceil(files / per_dir)):
        directory = root / f"pkg{d // 100:03d}" / f"mod{d % 100:02d}"
        directory.mkdir(parents=True)
        for f in range(min(per_dir, files - d * per_dir)):
            word = "needle" if (d * per_dir + f) % 10 == 0 else "hay"
            (directory / f"file_{f:03d}.py").write_text(
                f"import os\n\ndef f_{f}():\n    return '{word}'\n"
            )


async def workspace_axis(tmp: Path, sizes: list[int], repeat: int) -> None:
    rows: list[Row] = []
    base: list[float] = []
    rg = shutil.which("rg") is not None
    for size in sizes:
        root = tmp / f"ws_{size}"
        make_workspace(root, size)
        figures: list[float] = []
        calls: list[tuple[str, dict[str, Any], bool]] = [
            ("list_dir", {"path": ".", "depth": 2}, True),
            ("grep", {"pattern": "needle", "max_results": 5000}, True),
            ("grep", {"pattern": "needle", "max_results": 5000}, False),
            ("glob", {"pattern": "**/*.py"}, True),
        ]
        for name, args, use_rg in calls:
            if name == "grep" and use_rg and not rg:
                figures.append(float("nan"))
                continue
            settings = ToolSettings(use_ripgrep=use_rg)
            async with Toolbox(root, enabled=[name], settings=settings) as box:
                engine = "ripgrep" if use_rg else "python"

                async def call(
                    box: Toolbox = box, name: str = name, args: Any = args, engine: str = engine
                ) -> None:
                    result = await box.call(name, args)
                    if result.is_error:
                        raise SystemExit(f"{name} failed: {result.output}")
                    if name == "grep" and result.data["engine"] != engine:
                        raise SystemExit(f"grep used {result.data['engine']}, not {engine}")

                figures.append(statistics.median(await timed(call, repeat)))
        figures.append(statistics.median(await files_api_times(tmp, root, repeat)))
        # floors: ripgrep alone over the whole tree (the tool stops it after max_results),
        # and a bare os.walk visiting every entry
        rg_path = shutil.which("rg")
        if rg_path is None:
            figures.append(float("nan"))
        else:
            command = [rg_path, "--json", "--no-config", "--hidden", "--no-ignore", "--no-mmap"]
            command += ["--sort", "path", "--regexp", "needle", "--", "."]
            rg_alone = functools.partial(anyio.run_process, command, cwd=root, check=False)
            figures.append(statistics.median(await timed(rg_alone, repeat)))
        walk = functools.partial(anyio.to_thread.run_sync, walk_everything, root)
        figures.append(statistics.median(await timed(walk, repeat)))
        base = base or figures
        cells = [
            f"{ms(v)} ({growth(v, b)})" if not math.isnan(v) else "n/a (no rg)"
            for v, b in zip(figures, base, strict=True)
        ]
        rows.append((f"{size:,} files", *cells, f"{size / sizes[0]:.0f}×"))
    print_table(
        "Workspace size (ms, growth beside; grep finds a word in one file in ten)",
        (
            "workspace",
            "list_dir",
            "grep (rg)",
            "grep (Python)",
            "glob **/*.py",
            "files API (1 dir)",
            "floor: rg alone",
            "floor: os.walk",
            "size ×",
        ),
        rows,
    )


def walk_everything(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


async def files_api_times(tmp: Path, workspace: Path, repeat: int) -> list[float]:
    """GET /v1/runs/{id}/files?path=<a directory of 100 files> over HTTP, in this process."""
    state = tmp / f"api_state_{workspace.name}"
    settings = Settings(workspace=workspace, state_dir=state)
    store = await Store.open(state)
    await store.upsert_agent(AgentSpec(slug="growth", model="instant", tools=[]))
    manager = manager_for(store, workspace)
    await manager.start_background()
    runner = web.AppRunner(create_app(settings, manager), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        port = runner.addresses[0][1]
        run = await manager.start("growth", prompt="go")
        await manager.wait(run.run_id)
        url = f"http://127.0.0.1:{port}/v1/runs/{run.run_id}/files?path=pkg000/mod00"
        async with aiohttp.ClientSession() as session:

            async def get() -> None:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        raise SystemExit(f"files API: {resp.status} {await resp.text()}")
                    await resp.read()

            await get()
            return await timed(get, repeat)
    finally:
        await manager.shutdown(grace=0)
        await runner.cleanup()
        await store.close()


# -- concurrent runs -------------------------------------------------------------------------


async def concurrency_axis(tmp: Path, sizes: list[int], turns: int) -> None:
    workspace = tmp / "conc_ws"
    workspace.mkdir()
    (workspace / "a.txt").write_text("a\n")
    store = await Store.open(tmp / "conc_state")
    rows: list[Row] = []
    base = 0.0
    try:
        await store.upsert_agent(
            AgentSpec(slug="busy", model="instant", tools=["list_dir"], max_iterations=turns + 2)
        )
        async with manager_for(
            store, workspace, tool_turns=turns, max_concurrent=max(sizes), max_queue=max(sizes)
        ) as manager:
            for size in sizes:
                delays: list[float] = []

                async def follow(run_id: str, delays: list[float] = delays) -> None:
                    async for event in manager.subscribe(run_id):
                        at = datetime.fromisoformat(event.ts.replace("Z", "+00:00"))
                        delays.append(time.time() - at.timestamp())
                        if event.type == "complete":
                            return

                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(size):
                        run = await manager.start("busy", prompt="go")
                        tg.start_soon(follow, run.run_id)
                elapsed = time.perf_counter() - started
                p50 = statistics.median(delays)
                base = base or p50
                rows.append(
                    (
                        f"{size} runs",
                        f"{len(delays):,}",
                        ms(p50),
                        ms(pct(delays, 99)),
                        f"{len(delays) / elapsed:,.0f}",
                        f"{rss_mb():.0f}",
                        f"{size / sizes[0]:.0f}×",
                    )
                )
    finally:
        await store.close()
    print_table(
        f"Concurrent runs ({turns} list_dir turns each; event ts → subscriber; ts has ms "
        "resolution)",
        ("runs at once", "events", "p50 ms", "p99 ms", "events/s", "RSS MB", "runs ×"),
        rows,
    )


# -- command output --------------------------------------------------------------------------


def output_child(size: int) -> None:
    """In a fresh process: exec_command printing `size` bytes; prints a JSON line."""

    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            async with Toolbox(Path(tmp), enabled=["exec_command", "write_stdin"]) as box:
                cmd = f"head -c {size} /dev/zero | tr '\\0' 'x' | fold -w 99"
                started = time.perf_counter()
                result = await box.call(
                    "exec_command",
                    {"cmd": cmd, "tty": False, "login": False, "yield_time_ms": 30_000},
                )
                returned = len(result.output)
                while not result.is_error and result.data.get("session_id") is not None:
                    # still running after 30 s: poll the session until it exits
                    session = result.data["session_id"]
                    result = await box.call(
                        "write_stdin", {"session_id": session, "chars": "", "yield_time_ms": 30_000}
                    )
                    returned += len(result.output)
                elapsed = time.perf_counter() - started
                if result.is_error or result.data.get("exit_code") != 0:
                    raise SystemExit(result.output)
                # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
                # of a large benchmark process would report its parent's peak
                peak = peak_rss_mb()
                # the floor: the same command with its output read by the kernel's /dev/null
                started = time.perf_counter()
                subprocess.run(["sh", "-c", cmd], stdout=subprocess.DEVNULL, check=True)
                alone = time.perf_counter() - started
                return {"seconds": elapsed, "peak_mb": peak, "returned": returned, "alone": alone}

    print(json.dumps(anyio.run(run)))


def output_axis(sizes: list[int]) -> None:
    rows: list[Row] = []
    base = 0.0
    for size in sizes:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.growth_bench", "--output-child", str(size)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        figures = json.loads(completed.stdout.strip().splitlines()[-1])
        base = base or figures["seconds"]
        rows.append(
            (
                f"{size / 1e6:,.0f} MB",
                f"{figures['seconds'] * 1000:,.0f}",
                f"{figures['alone'] * 1000:,.0f}",
                f"{figures['seconds'] / figures['alone']:.2f}",
                f"{size / 1e6 / figures['seconds']:,.0f}",
                f"{figures['peak_mb']:.0f}",
                f"{figures['returned']:,}",
                growth(figures["seconds"], base),
                f"{size / sizes[0]:.0f}×",
            )
        )
    print_table(
        "Command output (exec_command, no TTY; the model gets a head + tail within its token "
        "budget)",
        (
            "output",
            "wall ms",
            "command alone ms",
            "÷ alone",
            "MB/s",
            "peak RSS MB",
            "chars returned",
            "time ×",
            "size ×",
        ),
        rows,
    )


class Sizes(NamedTuple):
    """Each axis's sizes, and the events stored for other runs after the longest thread."""

    threads: list[int]
    extra_events: int
    files: list[int]
    runs: list[int]
    output: list[int]


# All of them, the smaller ones (--quick), and two tiny ones per axis that only check the
# benchmark runs (--smoke, tests/test_benchmarks.py).
SIZES = {
    "full": Sizes(
        [10, 100, 1000], 100_000, [1000, 10_000, 100_000], [1, 10, 50], [10**6, 10**8, 10**9]
    ),
    "quick": Sizes([10, 100], 0, [1000, 10_000], [1, 10], [10**6, 10**8]),
    "smoke": Sizes([2, 4], 0, [20, 40], [1, 2], [10**4, 10**5]),
}


async def main(args: argparse.Namespace) -> None:
    sizes = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        await thread_axis(tmp, sizes.threads, args.repeat, sizes.extra_events)
        await workspace_axis(tmp, sizes.files, 3)
        await concurrency_axis(tmp, sizes.runs, 20)
    output_axis(sizes.output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller sizes only")
    parser.add_argument(
        "--smoke", action="store_true", help="two tiny sizes per axis: only checks it runs"
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output-child", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.output_child:
        output_child(arguments.output_child)
    else:
        anyio.run(main, arguments)
