"""How long `agentd serve` takes to answer, beside swerex-remote, and what the time goes to.

    python -m benchmarks.startup_bench [--starts N] [--top N] [--instructions] [--against REV]

(from the repository root; swerex-remote's row needs `pip install swe-rex`). Rows:

- each daemon from process spawn to its first 200 (`GET /readyz` for agentd, `GET /is_alive`
  for swerex-remote), started the way `benchmarks/api_bench.py` starts them (bytecode cached,
  polled every 2 ms): median wall time with its quartiles, and the CPU time the daemon's main
  thread had used by then (/proc/PID/schedstat, Linux only: steadier than wall time on a
  shared machine);
- agentd from spawn to the answer of a `GET /v1/agents` sent the moment /readyz answered:
  /readyz answers once the store is open, crash recovery is done and runs are accepted, but
  the /v1 handlers and the run machinery load after the daemon listens (a request that comes
  before they have waits for them), so this row is when the API itself first answers;
- agentd from spawn to its first run's first model request, with an Anthropic and with an
  OpenAI default model (`FIRST_RUN_MODELS`, the agent's model too): an agent is created and a
  run posted the moment /readyz answered, against the fake model server of
  tests/fakes/model_server.py. The warm-up imports the model SDKs after the daemon listens
  (the default model's first), so this row is when a fresh daemon's first prompt reaches the
  model;
- the same first run in a daemon at rest (its warm-up over: no CPU time used for half a
  second), timed from the agent's creation: a sandbox's first prompt that comes seconds
  after it started. Its CPU column is the event loop's thread's time over that run alone,
  where a model request's one-time work would show (an SDK's lazy imports, its validators;
  the warm-up rehearses a first request of every API to keep them off the loop:
  runtime/providers/rehearsal.py);
- reference floors: an interpreter that has started, and one that has also made the imports
  agentd cannot start without (asyncio, aiohttp.web, pydantic with one model, anyio, sqlite3),
  timed from spawn to that point (process CPU time; the collector paused, as agentd's is);
  then the same imports with OpenSSL's trust store variables naming nothing, as agentd serve
  makes its first import of aiohttp (tools/tls.py): aiohttp's import reads the whole trust
  store twice otherwise (~50 ms here), which agentd avoids, so it is no floor of agentd's.
  The first imports floor is kept beside it, to show what that saves;
- a third floor, the least daemon built on the same libraries (`MINIMAL_DAEMON`): it opens a
  SQLite database through `anyio.to_thread`, listens with aiohttp and answers `GET /readyz`
  with a pydantic model, started and timed exactly as agentd is (aiohttp imported with the
  trust store unread, as agentd's). Beyond the imports it pays
  what any daemon on this stack pays before its first answer: the event loop, anyio's asyncio
  backend (anyio ≥ 4.16 imports its parts lazily, so `import anyio` alone loads almost
  nothing), binding the socket, aiohttp's first request. agentd's own cost is the gap to it.
  All of these run in turn, round after round, `--starts` rounds after an untimed one;
  agentd's /readyz start and the floors run one right after the other in each round, and the
  "agentd over" rows are the median of each round's difference, with its quartiles (the
  load of a shared machine moves a start by tens of ms within a minute; both starts of a
  round see the same load);
- then one start of agentd under `python -X importtime`: the modules imported before it
  listened, self time summed by top-level package, and the `--top` slowest modules;
- with `--instructions` (needs valgrind): the instructions agentd serve executes until it
  listens, beside the floors' (the minimal daemon's until it listens too), counted by
  valgrind's cachegrind; every one ends with `os._exit`, so that none counts the
  interpreter's shutdown. Unlike CPU time, the count does not move with the machine's load
  (two runs agree within 0.1 %), so it shows a change of a few ms on a shared machine; it
  leaves out the /readyz request itself;
- with `--against REV`: agentd as of git revision REV too (a worktree of it, run on this
  virtualenv, so REV must want the same dependencies), started in the same rounds (to
  /readyz and to each first run's model request) and counted the same way, each tree as its
  own `agentd` command: a change's effect on this shared machine shows only side by side,
  under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp

from benchmarks.api_bench import (
    ROOT,
    Server,
    agentd_argv,
    agentd_module,
    free_port,
    python_env,
    start,
    start_agentd,
    start_swerex,
    swerex_command,
)
from tests.fakes.model_server import FakeModelServer, Turn, text

UNAVOIDABLE = (
    "import asyncio, sqlite3, anyio, aiohttp.web\n"
    "from pydantic import BaseModel\n"
    "class Model(BaseModel):\n"
    "    field: int\n"
)
# Importing aiohttp builds two TLS contexts that read the whole trust store (~50 ms here);
# agentd serve imports it with OpenSSL's trust store variables naming nothing (tools/tls.py),
# and so do this floor and the minimal daemon: what agentd avoids is no floor.
TRUST_STORE_UNREAD = (
    "import os\nos.environ['SSL_CERT_FILE'] = os.environ['SSL_CERT_DIR'] = '/nonexistent'\n"
)
IMPORTS = "agentd's unavoidable imports"
IMPORTS_UNREAD = "the same imports, trust store unread"
# Wall time since the parent's spawn (CLOCK_MONOTONIC is system-wide) and CPU time so far,
# printed when the code above has run; with the collector paused, as agentd serve starts.
REPORT = (
    "import gc, os, time\n"
    "gc.disable()\n"
    "{code}"
    "print((time.monotonic() - float(os.environ['SPAWNED'])) * 1000, time.process_time() * 1000)\n"
)
# The least daemon on agentd's libraries: python -c MINIMAL_DAEMON PORT STATE_DIR. With
# EXIT_WHEN_LISTENING set it exits the moment it listens (for counting instructions).
MINIMAL_DAEMON = """\
import asyncio, gc, os, sqlite3, sys
gc.disable()
os.environ['SSL_CERT_FILE'] = os.environ['SSL_CERT_DIR'] = '/nonexistent'
import anyio
from aiohttp import web
from pydantic import BaseModel

