"""Every benchmark runs: each one, as `./run bench` starts it, on the smallest work its options
allow. A benchmark is measured by hand, not in CI, so without this a change to what it drives
breaks it unseen (api_bench's fan-out agent asked for more model turns than agents may have,
and `./run bench` stopped at its first script). Nothing here looks at a figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The smallest work of each benchmark: enough to go through every part of it once.
SMALL: dict[str, list[str]] = {
    "api_bench": ["--starts", "1", "--rtt", "3", "--clients", "3", "--turns", "3", "--calls", "1"],
    "client_bench": ["--requests", "5", "--lines", "20"],
    "compaction_bench": ["--turns", "12", "--repeats", "1"],
    "exec_bench": ["--runs", "2", "--rtt-runs", "2", "--mb", "1"],
    "fanout_bench": [
        "--subscribers",
        "3",
        "--events",
        "60",
        "--rate",
        "2000",
        "--http-rate",
        "2000",
        "--catch-up",
        "100",
    ],
    "faults_bench": ["--repeat", "1", "--kill-seeds", "1"],
    "first_run_bench": ["--starts", "1"],
    "gc_bench": ["--collections", "1"],
    "growth_bench": ["--smoke", "--repeat", "1"],
    "link_bench": [
        "--drops",
        "1",
        "--turns",
        "2",
        "--reads",
        "1",
        "--threads",
        "2,3",
        "--idle",
        "0.1",
        "--appends",
        "2",
    ],
    "load_bench": ["--runs", "2", "--lines", "5", "--interval", "0.01"],
    "loop_bench": ["--turns", "3"],
    "patch_bench": ["--runs", "1", "--pause", "0"],
    "provider_bench": ["--makes", "1"],
    "startup_bench": ["--starts", "1", "--top", "2"],
    "thread_events_bench": [
        "--events",
        "10",
        "--rounds",
        "1",
        "--backlog",
        "30",
        "--clients",
        "1,2",
    ],
    "workspace_bench": ["--files", "50", "--runs", "1", "--latency-runs", "1"],
}


def test_every_benchmark_has_its_small_run() -> None:
    scripts = sorted(p.stem for p in (ROOT / "benchmarks").glob("*_bench.py"))
    assert scripts == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_benchmark_runs(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    finished = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *SMALL[name]],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, (
        f"{name} exited {finished.returncode}\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
    )
    assert finished.stdout.strip(), f"{name} printed nothing"
