"""The journal of a multi-file commit, so that one a killed daemon cut short is undone.

`tools.textfile.commit_writes` swaps each file in by one atomic exchange, so a daemon killed
mid-commit (SIGKILL, the OOM killer) leaves every file whole, old or new; but a patch of
many files could be left partly applied, with the other halves of the swaps (the old
contents, the new ones not swapped in yet) left beside them as hidden temporary files, and
the next run would start on that without knowing. So a commit of more than one file writes
what it is about to do in `<workspace>/.agentd/commits/`: `<tag>.json` (the temporary files it
will write) before it writes any, `<tag>.swaps` (each swap) before its first swap; it removes
both once done (or rolled back). `recover` settles what a killed commit left: killed before
its swaps, its temporary files are removed; a commit that had swapped in every file is
finished (the old files removed); any other is rolled back (each swapped file exchanged
back, new files removed, deleted ones put back, temporary files and new directories
removed).

Whether a file was swapped is read from the file itself: the journal holds the inode of each
temporary file, which the target has once the two are exchanged. No fsync: like the commit,
the journal is for a daemon that is killed, whose writes are in the page cache, not for a
power loss. The committing process holds an `flock` on its journal, so `recover` (at daemon
start, and before each apply_patch) never touches a commit still under way in another
process or thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from tools.workspace import AGENTD_DIR

JOURNAL_DIR = "commits"
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def journal_directory(workspace_root: Path) -> Path:
    return workspace_root / AGENTD_DIR / JOURNAL_DIR


class Journal:
    """One commit's journal, locked while the commit runs: begun before its first temporary
    file (`begin`: the targets and the temporary names planned for them), completed before
    its first swap (`record_swaps`: each temporary file's inode, deletes, new directories, in
    a second file written whole, since the lock stays on the first), removed at its end."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def begin(cls, directory: Path, tag: str, planned: list[tuple[str, str]]) -> Journal:
        """Record a commit about to write the temporary files `planned` (target, name)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = os.path.join(directory, f"{tag}.json")
        fd = _write_whole(path, {"planned": planned}, lock=True)
        return cls(path, fd)

    def record_swaps(
        self,
        writes: list[tuple[str, str, int]],
        deletes: list[tuple[str, str]],
        created_dirs: list[str],
    ) -> None:
        """Record the swaps to come: `writes` (target, temporary file, its inode), `deletes`
        (target, the name it goes to), having made `created_dirs`."""
        record = {"writes": writes, "deletes": deletes, "createdDirs": created_dirs}
        os.close(_write_whole(_swaps_path(self.path), record, lock=False))

    def end(self) -> None:
        """The commit is over (done or rolled back): nothing to recover."""
        for path in (_swaps_path(self.path), self.path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(self._fd)


def _swaps_path(path: str) -> str:
    return path.removesuffix(".json") + ".swaps"


def _write_whole(path: str, record: dict[str, Any], *, lock: bool) -> int:
    """`record` as JSON at `path`, written under another name and renamed once whole (a
    journal is never read cut short); its descriptor, locked with `lock`."""
    data = json.dumps(record).encode()
    partial = path + ".partial"
    fd = os.open(partial, _CREATE, 0o600)
    try:
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.rename(partial, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return fd


def recover(directory: Path, exchange: Any) -> list[str]:
    """Finish or undo every commit whose journal is in `directory` and whose process is gone;
    what was done, one line per commit (for the log). `exchange`: renameat2's exchange."""
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    done: list[str] = []
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".json.partial"):
            _remove_if_abandoned(path)  # killed while writing it: nothing else was written
            continue
        if not name.endswith(".json"):
            continue  # a commit's second file: settled with its journal
        try:
            fd = os.open(path, _OPEN)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a commit under way
            planned = json.loads(_read_all(fd))["planned"]
            swaps = _swaps_path(path)
            try:
                with open(swaps, "rb") as handle:
                    record = json.loads(handle.read())
            except FileNotFoundError:  # killed while writing the temporary files
                done.append(_remove_temporary_files(planned))
            else:
                done.append(_settle(record, exchange))
            for leftover in (swaps + ".partial", swaps, path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a journal this version reads: left as it is
        finally:
            os.close(fd)
    return done


def _remove_temporary_files(planned: list[list[str]]) -> str:
    for _target, temp in planned:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return (
        f"removed the temporary files of a commit of {len(planned)} file(s) a previous daemon "
        "was killed in before it changed any"
    )


def _remove_if_abandoned(path: str) -> None:
    try:
        fd = os.open(path, _OPEN)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _settle(record: dict[str, Any], exchange: Any) -> str:
    writes: list[tuple[str, str, int]] = [tuple(entry) for entry in record["writes"]]
    deletes: list[tuple[str, str]] = [tuple(entry) for entry in record["deletes"]]
    swapped = [_inode(target) == inode for target, _temp, inode in writes]
    if all(swapped):
        # every file had been swapped in: finish, as the commit would have
        for target, aside in deletes:
            with contextlib.suppress(OSError):
                if os.path.lexists(aside):
                    os.unlink(aside)
                else:
                    os.unlink(target)
        for _target, temp, _inode_number in writes:
            with contextlib.suppress(OSError):
                os.unlink(temp)  # an old file (or gone already, to the spare pool)
        return f"finished a commit of {len(writes)} file(s) a previous daemon left at its end"
    for (target, temp, _inode_number), was_swapped in zip(writes, swapped, strict=True):
        with contextlib.suppress(OSError):
            if not was_swapped:
                os.unlink(temp)  # the new content, never swapped in
            elif os.path.lexists(temp):
                exchange(temp, target)  # the old file back in place
                os.unlink(temp)
            else:
                os.unlink(target)  # a new file: there was none before
    for target, aside in deletes:
        with contextlib.suppress(OSError):
            if os.path.lexists(aside) and not os.path.lexists(target):
                os.rename(aside, target)
    for directory in reversed(record["createdDirs"]):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    return (
        f"rolled back a commit a previous daemon left cut short: {sum(swapped)} of "
        f"{len(writes)} file(s) had been swapped in ({', '.join(t for t, _, _ in writes[:5])}"
        f"{', …' if len(writes) > 5 else ''})"
    )
