"""The journal of a multi-file commit, so that one a killed daemon cut short is undone.

`tools.textfile.commit_writes` swaps each file in by one atomic exchange, so a daemon killed
mid-commit (SIGKILL, the OOM killer) leaves every file whole, old or new; but a patch of
many files could be left partly applied, with the other halves of the swaps (the old
contents, the new ones not swapped in yet) left beside them as hidden temporary files, and
the next run would start on that without knowing. So before its first swap a commit of more
than one file writes what it is about to do to `<workspace>/.agentd/commits/<tag>.json`,
and removes the journal once done (or rolled back). `recover` undoes what a journal left
behind says: a commit that had swapped in every file is finished (the old files removed),
any other is rolled back (each swapped file exchanged back, new files removed, deleted
ones put back, temporary files and new directories removed).

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
    """One commit's journal, written and locked (`begin`), removed at its end (`end`)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def begin(
        cls,
        directory: Path,
        tag: str,
        writes: list[tuple[str, str, int]],
        deletes: list[tuple[str, str]],
        created_dirs: list[str],
    ) -> Journal:
        """Record a commit about to swap `writes` (target, temporary file, its inode) and
        rename `deletes` (target, the name it goes to), having made `created_dirs`."""
        directory.mkdir(parents=True, exist_ok=True)
        record = {"writes": writes, "deletes": deletes, "createdDirs": created_dirs}
        data = json.dumps(record).encode()
        path = os.path.join(directory, f"{tag}.json")
        partial = path + ".partial"  # renamed once whole: a journal is never read cut short
        fd = os.open(partial, _CREATE, 0o600)
        try:
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
        return cls(path, fd)

    def end(self) -> None:
        """The commit is over (done or rolled back): nothing to recover."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)


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
            _remove_if_abandoned(path)  # killed while writing it: no swap had happened
            continue
        if not name.endswith(".json"):
            continue
        try:
            fd = os.open(path, _OPEN)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a commit under way
            record = json.loads(_read_all(fd))
            done.append(_settle(record, exchange))
            os.unlink(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a journal this version reads: left as it is
        finally:
            os.close(fd)
    return done


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
