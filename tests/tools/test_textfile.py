"""tools.textfile.commit_writes: all or nothing, and a crash at any step leaves each file
either old or new."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import tools.textfile
from tests.tools.commit_crasher import DELETED, NEW, OLD
from tools.textfile import FileWrite, commit_writes


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


@pytest.mark.parametrize("previous_given", [True, False])
def test_a_failed_swap_puts_back_every_file_with_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, previous_given: bool
) -> None:
    """The third replace fails: the two files already replaced get their old content and
    mode back (rewritten from `previous`, or renamed back from the hard-linked backup), the
    new file and its directory go, and no temporary or backup file is left."""
    old = {"a.sh": (b"echo a\n", 0o750), "b.txt": (b"b\r\n", 0o600), "c.txt": (b"c", 0o644)}
    for name, (data, mode) in old.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(mode)
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        if Path(dst).name == "c.txt" and Path(src).name.endswith(".tmp"):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(tools.textfile.os, "replace", failing_replace)
    writes = [
        FileWrite(
            tmp_path / name,
            b"new " + data,
            0o644,
            previous=data if previous_given else None,
            previous_mode=mode,
        )
        for name, (data, mode) in old.items()
    ]
    with pytest.raises(OSError, match="Input/output error"):
        commit_writes([*writes, FileWrite(tmp_path / "new" / "d.txt", b"d")])
    for name, (data, mode) in old.items():
        assert (tmp_path / name).read_bytes() == data
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)
