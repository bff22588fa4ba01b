"""What a full garbage collection costs a warmed-up daemon: the event loop stands still for it.

    python -m benchmarks.gc_bench [--collections N]      (from the repository root)

Each row is a fresh interpreter that loads what `agentd serve` has loaded once its warm-up
is over (the app's modules, the /v1 API, the run machinery, the validators of agentd's
models, the model SDKs and the tools), freezing the collector's generations where the daemon
does, then times N full collections (`gc.collect()`): median and p99, and the number of
objects a collection scans.

- `frozen at listening and after the warm-up`: what agentd does (`cli.resume_gc_after_start`
  when it listens, `daemon.made_to_last` as each step of the warm-up ends; here once, after
  the last).
- `frozen at listening only`: agentd before the second freeze; every full collection scans
  what the warm-up made.
- `bare interpreter`: the floor, a collection with next to nothing to scan.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks.api_bench import ROOT
from benchmarks.startup_bench import print_table

WARMED_UP = """
import gc, json, sys, time
gc.disable()
import runtime.cli, runtime.daemon
from runtime.api.v1 import load_v1
from runtime.runs.machinery import load_run_machinery
gc.freeze()  # as the daemon does when it listens
load_v1()
load_run_machinery()
runtime.daemon.build_deferred_models()
runtime.daemon.warm_up()
if FREEZE_AFTER_WARM_UP:
    gc.freeze()
gc.enable()
"""
BARE = "import gc, json, sys, time\n"
TIMED = """
scanned = len(gc.get_objects())
times = []
for _ in range(COLLECTIONS):
    began = time.perf_counter()
    gc.collect()
    times.append((time.perf_counter() - began) * 1000)
print(json.dumps({"times": times, "scanned": scanned}))
"""


def collections(setup: str, count: int, freeze_after_warm_up: bool) -> tuple[list[float], int]:
    code = setup.replace("FREEZE_AFTER_WARM_UP", str(freeze_after_warm_up))
    code += TIMED.replace("COLLECTIONS", str(count))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return report["times"], report["scanned"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", type=int, default=21, help="timed collections per row")
    args = parser.parse_args()
    rows = [
        ("frozen at listening and after the warm-up", WARMED_UP, True),
        ("frozen at listening only", WARMED_UP, False),
        ("bare interpreter", BARE, False),
    ]
    print(f"full garbage collections, {args.collections} per row (fresh interpreter each)\n")
    lines = []
    for name, setup, freeze in rows:
        times, scanned = collections(setup, args.collections, freeze)
        p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
        lines.append((name, f"{scanned:,}", f"{statistics.median(times):.2f}", f"{p99:.2f}"))
    print_table(("process", "objects scanned", "median ms", "p99 ms"), lines)


if __name__ == "__main__":
    main()
