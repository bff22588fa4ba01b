"""apply_patch against `git apply` (and GNU `patch`) on the same patches, in the same run.

    python -m benchmarks.patch_bench [--runs N]      (from the repository root)

Scenarios:

- `50k lines, 500 hunks`: one 50,000-line file and a unified diff with 500 hunks spread
  through it (each replaces one line and inserts another).
- `200 files`: a unified diff touching 200 files of 200 lines each (two hunks per file).
- the same two as patch envelopes (`*** Begin Patch`), which only apply_patch reads.

apply_patch is timed through `Toolbox.call` (argument validation, parsing, locating and
checking every hunk, atomic writes, `file_edit` diffs and events); the parse, plan and
commit steps alone are shown beneath it. Peers are timed as
the whole command (process start included), each on a fresh copy of the files; the copy is
not timed. Each figure is the median of N runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from tools.base import Toolbox
from tools.diffs import diff_regions, keepends_lines
from tools.patch import commit_changes, parse_patch, plan_changes
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


def timed_runs(
    runs: int, before: Files, after: Files, action: Callable[[Path], None]
) -> list[float]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_tree(root, before)
            started = time.perf_counter()
            action(root)
            times.append(time.perf_counter() - started)
            check_tree(root, after)
    return times


def via_toolbox(patch: str, *, events: bool) -> Callable[[Path], None]:
    def action(root: Path) -> None:
        async def call() -> None:
            sink: list[dict[str, object]] = []
            on_event = sink.append if events else None
            async with Toolbox(root, enabled=["apply_patch"], on_event=on_event) as box:
                result = await box.call("apply_patch", {"input": patch})
            if result.is_error:
                raise SystemExit(result.output)

        anyio.run(call)

    return action


def steps(patch: str) -> Callable[[Path], None]:
    def action(root: Path) -> None:
        commit_changes(plan_changes(parse_patch(patch), Workspace(root)))

    return action


def command(argv: list[str], patch: str) -> Callable[[Path], None]:
    def action(root: Path) -> None:
        subprocess.run(argv, input=patch.encode(), cwd=root, check=True)

    return action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    git = shutil.which("git")
    gnu_patch = shutil.which("patch")
    rows: list[tuple[str, str, list[float]]] = []
    for name, (before, after) in (
        ("50k lines, 500 hunks", big_file_case()),
        ("200 files, 400 hunks", many_files_case()),
    ):
        diff = unified(before, after)
        env = envelope(before, after)
        label = f"{name} (unified, {len(diff) // 1024} KiB)"
        rows.append(
            (
                label,
                "apply_patch via Toolbox.call",
                timed_runs(args.runs, before, after, via_toolbox(diff, events=True)),
            )
        )
        rows.append(
            (
                label,
                "  parse + plan + commit only",
                timed_runs(args.runs, before, after, steps(diff)),
            )
        )
        if git:
            rows.append(
                (
                    label,
                    "git apply",
                    timed_runs(args.runs, before, after, command([git, "apply", "-"], diff)),
                )
            )
        if gnu_patch:
            rows.append(
                (
                    label,
                    "GNU patch -p1",
                    timed_runs(args.runs, before, after, command([gnu_patch, "-p1", "-s"], diff)),
                )
            )
        env_label = f"{name} (envelope, {len(env) // 1024} KiB)"
        rows.append(
            (
                env_label,
                "apply_patch via Toolbox.call",
                timed_runs(args.runs, before, after, via_toolbox(env, events=True)),
            )
        )
        rows.append(
            (
                env_label,
                "  parse + plan + commit only",
                timed_runs(args.runs, before, after, steps(env)),
            )
        )
    print(f"median of {args.runs} runs each (same patch, fresh copy of the files per run)\n")
    width = max(len(r[0]) for r in rows)
    print(f"| {'patch':<{width}} | {'tool':<30} | median ms | min ms |")
    print(f"|{'-' * (width + 2)}|{'-' * 32}|----------:|-------:|")
    for label, tool, times in rows:
        median = statistics.median(times) * 1000
        best = min(times) * 1000
        print(f"| {label:<{width}} | {tool:<30} | {median:9.1f} | {best:6.1f} |")


if __name__ == "__main__":
    main()
