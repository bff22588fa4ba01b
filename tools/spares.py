"""Spare files: the editing tools' commits reuse the files they replace instead of making new ones.

A crash-safe write puts the new content in a file of its own and swaps it in (see
`tools.textfile.commit_writes`), so each file written costs creating a file and, once the
commit is over, deleting the old one. On ext4 those two are most of a multi-file commit's
cost: creating a file scans past the inodes deleted in the last seconds (each commit's own
deletions included), and an unlink waits for the writeback the previous commit started. In
a workspace where a 200-file patch and its reverse were applied in turn, the commit without
spares took 2.5-5x as long as with them (`benchmarks/patch_bench.py`, second table).

`SparePool` keeps the files a commit swapped out, emptied, under `<workspace>/.agentd/spare`
(`.agentd` is the daemon's own directory, ignored by git and by the run's file-change scan),
and hands them to the next commits as their new files: a commit in a workspace where earlier
commits happened creates and deletes no file. A spare is moved beside its target (a rename
within the filesystem), written, swapped in; the old file goes back to the pool, emptied
(`ftruncate`), so the pool holds no old contents.

The pool is inside the workspace, where the agent's commands can put anything, so nothing in
it is trusted: the directories are opened without following symbolic links, and a spare is
written only if, once opened (without following a link), it is a regular file of this user
with no other name (`st_nlink == 1`) and no extended attributes (an ACL or a security label
of the file it was must not become another file's); anything else is left in the pool under a
name no pool takes, and a new file is made. A file a commit swapped out is kept on the same
terms.

Several pools (one per toolbox, or several daemons) may share a directory: a spare is taken by
renaming it away, which only one of them can do.

The pool pays off only where creating a file is the slow part: an ext4 without a journal (as
the root disk of the sandboxes these benchmarks ran on), which does not reuse an inode deleted
in the last seconds, so each creation scans past them. On a journalled ext4 or a tmpfs a file
is created in a few microseconds, and the pool's renames into and out of its directory cost
more than they save (the same steady-state commit took 16-22 % longer with the pool). So a
toolbox keeps a pool only where `creating_files_is_slow` (unless `ToolSettings.spare_files`
says always or never).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from tools.workspace import AGENTD_DIR, ignore_in_git

if TYPE_CHECKING:
    from tools.base import Toolbox, ToolContext

SPARE_DIR = "spare"
# Spares kept at most (each an empty file): a commit of more files makes the rest new.
MAX_SPARES = 1024

# Every call the pool makes relative to its directory's descriptor; where one is missing (an
# old or unusual platform) there is no pool and commits make new files.
_SUPPORTED = (
    {os.rename, os.open, os.stat, os.mkdir} <= os.supports_dir_fd
    and os.scandir in os.supports_fd
    # a spare must carry nothing of the file it was (an ACL, a security label): where the
    # extended attributes cannot be listed (macOS's Python) there is no pool
    and hasattr(os, "listxattr")
)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO someone put in the pool must not block the open
_SPARE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def spares_for(ctx: ToolContext) -> SparePool | None:
    """The spare files a tool call's commits write into: its toolbox's pool, or None where
    `ToolSettings.spare_files` is off."""
    return None if ctx.settings.spare_files is False else ctx.service(SparePool.for_toolbox)


def creating_files_is_slow(
    path: Path, *, procfs: Path = Path("/proc"), sysfs: Path = Path("/sys")
) -> bool:
    """Blocking: whether `path` is on an ext4 without a journal, where the pool pays off (see
    the module's docstring). The kernel tells: the block device the file is on
    (`/sys/dev/block/MAJOR:MINOR`) names an ext4's options (`/proc/fs/ext4/NAME/options`),
    and only an ext4 with a journal has a `data=` mode among them. False whenever it cannot
    tell (not Linux, not a block device such as tmpfs or overlayfs, not ext4)."""
    try:
        device = os.stat(path).st_dev
        link = sysfs / "dev" / "block" / f"{os.major(device)}:{os.minor(device)}"
        name = os.path.basename(os.readlink(link))
        options = (procfs / "fs" / "ext4" / name / "options").read_text().split()
    except (OSError, ValueError):
        return False
    return not any(option.startswith("data=") for option in options)


class SparePool:
    """The spare files of one workspace. `take` and `give` block (call them from a worker
    thread) and are safe from several threads at once; `close` when done."""

    def __init__(self, workspace_root: Path, *, only_where_it_pays: bool = False) -> None:
        self.root = workspace_root
        self._lock = threading.Lock()
        self._fd: int | None = None  # the spare directory, opened on first use
        # no pool: the directory cannot be made or opened, or creating files is cheap here
        self._unusable = False
        # whether the filesystem is still to be asked (`creating_files_is_slow`) on first use
        self._ask_filesystem = only_where_it_pays
        self._names: list[str] = []  # spares this pool believes are in the directory
        self._scanned = False
        self._prefix = secrets.token_hex(4)  # this pool's names: <prefix>-<n>
        self._numbers = itertools.count()
        self.taken = 0  # spares handed out, and files kept as spares (tests, benchmarks)
        self.kept = 0

    @classmethod
    def for_toolbox(cls, box: Toolbox) -> SparePool:
        """The pool of a toolbox's workspace (a `Toolbox.service`): where creating files is
        slow, or everywhere if `ToolSettings.spare_files` is True."""
        return cls(box.workspace.root, only_where_it_pays=box.settings.spare_files is None)

    def take(self, path: str) -> int | None:
        """Move a spare file to `path` (a new name beside a commit's target) and open it for
        writing: its descriptor, of an empty file (the caller writes it, sets its mode, and
        closes it); None when the pool has none to give (empty, on another filesystem than `path`,
        or unusable), and the caller makes a new file."""
        with self._lock:
            directory = self._directory()
            if directory is None:
                return None
            if not self._names and not self._scanned:
                self._scan(directory)
            while self._names:
                name = self._names.pop()
                try:
                    if not _is_owned_sole_regular_file(os.lstat(name, dir_fd=directory)):
                        continue  # not a spare: left where it is, never looked at again
                    os.rename(name, path, src_dir_fd=directory)
                except FileNotFoundError:
                    continue  # another pool took it
                except OSError:
                    self._names.append(name)  # another filesystem, say: it stays a spare
                    return None
                break
            else:
                return None
        opened = _open_owned_sole_regular_file(path)
        fd = None
        if opened is not None:
            fd, size = opened
            try:
                if size:  # not emptied by a pool: someone else wrote it
                    os.ftruncate(fd, 0)
            except OSError:
                os.close(fd)
                fd = None
        if fd is None:
            # Not a spare after all (extended attributes, or swapped for something else since
            # it was looked at): put back under a name no pool takes (a directory cannot be
            # unlinked, and nothing found here is deleted).
            with self._lock, contextlib.suppress(OSError):
                if self._fd is not None:  # not closed meanwhile
                    name = f".not-a-spare-{self._prefix}-{next(self._numbers)}"
                    os.rename(path, name, dst_dir_fd=self._fd)
            return None
        self.taken += 1
        return fd

    def give(self, path: str) -> bool:
        """Keep the file at `path` (an old file a commit swapped out, or a deleted one) as a
        spare, emptied: True; False when the pool cannot (full, closed, another filesystem,
        not a regular file of this user with no other name and no extended attributes), and
        the caller removes it as before."""
        with self._lock:
            directory = self._directory()
            if directory is None or len(self._names) >= MAX_SPARES:
                return False
        opened = _open_owned_sole_regular_file(path)
        if opened is None:
            return False
        file, _size = opened
        try:
            os.ftruncate(file, 0)  # the pool keeps no old contents
        except OSError:
            return False
        finally:
            os.close(file)
        with self._lock:
            # the descriptor again: a pool closed meanwhile has none (its number may name
            # another directory by now)
            directory = self._fd
            if directory is None:
                return False
            name = f"{self._prefix}-{next(self._numbers)}"
            try:
                os.rename(path, name, dst_dir_fd=directory)
            except OSError:
                return False
            self._names.append(name)
            self.kept += 1
        return True

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._unusable = True

    def _directory(self) -> int | None:
        """The spare directory (made, with `.agentd`, on first use), or None. Holds the lock."""
        if self._ask_filesystem:
            self._ask_filesystem = False
            self._unusable = not creating_files_is_slow(self.root)
        if self._fd is None and not self._unusable and _SUPPORTED:
            try:
                self._fd = _open_spare_directory(self.root)
            except OSError:
                self._unusable = True
        return self._fd

    def _scan(self, fd: int) -> None:
        """The spares already in the directory (left by an earlier daemon or another pool).
        Holds the lock."""
        self._scanned = True
        with contextlib.suppress(OSError):
            self._names = [
                entry.name for entry in os.scandir(fd) if not entry.name.startswith(".")
            ][:MAX_SPARES]


def _open_spare_directory(root: Path) -> int:
    """`<root>/.agentd/spare`, made if missing, each part below the workspace's root opened
    without following links."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        agentd_fd = _open_or_make(AGENTD_DIR, root_fd)
        try:
            ignore_in_git(agentd_fd)
            return _open_or_make(SPARE_DIR, agentd_fd)
        finally:
            os.close(agentd_fd)
    finally:
        os.close(root_fd)


def _open_or_make(name: str, parent_fd: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, _DIRECTORY, dir_fd=parent_fd)


def _open_owned_sole_regular_file(path: str) -> tuple[int, int] | None:
    """`path` opened for writing, and its size, if, opened without following a link, it is a
    regular file of this user with no other name (writing it then changes nothing else) and
    no extended attributes (an ACL or a security label of the file it was would be the next
    file's); else None."""
    try:
        fd = os.open(path, _SPARE)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if _is_owned_sole_regular_file(info) and not os.listxattr(fd):
            return fd, info.st_size
    except OSError:
        pass
    os.close(fd)
    return None


def _is_owned_sole_regular_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid == os.geteuid()
