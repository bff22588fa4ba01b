"""apply_patch against `git apply` (and GNU `patch`) on the same patches, in the same run.

    python -m benchmarks.patch_bench [--runs N] [--dir DIR] [--pause S]   (from the repository root)

`--dir`: where the files are copied and patched (default: the system's temporary directory).
The filesystem decides what creating a file costs (see below); the table's first line names
the one measured. To compare, a journalled ext4 can be made on a loop device
(`truncate -s 4G img && mkfs.ext4 -q img && mount -o loop img /mnt/j`) and tmpfs is usually
at /dev/shm.

Scenarios:

- `50k lines, 500 hunks`: one 50,000-line file and a unified diff with 500 hunks spread
  through it (each replaces one line and inserts another).
- `200 files`: a unified diff touching 200 files of 200 lines each (two hunks per file).
- the same two as patch envelopes (`*** Begin Patch`), which only apply_patch reads.

apply_patch is timed through `Toolbox.call` (argument validation, parsing, locating and
checking every hunk, atomic writes, `file_edit` diffs and events), on an event loop that
runs in its own thread for the whole benchmark, as the daemon's does; the parse, plan and
commit steps alone are shown beneath it. Peers are timed as
the whole command (process start included), each on a fresh copy of the files; the copy is
not timed. The floors are the part no crash-safe tool can skip, done in this process with
the new contents known in advance:

- `floor: read + atomic write`: read each file, write a temporary file beside it, rename it
  over the file, file by file (one file creation each, the dominant cost on a loaded ext4).
- `floor, all temp files first`: the same system calls, every temporary file written before
  any is renamed (so that a failure while writing leaves every file as it was): apply_patch's
  order, and its system calls where `renameat2(RENAME_EXCHANGE)` is missing.
- `floor, temps first, exchange`: apply_patch's own system calls on Linux: every temporary
  file written before any swap, then each one's writeback started and the file swapped with
  its target by `renameat2(RENAME_EXCHANGE)`, then the old files unlinked. The gap between
  apply_patch and this row is apply_patch's own cost.
- `floor: least Python apply`: the least an apply written in Python does on the unified
  patch, new contents not known in advance: the patch split per file and each hunk's new
  lines spliced in at its stated line, with no check, no diff and no event, then the second
  floor's system calls. Beside `git apply` it shows what the interpreter alone costs: where
  this row is not below `git apply`, no Python apply is.

On ext4 without a journal the order costs kernel time: creating a file scans past the
inodes deleted in the last seconds, except those freed in the current second, and file by
file each creation can take the inode the previous rename just freed (as `git apply`'s
unlink-then-create does); the gap between the first two floors is that cost. apply_patch
keeps every old file until the end (a rollback renames it back, needing no free space), so
it cannot reuse them. Renaming over an existing file makes ext4 start writing the new file
out (`auto_da_alloc`); the exchange does not, so apply_patch starts it itself just before
(`sync_file_range`): neither is spent by `git apply`. Every tool runs
once untimed first (the first `Toolbox` imports the tools' modules, start-up's cost, which
made the first timed run the p99). Runs are interleaved (every tool once, then again) so
that each sees the same load on a shared machine; the table gives the median and p99 wall
time, the median CPU time and the ratios to `git apply` and to the first floor on the same
patch. The cost of creating files follows how many files the machine deleted in the last
seconds (this benchmark's own copies included), so compare rows of one run, not runs.

A second table applies the 200-file patch where an agent applies it: in a workspace where
patches were applied before. Each tool keeps one tree for the whole table and applies the
patch and its reverse in turn (apply_patch through one `Toolbox` kept open, as a run's is;
with and without its spare files, tools/spares.py), every tool once per round; each
application comes `--pause` seconds after the last (an agent's tool calls come seconds apart;
the pause lets the writeback a commit started finish, as it would between them). A first,
untimed round leaves each tree as the earlier commits of a session would. apply_patch keeps
spare files only where creating a file is slow (an ext4 without a journal,
`tools.spares.creating_files_is_slow`), so its first row is one of the next two, whichever
the filesystem gets: with spare files always (`spares always`), and with none.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from anyio.from_thread import BlockingPortal, start_blocking_portal

from tools.base import Toolbox, ToolSettings
from tools.diffs import diff_regions, keepends_lines
from tools.patch import commit_changes, parse_patch, plan_changes
from tools.textfile import rename_exchange, start_writeback
from tools.workspace import Workspace

Files = dict[str, str]


def big_file_case() -> tuple[Files, Files]:
    lines = [f"line {i:05d}: value = compute({i}, {i * 7 % 13})\n" for i in range(50_000)]
    new = list(lines)
    for k in range(500):
        i = k * 100 + 50
        new[i] = new[i].replace("value", "VALUE")
    for k in reversed(range(500)):
        new.insert(k * 100 + 51, f"    # note {k}\n")
    return {"big.txt": "".join(lines)}, {"big.txt": "".join(new)}


def many_files_case() -> tuple[Files, Files]:
    before: Files = {}
    after: Files = {}
    for f in range(200):
        lines = [f"file {f} line {i}: x = {i}\n" for i in range(200)]
        new = list(lines)
        new[20] = f"file {f} line 20: x = changed\n"
        new[150] = f"file {f} line 150: x = changed too\n"
        path = f"pkg{f % 10}/module_{f:03d}.py"
        before[path] = "".join(lines)
        after[path] = "".join(new)
    return before, after


def unified(before: Files, after: Files) -> str:
    """A git-style unified diff (3 lines of context) of every changed file."""
    out = []
    for path in sorted(before):
        a, b = keepends_lines(before[path]), keepends_lines(after[path])
        out.append(f"diff --git a/{path} b/{path}\n")
        out.append(diff_regions(a, b, _regions(a, b), path).text)
    return "".join(out)


def _regions(a: list[str], b: list[str]) -> list[tuple[int, int, int, int]]:
    """Changed blocks of these cases (a line replaced, perhaps followed by inserted lines),
    found in one pass: difflib over 50,000 lines would dominate the set-up."""
    regions = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            i += 1
            j += 1
            continue
        # a changed line, possibly followed by inserted lines in b
        start_i, start_j = i, j
        i += 1
        j += 1
        while j < len(b) and (i >= len(a) or b[j] != a[i]):
            j += 1
        regions.append((start_i, i, start_j, j))
    return regions


def envelope(before: Files, after: Files) -> str:
    """The same change as a patch envelope: hunks with 3 lines of context, no line numbers."""
    body = ["*** Begin Patch"]
    for path in sorted(before):
        a, b = before[path].splitlines(), after[path].splitlines()
        body.append(f"*** Update File: {path}")
        for i1, i2, j1, j2 in _regions([x + "\n" for x in a], [x + "\n" for x in b]):
            body.append("@@")
            body += [" " + line for line in a[max(i1 - 3, 0) : i1]]
            body += ["-" + line for line in a[i1:i2]]
            body += ["+" + line for line in b[j1:j2]]
            body += [" " + line for line in a[i2 : i2 + 3]]
    body.append("*** End Patch")
    return "\n".join(body) + "\n"


def write_tree(root: Path, files: Files) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def check_tree(root: Path, files: Files) -> None:
    for rel, text in files.items():
        if (root / rel).read_text() != text:
            raise SystemExit(f"wrong result for {rel} under {root}")


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_run(
    timing: Timing,
    before: Files,
    after: Files,
    action: Callable[[Path], None],
    where: str | None = None,
) -> None:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        root = Path(tmp)
        write_tree(root, before)
        cpu = _cpu_seconds()
        started = time.perf_counter()
        action(root)
        timing.wall.append(time.perf_counter() - started)
        timing.cpu.append(_cpu_seconds() - cpu)
        check_tree(root, after)


def via_toolbox(portal: BlockingPortal, patch: str, *, events: bool) -> Callable[[Path], None]:
    """The tool as a run calls it, on an event loop that is already running (`portal`'s, in
    its own thread, as the daemon's loop is): starting a loop per call (`anyio.run`) added
    ~4 ms to every run, which no tool call in the daemon pays."""

    def action(root: Path) -> None:
        async def call() -> None:
            sink: list[dict[str, object]] = []
            on_event = sink.append if events else None
            async with Toolbox(root, enabled=["apply_patch"], on_event=on_event) as box:
                result = await box.call("apply_patch", {"input": patch})
            if result.is_error:
                raise SystemExit(result.output)

        portal.call(call)

    return action


def steps(patch: str) -> Callable[[Path], None]:
    def action(root: Path) -> None:
        commit_changes(plan_changes(parse_patch(patch), Workspace(root)))

    return action


def read_and_write_floor(after: Files) -> Callable[[Path], None]:
    """What any crash-safe tool must do, with the new contents already known: read every
    file, write its new content to a temporary file beside it and rename that over it."""
    new = {rel: text.encode() for rel, text in after.items()}

    def action(root: Path) -> None:
        for rel, data in new.items():
            path = os.path.join(root, rel)
            os.replace(_read_then_write_temp(path, data), path)

    return action


def _read_then_write_temp(path: str, data: bytes) -> str:
    """Read `path` to its end, write `data` to a new temporary file beside it: its name."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)
    temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return temp


def _every_temp_first(root: Path, new: dict[str, bytes]) -> list[tuple[str, str]]:
    """Read every file and write every temporary file: (temporary file, file) pairs."""
    return [
        (_read_then_write_temp(os.path.join(root, rel), data), os.path.join(root, rel))
        for rel, data in new.items()
    ]


def all_temps_first_floor(after: Files) -> Callable[[Path], None]:
    """The floor's system calls in apply_patch's order: read every file and write every
    temporary file, then rename them all."""
    new = {rel: text.encode() for rel, text in after.items()}

    def action(root: Path) -> None:
        for temp, path in _every_temp_first(root, new):
            os.replace(temp, path)

    return action


def exchange_floor(after: Files) -> Callable[[Path], None] | None:
    """apply_patch's own system calls on Linux: read every file and write every temporary
    file, then start each one's writeback and exchange it with its file, then unlink the
    old files; None where the system cannot exchange."""
    exchange, writeback = rename_exchange, start_writeback
    if exchange is None:
        return None
    new = {rel: text.encode() for rel, text in after.items()}

    def action(root: Path) -> None:
        temps = _every_temp_first(root, new)
        for temp, path in temps:
            if writeback is not None:
                writeback(temp)
            exchange(temp, path)
        for temp, _ in temps:
            os.unlink(temp)

    return action


_HUNK_START = re.compile(r"^@@ -(\d+)")


def least_python_floor(diff: str) -> Callable[[Path], None]:
    """The least an apply written in Python does, with none of apply_patch's work: the
    patch split per file (`diff --git` sections of this benchmark's own diffs) and each
    hunk's new lines spliced in at the line its header states, with no check of any kind, no
    diff and no event; the files read and written as the second floor does (every temporary
    file first, then the renames). What the interpreter costs on this patch at the least."""
    sections = [section.split("\n") for section in diff.split("diff --git ")[1:]]

    def action(root: Path) -> None:
        new: dict[str, bytes] = {}
        for lines in sections:
            rel = lines[2].removeprefix("+++ b/")
            with open(os.path.join(root, rel), "rb") as file:
                old = file.read().decode().split("\n")
            out: list[str] = []
            at = 0  # the old lines before `at` are placed
            for line in lines[3:]:
                kind = line[:1]
                if kind == "@":
                    header = _HUNK_START.match(line)
                    assert header is not None
                    start = int(header.group(1)) - 1
                    out += old[at:start]
                    at = start
                elif kind == " ":
                    out.append(line[1:])
                    at += 1
                elif kind == "-":
                    at += 1
                elif kind == "+":
                    out.append(line[1:])
            out += old[at:]
            new[rel] = "\n".join(out).encode()
        for temp, path in _every_temp_first(root, new):
            os.replace(temp, path)

    return action


def steady_state(
    portal: BlockingPortal, runs: int, pause: float, where: str
) -> list[tuple[str, Timing]]:
    """The 200-file patch and its reverse, in turn, on one tree per tool (see the module's
    docstring): each tool's timing."""
    before, after = many_files_case()
    patches = (unified(before, after), unified(after, before))
    contents = (after, before)  # what each patch leaves
    git, gnu_patch = shutil.which("git"), shutil.which("patch")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=where)))
        tools: list[tuple[str, Callable[[Path, int], None]]] = []
        for tool, settings in (
            ("apply_patch via Toolbox.call", ToolSettings()),
            ("apply_patch, spares always", ToolSettings(spare_files=True)),
            ("apply_patch, no spare files", ToolSettings(spare_files=False)),
        ):
            root = tmp / f"t{len(tools)}"
            root.mkdir()
            box = stack.enter_context(
                portal.wrap_async_context_manager(
                    Toolbox(root, enabled=["apply_patch"], settings=settings)
                )
            )
            tools.append((tool, _toolbox_applies(portal, box, patches)))
        if git:
            tools.append(
                ("git apply", lambda root, n: command([git, "apply", "-"], patches[n])(root))
            )
        if gnu_patch:
            tools.append(
                (
                    "GNU patch -p1",
                    lambda root, n: command([gnu_patch, "-p1", "-s"], patches[n])(root),
                )
            )
        floors = tuple(read_and_write_floor(c) for c in contents)
        tools.append(("floor: read + atomic write", lambda root, n: floors[n](root)))
        roots = [tmp / f"t{number}" for number in range(len(tools))]
        for root in roots:
            root.mkdir(exist_ok=True)
            write_tree(root, before)
        timings = [Timing() for _ in tools]
        for round_ in range(runs + 1):  # the first round untimed
            direction = round_ % 2
            for (_, action), root, timing in zip(tools, roots, timings, strict=True):
                time.sleep(pause)
                cpu = _cpu_seconds()
                started = time.perf_counter()
                action(root, direction)
                if round_:
                    timing.wall.append(time.perf_counter() - started)
                    timing.cpu.append(_cpu_seconds() - cpu)
                check_tree(root, contents[direction])
        return [(tool, timing) for (tool, _), timing in zip(tools, timings, strict=True)]


