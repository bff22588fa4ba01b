"""Path confinement: every path a tool touches must resolve inside the workspace root."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from tools.utf8 import from_printable


class PathOutsideWorkspace(ValueError):
    """A path argument resolves (possibly through a symlink) outside the workspace."""


class InvalidPath(ValueError):
    """A path argument no file can have (a NUL byte in it)."""


# The daemon's own directory in a workspace: thread rollouts (runtime/rollout.py), spare files
# (tools/spares.py). Made with a `.gitignore` of `*`, so a workspace that is a git repository
# keeps a clean `git status`; the run's file-change scan skips it (tools.base.DEFAULT_SKIP_DIRS).
AGENTD_DIR = ".agentd"
AGENTD_GITIGNORE = (
    "# agentd's own files (thread rollouts, spare files); not part of the project\n*\n"
)


def ignore_in_git(agentd_fd: int) -> None:
    """Blocking: `.gitignore` (AGENTD_GITIGNORE) in the `.agentd` directory open at
    `agentd_fd`, unless it has one. Made exclusively and without following a link: the
    workspace's commands may have put anything there, and a link must not be written through."""
    try:
        fd = os.open(
            ".gitignore",
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=agentd_fd,
        )
    except FileExistsError:
        return
    try:
        os.write(fd, AGENTD_GITIGNORE.encode())
    finally:
        os.close(fd)


_OPEN_SAFELY = os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


def _as_listed(path: str) -> str:
    """`path`, or the file it names as tools and APIs show names that are not UTF-8 (each
    undecodable byte as `\\xNN`, tools/utf8.py) when only that file exists: the name a listing
    showed opens the file it showed."""
    if "\\x" not in path:
        return path
    named = from_printable(path)
    if named != path and not os.path.lexists(path) and os.path.lexists(named):
        return named
    return path


# The write lock of each workspace root in this process (see `Workspace.write_lock`), kept
# while a Workspace of that root exists. Process-wide by necessity: the calls it orders come
# through different toolboxes (two runs on one workspace, POST /v1/tools/*), each with its own
# Workspace, possibly on different event loops.
_write_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_write_locks_guard = threading.Lock()


def _write_lock(root: str) -> threading.Lock:
    with _write_locks_guard:
        lock = _write_locks.get(root)
        if lock is None:
            lock = _write_locks[root] = threading.Lock()
        return lock


class Workspace:
    """The directory tree the agent may read and write.

    `resolve()` turns a model-supplied path (relative to the root, or absolute) into a real
    path and refuses anything that ends up outside the root, including via `..` or symlinks.

    `write_lock` is held by every tool that writes workspace files (write_file, edit_file,
    apply_patch) from before it reads a file until its write is done, so that two such calls
    on one workspace take turns instead of one overwriting the other's change. It is the
    same lock for every Workspace of the same root in this process. A threading lock, taken
    in the worker thread that does the reading and writing: those take milliseconds, and the
    toolboxes sharing it need not share an event loop. (A workspace inside another one has
    a lock of its own; there, and against writers that are not these tools, the commit's
    check of what it read, `commit_writes(unchanged=...)`, fails a call rather than let it
    overwrite a change it did not see.)
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.realpath(root))
        # string forms for the checks made on every path (pathlib objects cost more than
        # the realpath itself on a many-file patch)
        self._root = os.fspath(self.root)
        self._prefix = self._root if self._root.endswith(os.sep) else self._root + os.sep
        self.write_lock = _write_lock(self._root)

    def resolve(self, path: str | os.PathLike[str] | None, *, must_exist: bool = False) -> Path:
        raw, joined = self._joined(path)
        # realpath follows every symlink that exists, including in the parent chain of a
        # path that does not exist yet, so a new file under a symlinked dir is checked too.
        real = os.path.realpath(joined)
        if not self._inside(real):
            raise self._outside(raw, real)
        resolved = Path(real)
        if must_exist and not os.path.exists(real):
            raise FileNotFoundError(f"{self.relative(resolved)} does not exist in the workspace")
        return resolved

    def open(self, path: str | os.PathLike[str] | None, flags: int) -> tuple[int, Path]:
        """`os.open` of the file `resolve(path)` names: the descriptor and its real path.

        The path is checked on the file the kernel opened (its name read back from
        /proc/self/fd), which costs one readlink where `realpath` costs an lstat per path
        component, and leaves no moment between the check and the open (which is made with
        O_NONBLOCK and O_NOCTTY: it must not wait on a FIFO). A file outside the
        workspace is closed and refused; a failed open raises after `resolve` has had its
        say, so a path outside the workspace is refused as such even when it does not exist.
        Without /proc this is `resolve` and then `os.open`.
        """
        raw, joined = self._joined(path)
        try:
            # Opened before it is checked, so opening must not wait or take over anything:
            # a FIFO's open would wait for a writer, a terminal's make itself the controlling
            # terminal. (Reads and writes of regular files ignore O_NONBLOCK.)
            fd = os.open(joined, flags | _OPEN_SAFELY)
        except OSError:
            self.resolve(path)
            raise
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            real = None
        if real is None or not real.startswith("/") or real.endswith(" (deleted)"):
            # no /proc, not a path (a pipe), or the file went away meanwhile: the slow way
            os.close(fd)
            resolved = self.resolve(path)
            return os.open(resolved, flags | _OPEN_SAFELY), resolved
        if not self._inside(real):
            os.close(fd)
            raise self._outside(raw, real)
        return fd, Path(real)

    def _joined(self, path: str | os.PathLike[str] | None) -> tuple[str, str]:
        """The path as given (for messages) and joined to the root, `~` expanded."""
        raw = os.fspath(path) if path not in (None, "") else "."
        if "\0" in raw:
            raise InvalidPath(
                f"path {raw!r} contains a NUL byte (\\u0000), which no file name can hold; "
                "remove it"
            )
        # os.path.expanduser, as a shell: `~nobody-here/x` stays as it is (Path.expanduser
        # raises RuntimeError for a user that does not exist)
        expanded = os.path.expanduser(raw) if raw.startswith("~") else raw
        # (os.path.join keeps `expanded` as it is when it is absolute)
        return raw, _as_listed(os.path.join(self._root, expanded))

    def _outside(self, raw: str, real: str) -> PathOutsideWorkspace:
        return PathOutsideWorkspace(
            f"path {raw!r} resolves to {real}, which is outside the workspace {self.root}; "
            "use a path relative to the workspace root"
        )

    def contains(self, real: Path) -> bool:
        return self._inside(os.fspath(real))

    def _inside(self, real: str) -> bool:
        return real == self._root or real.startswith(self._prefix)

    def relative(self, real: Path) -> str:
        """The workspace-relative spelling of a resolved path, as shown to models and users."""
        text = os.fspath(real)
        if text == self._root:
            return "."
        if not text.startswith(self._prefix):
            raise ValueError(f"{text!r} is not inside the workspace {self._root!r}")
        return text[len(self._prefix) :].replace(os.sep, "/")