class Ready(BaseModel):
    status: str

async def readyz(request):
    return web.json_response(Ready(status="ready").model_dump())

async def main(port, state_dir):
    await anyio.to_thread.run_sync(sqlite3.connect, os.path.join(state_dir, "state.sqlite3"))
    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    if os.environ.get("EXIT_WHEN_LISTENING"):
        os._exit(0)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""
EXIT = "import os\nos._exit(0)\n"
MINIMAL = "minimal daemon on the same libraries → /readyz"
IMPORTED = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)$")
# `agentd serve` as the `agentd` command runs it (runtime/__main__.py: the collector paused,
# then runtime.cli), ended by os._exit the moment it listens: cli calls
# resume_gc_after_start then, looked up when it is called. What start-up executed, without
# shutdown or the warm-up thread; the daemon's modules are imported where the command imports
# them, not here.
UNTIL_LISTENING = (
    "import gc, os, sys\n"
    "gc.disable()\n"
    "from runtime import cli\n"
    "cli.resume_gc_after_start = lambda url: os._exit(0)\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def until_listening(root: Path) -> str:
    """UNTIL_LISTENING for the tree at `root`: a tree from before runtime/__main__.py loaded
    the command line with the collector on."""
    if agentd_module(root) == "runtime":
        return UNTIL_LISTENING
    return UNTIL_LISTENING.replace("gc.disable()\n", "")


READYZ = "agentd serve → /readyz"
FIRST_V1 = "agentd serve → first GET /v1/agents"
# the default (and the agent's) model of each "first run" row: one per SDK
FIRST_RUN_MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-5"}
FIRST_RUN = {sdk: f"agentd serve → first run's model request, {sdk}" for sdk in FIRST_RUN_MODELS}
AT_REST = {
    sdk: f"agentd serve, at rest → first run's model request, {sdk}" for sdk in FIRST_RUN_MODELS
}
VALGRIND_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


async def first_v1_ms(session: aiohttp.ClientSession, server: Server) -> float:
    """How long the first /v1 request takes, sent the moment /readyz answered 200: the /v1
    API and the run machinery load after the daemon listens, and a request that comes
    before they have waits for them."""
    began = time.perf_counter()
    async with session.get(server.url + "/v1/agents", headers=server.headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET /v1/agents answered {resp.status}")
    return (time.perf_counter() - began) * 1000


async def first_run_ms(
    session: aiohttp.ClientSession, server: Server, model_server: FakeModelServer, model: str
) -> float:
    """How long a first run takes to reach the model, its agent created and the run posted
    the moment /readyz answered: the run waits for the /v1 API, the run machinery, the tools
    and its model's SDK, all loaded after the daemon listens."""
    began = time.perf_counter()
    agent = {"slug": "first", "model": model, "tools": []}
    async with session.post(server.url + "/v1/agents", json=agent, headers=server.headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /v1/agents answered {resp.status}: {await resp.text()}")
    requests = len(model_server.requests)
    run = {"agent": "first", "prompt": "go"}
    async with session.post(server.url + "/v1/run", json=run, headers=server.headers) as resp:
        await model_server.wait_for_requests(requests + 1, timeout=120)
        reached = time.perf_counter()
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST /v1/run answered {resp.status}")
    return (reached - began) * 1000


def main_thread_cpu_ms(server: Server) -> float | None:
    try:
        with open(f"/proc/{server.process.pid}/schedstat") as stats:
            return int(stats.read().split()[0]) / 1e6
    except OSError:
        return None


def floor_run(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of a fresh interpreter once it has run `code`."""
    env = {**env, "SPAWNED": repr(time.monotonic())}
    out = subprocess.run(
        [sys.executable, "-c", REPORT.format(code=code)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def summary(walls: list[float], cpus: list[float | None]) -> tuple[str, str]:
    q1, median, q3 = statistics.quantiles(walls, n=4) if len(walls) > 1 else walls * 3
    wall = f"{median:.0f} ms ({q1:.0f}–{q3:.0f})"
    known = [c for c in cpus if c is not None]
    return wall, f"{statistics.median(known):.0f} ms" if known else "n/a"


async def start_up_rows(
    tmp: Path, starts: int, against: tuple[str, Path] | None
) -> list[tuple[str, str, str]]:
    """Every subject once per round, in turn, so they share the machine's load alike;
    `against`: (revision, its tree), started as well."""
    peer = swerex_command()
    env = python_env(tmp)
    subjects = [READYZ, FIRST_V1, *FIRST_RUN.values(), *AT_REST.values()]
    # row: (the model of its first run, the tree started, whether the daemon is at rest first)
    first_runs = {row: (FIRST_RUN_MODELS[sdk], ROOT, False) for sdk, row in FIRST_RUN.items()}
    first_runs |= {row: (FIRST_RUN_MODELS[sdk], ROOT, True) for sdk, row in AT_REST.items()}
    earlier = f"agentd at {against[0]} → /readyz" if against else ""
    if against:
        subjects.append(earlier)
        for sdk, model in FIRST_RUN_MODELS.items():
            for rested, row in (
                (False, f"agentd at {against[0]} → first run's model request, {sdk}"),
                (True, f"agentd at {against[0]}, at rest → first run's model request, {sdk}"),
            ):
                first_runs[row] = (model, against[1], rested)
                subjects.append(row)
    if peer:
        subjects.append("swerex-remote → /is_alive")
    subjects.append(MINIMAL)
    floors = {
        "python, no imports": "",
        IMPORTS: UNAVOIDABLE,
        IMPORTS_UNREAD: TRUST_STORE_UNREAD + UNAVOIDABLE,
    }
    subjects.extend(floors)
    walls: dict[str, list[float]] = {name: [] for name in subjects}
    cpus: dict[str, list[float | None]] = {name: [] for name in subjects}
    # agentd's /readyz start and what it is compared with run one right after the other in
    # every round (the first-run rows take seconds each): each round's difference is then
    # taken under the same load, which drifts over a run of this benchmark
    compared = [READYZ, *([earlier] if against else []), MINIMAL, *floors]
    run_order = [*compared, *(name for name in subjects if name not in compared)]
    async with (
        aiohttp.ClientSession() as session,
        FakeModelServer(default_turn=Turn([text("done")])) as model_server,
    ):
        for attempt in range(starts + 1):  # the first round fills the bytecode caches
            for name in run_order:
                wall: float
                cpu: float | None
                if name == FIRST_V1:
                    continue  # timed with the /readyz row's start
                if name in floors:
                    wall, cpu = floor_run(floors[name], env)
                elif name in first_runs:
                    model, root, rested = first_runs[name]
                    model_env = {**model_server.env(), "AGENTD_DEFAULT_MODEL": model}
                    server = await start_agentd(session, tmp, env=model_env, root=root)
                    try:
                        if rested:
                            await at_rest(server)
                            before = main_thread_cpu_ms(server)
                            wall = await first_run_ms(session, server, model_server, model)
                            after = main_thread_cpu_ms(server)
                            cpu = None if before is None or after is None else after - before
                        else:
                            ran = await first_run_ms(session, server, model_server, model)
                            wall = server.startup_s * 1000 + ran
                            cpu = main_thread_cpu_ms(server)
                    finally:
                        server.stop()
                else:
                    if name == earlier and against:
                        server = await start_agentd(session, tmp, root=against[1])
                    elif name.startswith("agentd"):
                        server = await start_agentd(session, tmp)
                    elif name == MINIMAL:
                        server = await start_minimal_daemon(session, tmp, env)
                    else:
                        assert peer is not None
                        server = await start_swerex(session, peer, tmp)
                    wall, cpu = server.startup_s * 1000, main_thread_cpu_ms(server)
                    if name == READYZ:
                        first = server.startup_s * 1000 + await first_v1_ms(session, server)
                        if attempt:
                            walls[FIRST_V1].append(first)
                            cpus[FIRST_V1].append(main_thread_cpu_ms(server))
                    server.stop()
                if attempt:
                    walls[name].append(wall)
                    cpus[name].append(cpu)
    rows = [(name, *summary(walls[name], cpus[name])) for name in subjects]
    over = {
        MINIMAL: "the minimal daemon",
        IMPORTS: "its unavoidable imports",
        IMPORTS_UNREAD: "them, trust store unread",
    }
    if against:
        over[earlier] = earlier.split(" →")[0]
    for floor, label in over.items():
        rows.append(
            (
                f"  agentd over {label}",
                paired_difference(walls[READYZ], walls[floor]),
                paired_difference(cpus[READYZ], cpus[floor]),
            )
        )
    if against:
        for sdk in FIRST_RUN_MODELS:
            for row, rest, label in (
                (FIRST_RUN[sdk], "", "first run"),
                (AT_REST[sdk], ", at rest", "first run at rest"),
            ):
                then = f"agentd at {against[0]}{rest} → first run's model request, {sdk}"
                wall = statistics.median(walls[row]) - statistics.median(walls[then])
                cpu = median_known(cpus[row]) - median_known(cpus[then])
                rows.append(
                    (
                        f"  {label}, {sdk}, over agentd at {against[0]}",
                        f"{wall:+.0f} ms",
                        f"{cpu:+.0f} ms",
                    )
                )
    return rows


async def at_rest(server: Server, bound: float = 60.0) -> None:
    """Until the daemon has used no CPU time (all its threads, /proc/PID/stat) for half a
    second: its warm-up is over. Linux only; elsewhere, at once."""
    ticks: list[int] = []
    deadline = time.perf_counter() + bound
    while time.perf_counter() < deadline:
        try:
            with open(f"/proc/{server.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return
        ticks.append(int(fields[11]) + int(fields[12]))  # utime + stime
        if len(ticks) > 5 and ticks[-1] == ticks[-6]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{server.name} did not come to rest in {bound:.0f} s")


def paired_difference(values: Sequence[float | None], references: Sequence[float | None]) -> str:
    """The median of each round's difference `value − reference` (rounds where either is
    unknown left out), with the quartiles of those differences: the machine's load moves
    both of a round alike, so this is steadier than the difference of the two medians."""
    differences = [
        value - reference
        for value, reference in zip(values, references, strict=True)
        if value is not None and reference is not None
    ]
    if not differences:
        return "n/a"
    if len(differences) == 1:
        return f"{differences[0]:+.0f} ms"
    q1, median, q3 = statistics.quantiles(differences, n=4)
    return f"{median:+.0f} ms ({q1:+.0f} to {q3:+.0f})"


def median_known(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else math.nan


async def start_minimal_daemon(
    session: aiohttp.ClientSession, tmp: Path, env: dict[str, str]
) -> Server:
    port = free_port()
    state = tempfile.mkdtemp(dir=tmp, prefix="minimal")
    argv = [sys.executable, "-c", MINIMAL_DAEMON, str(port), state]
    return await start(session, "minimal daemon", argv, "/readyz", {}, port, env)


async def import_profile(tmp: Path) -> list[tuple[int, int, str]]:
    """(self µs, depth, module) of every import before agentd listened, in import order."""
    state = Path(tempfile.mkdtemp(dir=tmp, prefix="state"))
    workspace = tmp / "workspace"
    workspace.mkdir(exist_ok=True)
    argv = agentd_argv(free_port(), state, workspace)
    argv = [argv[0], "-X", "importtime", *argv[1:]]
    argv[argv.index("--log-level") + 1] = "info"  # the "listening on" line ends the profile
    env = {**python_env(tmp), "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    imports: list[tuple[int, int, str]] = []
    try:
        async with asyncio.timeout(30):
            while line := (await process.stderr.readline()).decode(errors="replace"):
                if match := IMPORTED.match(line.rstrip("\n")):
                    depth = (len(match.group(2)) - 1) // 2
                    imports.append((int(match.group(1)), depth, match.group(3)))
                elif "listening on" in line:
                    break
    finally:
        process.terminate()
        await process.wait()
    return imports


def instructions(code: str, args: list[str], env: dict[str, str], cwd: Path) -> int:
    """Instructions a fresh interpreter executes running `code` (valgrind's cachegrind)."""
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    out = subprocess.run(
        [*argv, sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    match = VALGRIND_REFS.search(out.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def instruction_rows(
    tmp: Path, against: tuple[str, Path] | None
) -> list[tuple[str, str, str, str]]:
    """agentd serve until it listens (and the tree `against`, if given), and the two floors:
    instructions, and over each floor."""
    env = {**python_env(tmp), "PYTHONPATH": str(ROOT)}
    workspace = tmp / "workspace"
    workspace.mkdir(exist_ok=True)
    state = Path(tempfile.mkdtemp(dir=tmp, prefix="state"))
    serve_args = agentd_argv(free_port(), state, workspace)[3:]  # after `python -m runtime`
    agentd = instructions(until_listening(ROOT), serve_args, env, workspace)
    earlier = None
    if against:
        earlier_env = {**env, "PYTHONPATH": str(against[1])}
        earlier_state = Path(tempfile.mkdtemp(dir=tmp, prefix="state"))
        earlier_args = agentd_argv(free_port(), earlier_state, workspace)[3:]
        code = until_listening(against[1])
        earlier = instructions(code, earlier_args, earlier_env, workspace)
    minimal_env = {**env, "EXIT_WHEN_LISTENING": "1"}
    minimal_args = ["0", tempfile.mkdtemp(dir=tmp, prefix="minimal")]
    minimal = instructions(MINIMAL_DAEMON, minimal_args, minimal_env, workspace)
    # Every count ends with os._exit, as agentd's and the minimal daemon's do: a normal exit
    # would add the interpreter's shutdown (~80 M for the imports floor) to the floor alone.
    floor = instructions(f"import gc\ngc.disable()\n{UNAVOIDABLE}{EXIT}", [], env, workspace)
    unread_code = f"import gc\ngc.disable()\n{TRUST_STORE_UNREAD}{UNAVOIDABLE}{EXIT}"
    floor_unread = instructions(unread_code, [], env, workspace)
    bare = instructions(EXIT, [], env, workspace)

    def over(count: int, base: int) -> str:
        return f"{(count - base) / 1e6:+.0f} M ({count / base:.2f}×)"

    rows = [
        (
            "agentd serve → listening",
            f"{agentd / 1e6:.0f} M",
            over(agentd, floor),
            over(agentd, minimal),
        ),
        ("minimal daemon → listening", f"{minimal / 1e6:.0f} M", over(minimal, floor), "(floor)"),
        ("python, no imports", f"{bare / 1e6:.0f} M", "", ""),
        (IMPORTS, f"{floor / 1e6:.0f} M", "(floor)", ""),
        (IMPORTS_UNREAD, f"{floor_unread / 1e6:.0f} M", over(floor_unread, floor), ""),
        ("  agentd over it", over(agentd, floor_unread), "", ""),
    ]
    if against and earlier is not None:
        count = f"{earlier / 1e6:.0f} M"
        row = (f"agentd at {against[0]} → listening", count, over(earlier, floor))
        rows.insert(1, (*row, over(earlier, minimal)))
        rows.insert(2, ("  agentd over it", over(agentd, earlier), "", ""))
    return rows


@contextlib.contextmanager
def earlier_tree(revision: str | None, tmp: Path) -> Iterator[tuple[str, Path] | None]:
    """(revision, a worktree of it) while the block runs; None without a revision."""
    if revision is None:
        yield None
        return
    tree = tmp / "against"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(tree), revision], check=True, capture_output=True)
    try:
        yield revision, tree
    finally:
        subprocess.run([*git, "remove", "--force", str(tree)], check=False, capture_output=True)


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with earlier_tree(args.against, tmp) as against:
            rows = await start_up_rows(tmp, args.starts, against)
            imports = await import_profile(tmp)
            counted = instruction_rows(tmp, against) if args.instructions else []
    print_table((f"start-up, median of {args.starts} (quartiles)", "wall", "CPU"), rows)
    if counted:
        print()
        header = ("instructions (valgrind)", "count", "over the imports", "over the minimal daemon")
        print_table(header, counted)

    by_package: Counter[str] = Counter()
    for micros, _, module in imports:
        by_package[module.split(".")[0]] += micros
    total = sum(by_package.values())
    print(f"\nimports before agentd listened: {len(imports)} modules, {total / 1000:.0f} ms")
    print("(self times under -X importtime, which inflates them; one run)\n")
    package_rows = [
        (package, f"{micros / 1000:.1f} ms", f"{100 * micros / total:.0f}%")
        for package, micros in by_package.most_common(args.top)
    ]
    print_table(("top-level package", "self time", "share"), package_rows)
    print()
    slowest = sorted(imports, reverse=True)[: args.top]
    print_table(
        ("module", "self time"),
        [(module, f"{micros / 1000:.1f} ms") for micros, _, module in slowest],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=15, help="timed starts per daemon")
    parser.add_argument("--top", type=int, default=12, help="rows of the import profile")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count start-up's instructions under valgrind (steady on a loaded machine)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also start agentd as of git revision REV (a worktree of it, on this virtualenv) "
        "in the same rounds: a change's effect, side by side under the same load",
    )
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind on PATH")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
