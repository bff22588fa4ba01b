"""tools.textfile.commit_writes: all or nothing, and a crash at any step leaves each file
either old or new."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tools.commit_crasher import DELETED, NEW, OLD


def test_a_commit_killed_at_any_step_leaves_every_file_old_or_new(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "tests.tools.commit_crasher", str(tmp_path / "runs")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    # every step was a kill point (creates, writes, mkdir, links, renames, unlinks), and the
    # last run finished: all new, nothing left over
    assert len(outcomes) > 10
    assert all(o["killed"] for o in outcomes[:-1]) and not outcomes[-1]["killed"]
    final = dict(NEW)
    assert outcomes[-1]["files"] == final
    states_seen = set()
    for outcome in outcomes:
        files = {n: t for n, t in outcome["files"].items() if not n.split("/")[-1].startswith(".")}
        for name in [*OLD, *NEW]:
            new = None if name in DELETED else NEW.get(name)
            assert files.get(name) in (OLD.get(name), new), (outcome["k"], name, files)
        states_seen.add(tuple(sorted(files.items())))
    # the kills did land between the swaps: partly committed states were seen, and each
    # one of them is a mix of whole old and whole new files
    assert tuple(sorted(OLD.items())) in states_seen
    assert len(states_seen) > 2