def _toolbox_applies(
    portal: BlockingPortal, box: Toolbox, patches: tuple[str, str]
) -> Callable[[Path, int], None]:
    def action(root: Path, direction: int) -> None:
        result = portal.call(box.call, "apply_patch", {"input": patches[direction]})
        if result.is_error:
            raise SystemExit(result.output)

    return action


def command(argv: list[str], patch: str) -> Callable[[Path], None]:
    def action(root: Path) -> None:
        subprocess.run(argv, input=patch.encode(), cwd=root, check=True)

    return action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--dir", default=None, help="where the files are patched")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.5,
        help="seconds between two patches of the second table (as between tool calls)",
    )
    args = parser.parse_args()
    where = args.dir or tempfile.gettempdir()
    git = shutil.which("git")
    gnu_patch = shutil.which("patch")
    rows: list[tuple[str, str, Timing]] = []
    # one event loop for every Toolbox call, running in its own thread like the daemon's
    with start_blocking_portal() as portal:
        for name, (before, after) in (
            ("50k lines, 500 hunks", big_file_case()),
            ("200 files, 400 hunks", many_files_case()),
        ):
            diff = unified(before, after)
            env = envelope(before, after)
            label = f"{name} (unified, {len(diff) // 1024} KiB)"
            env_label = f"{name} (envelope, {len(env) // 1024} KiB)"
            tools: list[tuple[str, str, Callable[[Path], None]]] = [
                (label, "apply_patch via Toolbox.call", via_toolbox(portal, diff, events=True)),
                (label, "  parse + plan + commit only", steps(diff)),
            ]
            if git:
                tools.append((label, "git apply", command([git, "apply", "-"], diff)))
            if gnu_patch:
                tools.append((label, "GNU patch -p1", command([gnu_patch, "-p1", "-s"], diff)))
            tools.append((label, "floor: read + atomic write", read_and_write_floor(after)))
            tools.append((label, "floor, all temp files first", all_temps_first_floor(after)))
            exchanging = exchange_floor(after)
            if exchanging is not None:
                tools.append((label, "floor, temps first, exchange", exchanging))
            tools.append((label, "floor: least Python apply", least_python_floor(diff)))
            tools.append(
                (env_label, "apply_patch via Toolbox.call", via_toolbox(portal, env, events=True))
            )
            tools.append((env_label, "  parse + plan + commit only", steps(env)))
            # one untimed run of each first: the first Toolbox imports the tools' modules (a
            # few hundred ms, once per process), which is start-up's cost, not a patch's
            for _, _, action in tools:
                timed_run(Timing(), before, after, action, where)
            timings = [Timing() for _ in tools]
            # interleaved, so that every tool sees the same load on a shared machine
            for _ in range(args.runs):
                for (_, _, action), timing in zip(tools, timings, strict=True):
                    timed_run(timing, before, after, action, where)
            rows += [
                (row, tool, timing) for (row, tool, _), timing in zip(tools, timings, strict=True)
            ]
        steady = steady_state(portal, args.runs, args.pause, where)
    print(f"files in {where}, on {filesystem_of(where)}")
    print(
        f"{args.runs} runs of each, interleaved (same patch, fresh copy of the files per run); "
        "CPU is user + system time of the process and its children; the ratios are the median "
        "wall time over git apply's and over the floor's on the same patch\n"
    )
    width = max(len(r[0]) for r in rows)
    print(
        f"| {'patch':<{width}} | {'tool':<30} | median ms | p99 ms | CPU median ms "
        "| × git apply | × floor |"
    )
    print(
        f"|{'-' * (width + 2)}|{'-' * 32}|----------:|-------:|--------------:"
        "|------------:|--------:|"
    )

    def medians(of_tool: str) -> dict[str, float]:
        return {
            label.split(" (")[0]: statistics.median(t.wall)
            for label, tool, t in rows
            if tool == of_tool
        }

    git_median = medians("git apply")
    floor_median = medians("floor: read + atomic write")
    for label, tool, timing in rows:
        median = statistics.median(timing.wall)
        case = label.split(" (")[0]
        reference = git_median.get(case)
        ratio = f"{median / reference:10.2f}×" if reference else " " * 11
        floor = floor_median.get(case)
        to_floor = f"{median / floor:6.2f}×" if floor else " " * 7
        print(
            f"| {label:<{width}} | {tool:<30} | {median * 1000:9.1f} | "
            f"{percentile(timing.wall, 99) * 1000:6.1f} | "
            f"{statistics.median(timing.cpu) * 1000:13.1f} | {ratio} | {to_floor} |"
        )
    print(
        f"\n200 files, 400 hunks (unified), in a workspace where patches were applied before: "
        f"the patch and its reverse in turn, {args.runs} of each tool after an untimed round, "
        f"{args.pause:g} s apart\n"
    )
    print(f"| {'tool':<30} | median ms | p99 ms | CPU median ms | × git apply | × floor |")
    print(f"|{'-' * 32}|----------:|-------:|--------------:|------------:|--------:|")
    steady_medians = {tool: statistics.median(timing.wall) for tool, timing in steady}
    steady_git = steady_medians.get("git apply")
    steady_floor = steady_medians["floor: read + atomic write"]
    for tool, timing in steady:
        median = statistics.median(timing.wall)
        ratio = f"{median / steady_git:10.2f}×" if steady_git else " " * 11
        print(
            f"| {tool:<30} | {median * 1000:9.1f} | {percentile(timing.wall, 99) * 1000:6.1f} | "
            f"{statistics.median(timing.cpu) * 1000:13.1f} | {ratio} | "
            f"{median / steady_floor:6.2f}× |"
        )


def filesystem_of(path: str) -> str:
    """The type and options of the filesystem holding `path`, from /proc/self/mounts (the
    mount point that is its longest prefix); "unknown" without /proc."""
    real = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 4:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) >= len(best[0])):
                    best = (point, fields[2], fields[3])
    except OSError:
        return "unknown"
    if best is None:
        return "unknown"
    point, kind, options = best
    return f"{kind} ({options}) mounted at {point}"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (with few runs, p99 is the slowest run)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


if __name__ == "__main__":
    main()
