"""Kills `tools.textfile.commit_writes` at each of its steps, for the crash test.

`python -m tests.tools.commit_crasher DIR [exchange|replace] [spares]` runs, for k = 0, 1, 2, …, a
commit (two files replaced, one of them with its previous content given, one created in a
new directory, one deleted) in a fresh copy DIR/k of the old
files, in a forked child that SIGKILLs itself just before its k-th call that changes the
filesystem (create, write, chmod, mkdir, link, rename, exchange, unlink). It prints one JSON
line per k: whether the child was killed and every file found afterwards (name → content),
and stops after the first k at which the commit finished. The parent never runs a commit
itself, and has no threads, so forking it is safe. `replace` makes the commit swap files in
as where `renameat2(RENAME_EXCHANGE)` is missing (its exchange answers EINVAL). `journal`
commits with a journal (tools/commit_journal.py) and settles it after each kill, as the next
daemon does, before looking at the files. `spares`
commits through a `SparePool` that holds spare files already (tools/spares.py), so the temporary
files are spares moved in, and the old files go back to the pool, emptied.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tools.textfile
from tools.commit_journal import journal_directory, recover
from tools.spares import SPARE_DIR, SparePool
from tools.textfile import FileWrite, commit_writes
from tools.workspace import AGENTD_DIR

OLD = {"a.txt": "old a\n", "b.txt": "old b\n", "c.txt": "old c\n"}
NEW = {"a.txt": "new a\n", "b.txt": "new b\n", "d/new.txt": "new d\n"}
DELETED = ["c.txt"]
MUTATING = (
    "open",
    "write",
    "ftruncate",
    "fchmod",
    "chmod",
    "mkdir",
    "link",
    "replace",
    "rename",
    "unlink",
)
SPARES = 2  # fewer than the files written: the commit takes spares and makes new files


def no_exchange(a: str, b: str) -> None:
    """renameat2 on a filesystem without RENAME_EXCHANGE."""
    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), a, None, b)


def crash_before(k: int) -> None:
    """From now on, SIGKILL this process just before its k-th filesystem change."""
    calls = 0

    def wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            changes = name != "open" or bool(args[1] & (os.O_CREAT | os.O_TRUNC))
            if changes:
                if calls == k:
                    os.kill(os.getpid(), signal.SIGKILL)
                calls += 1
            return real(*args, **kwargs)

        return call

    for name in MUTATING:
        setattr(os, name, wrap(name, getattr(os, name)))
    if tools.textfile.rename_exchange not in (None, no_exchange):
        tools.textfile.rename_exchange = wrap("exchange", tools.textfile.rename_exchange)


def tree(root: Path) -> dict[str, str]:
    """The files of `root` (not the daemon's own directory, where spares are kept)."""
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] != AGENTD_DIR
    }


def spare_contents(root: Path) -> list[str]:
    return sorted(path.read_text() for path in (root / AGENTD_DIR / SPARE_DIR).glob("*"))


def main(directory: Path, swap: str, spares: bool, journal: bool = False) -> None:
    if swap == "replace":
        tools.textfile.rename_exchange = no_exchange
    k = 0
    while True:
        root = directory / str(k)
        root.mkdir(parents=True)
        for name, text in OLD.items():
            (root / name).write_text(text)
        if spares:
            (root / AGENTD_DIR / SPARE_DIR).mkdir(parents=True)
            for n in range(SPARES):
                (root / AGENTD_DIR / SPARE_DIR / f"spare-{n}").touch()
        child = os.fork()
        if child == 0:
            crash_before(k)
            # a.txt's old content is passed (rolled back by rewriting it), b.txt's is not
            # (kept aside as a hard link): both ways are killed at every step
            writes = [
                FileWrite(
                    root / name,
                    text.encode(),
                    previous=OLD[name].encode() if name == "a.txt" else None,
                    previous_mode=0o644,
                )
                for name, text in NEW.items()
            ]
            pool = SparePool(root) if spares else None
            commit_writes(
                writes,
                [root / name for name in DELETED],
                spares=pool,
                journal=journal_directory(root) if journal else None,
            )
            os._exit(0)
        _, status = os.waitpid(child, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if not killed and os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the commit failed at k={k} (status {status})")
        outcome: dict[str, Any] = {"k": k, "killed": killed}
        if journal:  # what the next daemon does first
            outcome["recovered"] = recover(journal_directory(root), tools.textfile.rename_exchange)
            journals = journal_directory(root)
            outcome["journals"] = sorted(os.listdir(journals)) if journals.exists() else []
        outcome["files"] = tree(root)
        if spares:
            outcome["spares"] = spare_contents(root)
        print(json.dumps(outcome), flush=True)
        if not killed:
            return
        k += 1


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        sys.argv[2] if len(sys.argv) > 2 else "exchange",
        "spares" in sys.argv[3:],
        "journal" in sys.argv[3:],
    )
