"""The rollout file: a thread's persisted events as JSON lines inside the workspace.

`<workspace>/.agentd/threads/<threadId>.jsonl` holds one persisted thread event per line
(`runtime.thread_events.PersistedThreadEvent`, compact JSON), in sequence order. The workspace
is what the platform mounts for durable storage across sandboxes, so a new daemon with an empty
state dir and the same workspace continues a thread from this file alone.

Writes are plain appends (one `write` per batch of events) that reach the OS before the events
are announced; `sync()` (an fsync, called at run boundaries) makes them durable against power
loss too. A crash mid-write can leave a torn last line (no newline at the end): readers skip
it, it is reported once, and it is cut off before the next append, so it never corrupts what
follows. A complete line that does not parse is reported and skipped, never fatal.

All file I/O runs in worker threads (the workspace may be a network mount), one call at a
time per file, so appends keep their order.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
from pydantic import ValidationError

from runtime.thread_events import PersistedThreadEvent
from tools.workspace import AGENTD_DIR, ignore_in_git

log = logging.getLogger("agentd.rollout")

ROLLOUT_DIR = Path(AGENTD_DIR) / "threads"
_THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BLOCK = 64 * 1024

T = TypeVar("T")


def valid_thread_id(thread_id: str) -> bool:
    """Whether `thread_id` can name a rollout file (letters, digits, `_`, `-`, `.`; at most
    128 characters; no leading dot), so no id can reach outside the rollout directory."""
    return bool(_THREAD_ID.match(thread_id))


def rollout_path(workspace: Path, thread_id: str) -> Path:
    """Where the rollout of `thread_id` lives in `workspace`. ValueError for an id that
    cannot name a file."""
    if not valid_thread_id(thread_id):
        raise ValueError(f"thread id {thread_id!r} cannot name a rollout file")
    return Path(workspace) / ROLLOUT_DIR / f"{thread_id}.jsonl"


@dataclass(frozen=True)
class RolloutDamage:
    """Something in a rollout file that is not a complete event line: a torn last line
    (`torn=True`, cut off before the next append) or a line that does not parse (skipped)."""

    path: Path
    line: int  # 1-based; 0 when found reading backwards (the number is not known)
    offset: int  # byte offset of the line
    length: int
    torn: bool
    reason: str

    def describe(self) -> str:
        what = "torn last line" if self.torn else "unreadable line"
        return (
            f"{self.path}:{self.line}: {what} ({self.length} bytes at {self.offset}): {self.reason}"
        )


class RolloutFile:
    """One thread's rollout file. Create it for a path; nothing is touched until used."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.damage: list[RolloutDamage] = []
        self._fd: int | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._reported: set[tuple[int, bool]] = set()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter)

    # -- reading -------------------------------------------------------------------------

    async def exists(self) -> bool:
        return await self._run(self.path.is_file)

    async def read(self, after: int = 0) -> list[PersistedThreadEvent]:
        """The events with sequence > `after`, in file order (damaged lines reported and
        skipped; a missing file reads as empty)."""
        return await self._run(lambda: self._read_sync(after))

    async def last(self) -> PersistedThreadEvent | None:
        """The last complete, readable event (reading backwards from the end)."""
        return await self._run(self._last_sync)

    def _read_sync(self, after: int) -> list[PersistedThreadEvent]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        events: list[PersistedThreadEvent] = []
        offset = 0
        number = 0
        while offset < len(data):
            number += 1
            end = data.find(b"\n", offset)
            if end < 0:
                self._report(number, offset, len(data) - offset, True, "no newline at the end")
                break
            line = data[offset:end]
            if line.strip():
                event = self._parse(line, number, offset)
                if event is not None and event.sequence > after:
                    events.append(event)
            offset = end + 1
        return events

    def _last_sync(self) -> PersistedThreadEvent | None:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                window = _BLOCK
                while True:
                    start = max(0, size - window)
                    f.seek(start)
                    data = f.read(size - start)
                    complete = data.rfind(b"\n") + 1  # 0: no complete line in the window
                    if complete < len(data) and (complete > 0 or start == 0):
                        tail = len(data) - complete
                        self._report(0, start + complete, tail, True, "no newline at the end")
                    lines = data[:complete].split(b"\n")[:-1]
                    first = 0 if start == 0 else 1  # the window may begin mid-line
                    offset = start + complete
                    for line in reversed(lines[first:]):
                        offset -= len(line) + 1
                        if line.strip():
                            event = self._parse(line, 0, offset)
                            if event is not None:
                                return event
                    if start == 0:
                        return None
                    window *= 4
        except FileNotFoundError:
            return None

    def _parse(self, line: bytes, number: int, offset: int) -> PersistedThreadEvent | None:
        try:
            return PersistedThreadEvent.from_json(line)
        except (ValidationError, ValueError) as exc:
            reason = str(exc).splitlines()[0]
            self._report(number, offset, len(line), False, reason)
            return None

    def _report(self, number: int, offset: int, length: int, torn: bool, reason: str) -> None:
        key = (offset, torn)
        if key in self._reported:
            return
        self._reported.add(key)
        damage = RolloutDamage(self.path, number, offset, length, torn, reason)
        self.damage.append(damage)
        log.warning("rollout %s", damage.describe())

    # -- writing -------------------------------------------------------------------------

    async def append(self, events: Sequence[PersistedThreadEvent]) -> int:
        """Append the events as lines, in one write (after cutting off a torn last line the
        first time the file is opened for writing). Returns the file's size before the write:
        `truncate` there undoes it."""
        data = "".join(event.json_text + "\n" for event in events).encode()
        return await self._run(lambda: self._append_sync(data))

    async def truncate(self, size: int) -> None:
        """Cut the file back to `size` bytes (undo an append whose events were not stored)."""

        def cut() -> None:
            fd = self._open_sync()
            os.ftruncate(fd, size)

        await self._run(cut)

    async def sync(self) -> None:
        """Make every appended line durable (fsync), if the file is open."""
        await self._run(self._sync_sync)

    async def close(self) -> None:
        """fsync and close; the next append opens the file again."""
        await self._run(self._close_sync)

    def _append_sync(self, data: bytes) -> int:
        fd = self._open_sync()
        start = os.fstat(fd).st_size  # one writer per file: nothing else appends meanwhile
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(fd, view)
                except InterruptedError:
                    continue
                view = view[written:]
        except OSError:
            # A write cut short (a full disk) leaves no torn line behind.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        return start

    def _open_sync(self) -> int:
        if self._fd is not None:
            return self._fd
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _ignore_in_git(self.path.parent.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            self._cut_torn_tail(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _cut_torn_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        position = size
        keep = 0
        while position > 0:
            step = min(_BLOCK, position)
            position -= step
            block = os.pread(fd, step, position)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = position + newline + 1
                break
        self._report(0, keep, size - keep, True, "no newline at the end")
        log.warning("rollout %s: cutting off the torn last line (%d bytes)", self.path, size - keep)
        os.ftruncate(fd, keep)
        _fsync(fd)

    def _sync_sync(self) -> None:
        if self._fd is not None:
            _fsync(self._fd)

    def _close_sync(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _fsync(fd)
        finally:
            os.close(fd)

    async def delete(self) -> bool:
        """Close and remove the file. False if there was none."""

        def remove() -> bool:
            self._close_sync()
            try:
                self.path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await self._run(remove)


def _ignore_in_git(directory: Path) -> None:
    """Keep the daemon's files out of a workspace that is a git repository (`git status`
    stays the user's): a `.gitignore` of `*` in the directory, unless it has one."""
    if directory.name != ROLLOUT_DIR.parent.name:
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ignore_in_git(fd)
    finally:
        os.close(fd)


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a file system that cannot fsync (some FUSE mounts)
            raise


__all__ = ["ROLLOUT_DIR", "RolloutDamage", "RolloutFile", "rollout_path", "valid_thread_id"]
