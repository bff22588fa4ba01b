"""tools.textfile.commit_writes: all or nothing, and a crash at any step leaves each file
either old or new."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tools.textfile
from tests.tools.commit_crasher import DELETED, NEW, OLD
from tests.tools.harness import fail_swaps, read_tree
from tools.textfile import FileWrite, commit_writes


def crash_outcomes(tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    """`tests.tools.commit_crasher`'s outcomes: one commit killed at each of its steps."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "tests.tools.commit_crasher", str(tmp_path / "runs"), *options],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def check_every_file_old_or_new(outcomes: list[dict[str, Any]]) -> None:
    # every step was a kill point (creates, writes, mkdir, links, renames, exchanges,
    # unlinks), and the last run finished: all new, nothing left over
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


def test_a_commit_killed_at_any_step_leaves_every_file_old_or_new(
    tmp_path: Path, swap: str
) -> None:
    check_every_file_old_or_new(crash_outcomes(tmp_path, swap))


def test_a_commit_into_spare_files_killed_at_any_step_leaves_every_file_old_or_new(
    tmp_path: Path, swap: str
) -> None:
    outcomes = crash_outcomes(tmp_path, swap, "spares")
    check_every_file_old_or_new(outcomes)
    # both spares were written into and swapped in; the old files went to the pool, emptied:
    # it keeps no old contents. Exchanging, that is the two replaced and the deleted one;
    # replacing, a.txt's old file is not kept (its `previous` bytes are what a rollback
    # would write back), so only b.txt's backup link and the deleted one
    kept = 3 if swap == "exchange" else 2
    assert outcomes[-1]["spares"] == [""] * kept
    assert all(spares == [""] * len(spares) for spares in (o["spares"] for o in outcomes))


def test_a_journalled_commit_killed_at_any_step_is_whole_after_the_next_start(
    tmp_path: Path,
) -> None:
    """With a journal (tools/commit_journal.py), what the next daemon finds once it settled
    the journal is the commit not made or made, never partly: every file old, or every one
    new, and nothing of the commit left beside them (no temporary file, no journal)."""
    outcomes = crash_outcomes(tmp_path, "exchange", "journal")
    assert len(outcomes) > 10 and not outcomes[-1]["killed"]
    settled = [o["recovered"][0] for o in outcomes if o["recovered"]]
    assert any(line.startswith("removed the temporary files") for line in settled)
    assert any(line.startswith("rolled back") for line in settled)
    assert any(line.startswith("finished") for line in settled)
    for outcome in outcomes:
        assert outcome["journals"] == [], outcome  # every journal was settled
        assert outcome["files"] in (dict(OLD), dict(NEW)), outcome


@pytest.mark.parametrize("previous_given", [True, False])
def test_a_failed_swap_puts_back_every_file_with_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, previous_given: bool, swap: str
) -> None:
    """The third swap fails: the two files already swapped get their old content and mode
    back (their old file renamed back after an exchange; after a replace, rewritten from
    `previous` or renamed back from the hard-linked backup), the new file and its directory
    go, and no temporary or backup file is left."""
    old = {"a.sh": (b"echo a\n", 0o750), "b.txt": (b"b\r\n", 0o600), "c.txt": (b"c", 0o644)}
    for name, (data, mode) in old.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(mode)

    def error_for(src: str, dst: str) -> OSError | None:
        if Path(dst).name == "c.txt" and Path(src).name.endswith(".tmp"):
            return OSError(5, "Input/output error")
        return None

    swapped = fail_swaps(monkeypatch, error_for)
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
    assert swapped[:2] == ["a.sh", "b.txt"]  # both really were swapped before the fault
    for name, (data, mode) in old.items():
        assert (tmp_path / name).read_bytes() == data
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)


def test_undoing_exchanges_needs_no_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an exchange the old file waits under the temporary name: a swap that fails with
    the disk full is undone by renames alone (no file is created or written, which a full
    disk would refuse), and every target gets its very inode back, hard links included."""
    if tools.textfile.rename_exchange is None:
        pytest.skip("no renameat2 on this system")
    old = {"a.txt": b"a\n", "b.txt": b"b\n", "c.txt": b"c\n"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    os.link(tmp_path / "a.txt", tmp_path / "a-link.txt")
    inodes = {name: (tmp_path / name).stat().st_ino for name in old}
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_open = os.open

    def error_for(src: str, dst: str) -> OSError | None:
        if Path(dst).name != "c.txt":
            return None

        # from here on the disk is full: nothing can be created or written any more
        def full_open(path: str, flags: int, *args: int) -> int:
            if flags & os.O_CREAT:
                raise disk_full
            return real_open(path, flags, *args)

        def full_write(fd: int, data: bytes) -> int:
            raise disk_full

        monkeypatch.setattr(tools.textfile.os, "open", full_open)
        monkeypatch.setattr(tools.textfile.os, "write", full_write)
        return disk_full

    swapped = fail_swaps(monkeypatch, error_for)
    writes = [FileWrite(tmp_path / n, b"new " + d, previous=d) for n, d in old.items()]
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        commit_writes(writes)
    monkeypatch.undo()
    assert swapped == ["a.txt", "b.txt", "b.txt", "a.txt"]  # two swaps, two renames back
    assert read_tree(tmp_path) == {**old, "a-link.txt": old["a.txt"]}
    assert {name: (tmp_path / name).stat().st_ino for name in old} == inodes
    assert (tmp_path / "a.txt").stat().st_nlink == 2


def test_a_directory_at_the_target_is_not_swapped_away(tmp_path: Path, swap: str) -> None:
    """A target that became a directory after it was checked: as `os.replace` refuses to
    put a file over a directory, the exchange is undone and the commit rolled back."""
    (tmp_path / "a.txt").write_bytes(b"a\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside.txt").write_bytes(b"kept\n")
    writes = [FileWrite(tmp_path / "a.txt", b"new a\n"), FileWrite(tmp_path / "dir", b"x")]
    with pytest.raises(IsADirectoryError):
        commit_writes([*writes, FileWrite(tmp_path / "b.txt", b"b\n")])
    assert read_tree(tmp_path) == {"a.txt": b"a\n", "dir/inside.txt": b"kept\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "dir"]
