"""File changes made by any means: the workspace compared with itself after each tool call.

`apply_patch`, `write_file` and `edit_file` report their own edits; everything else that
changes the workspace (commands, code generators, `git checkout`, formatters, a dev server
writing files in the background) is found by `WorkspaceScanner.rescan()`, which walks the
workspace, compares each file's (size, mtime, inode) with the previous walk and returns the
files created, modified, deleted and moved since. The run calls it in a worker thread after
each tool call, so each change is attributed to the call during which it happened.

Why a scan after each call rather than a watcher (inotify/FSEvents through `watchfiles`):
a run only needs to know what changed by the time a call's result is reported, and a scan
then is exact and attributable, costs nothing while the agent thinks, and skips ignored
trees entirely (a watcher must still set up a watch per directory, `node_modules` included,
and queue an event per file an `npm install` writes). benchmarks/workspace_bench.py
measures the scan's cost beside the run's own work.

What is skipped: `.git` and other VCS directories, `node_modules`, virtualenvs (any
directory holding a `pyvenv.cfg`), build and tool caches (`DEFAULT_SKIP_DIRS`, configurable
through `ToolSettings.workspace_skip_dirs`), and whatever the workspace's `.gitignore` files
ignore (each applies below its own directory, with git's pattern rules via `pathspec`).

Diffs: a text file (UTF-8 without NUL bytes) up to `MAX_DIFF_BYTES` gets a unified diff
against its previous content, which the scanner keeps for such files up to a total of
`BASELINE_BUDGET_BYTES`; binary and larger files get a note instead. Bursts are coalesced:
when one rescan finds more than `MAX_EVENTS_PER_SCAN` changes, they are reported one event
per (action, directory) with a count, so a generator writing 5,000 files yields a handful
of events, while every path is still listed in `Changes.paths`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pathspec import GitIgnoreSpec

from tools.base import DEFAULT_SKIP_DIRS
from tools.diffs import diff_texts

__all__ = [
    "DEFAULT_SKIP_DIRS",
    "Changes",
    "FileChange",
    "WorkspaceScanner",
]

Action = Literal["create", "modify", "delete", "move"]

MAX_DIFF_BYTES = 256 * 1024
BASELINE_BUDGET_BYTES = 32 * 1024 * 1024
MAX_EVENTS_PER_SCAN = 100
# A workspace with more files than this is not scanned (a home directory, a disk image
# unpacked by mistake): the run says so once instead of spending seconds per call.
MAX_FILES = 200_000


@dataclass(frozen=True)
class FileChange:
    """One `file_edit`: `path` in the documented `/src/App.tsx` form (workspace-relative,
    leading slash); `count` > 1 for a coalesced group, whose `path` is their directory."""

    path: str
    action: Action
    diff: str = ""
    moved_from: str | None = None
    note: str | None = None
    count: int = 1

    def payload(self) -> dict[str, object]:
        body: dict[str, object] = {"path": self.path, "action": self.action, "diff": self.diff}
        if self.moved_from is not None:
            body["movedFrom"] = self.moved_from
        if self.note is not None:
            body["note"] = self.note
        if self.count > 1:
            body["count"] = self.count
        return body


@dataclass
class Changes:
    """What one rescan found: the events to emit, and every path changed, in order (moves
    as (new path, old path)) for the run's file list."""

    events: list[FileChange] = field(default_factory=list)
    paths: list[tuple[str, Action, str | None]] = field(default_factory=list)


@dataclass
class _Entry:
    size: int
    mtime_ns: int
    ino: int
    content: bytes | None  # kept for the next diff (text up to MAX_DIFF_BYTES, in budget)


class WorkspaceScanner:
    """Compares the workspace with its previous walk. Blocking: use from a worker thread.

    Create it, call `baseline()` once (the state the run starts from), then `rescan()`."""

    def __init__(
        self,
        root: Path | str,
        *,
        skip_dirs: Iterable[str] = DEFAULT_SKIP_DIRS,
        max_events: int = MAX_EVENTS_PER_SCAN,
        max_files: int = MAX_FILES,
    ) -> None:
        self.root = Path(root)
        self.skip_dirs = frozenset(skip_dirs)
        self.max_events = max_events
        self.max_files = max_files
        self.too_large = False  # the workspace exceeded max_files: scanning stopped
        self._entries: dict[str, _Entry] = {}
        self._kept_bytes = 0

    def baseline(self) -> None:
        self._entries, self._kept_bytes = {}, 0
        walked = self._walk()
        if walked is None:
            return
        for rel, st in walked.items():
            self._entries[rel] = self._entry(rel, st, self._read_for_baseline(rel, st))

    def rescan(self, *, already_reported: Iterable[str] = ()) -> Changes:
        """The changes since the last walk. `already_reported` paths (a tool's own
        `file_edit` events, `/src/a.txt` form) are taken in without being reported again."""
        walked = self._walk()
        if walked is None:
            return Changes()
        skip = {p.lstrip("/") for p in already_reported}
        old = self._entries
        created = [rel for rel in walked if rel not in old]
        deleted = [rel for rel in old if rel not in walked]
        modified = [
            rel
            for rel, st in walked.items()
            if rel in old and (old[rel].size, old[rel].mtime_ns) != (st.st_size, st.st_mtime_ns)
        ]
        changes: list[FileChange] = []
        # A file that disappeared and one that appeared with the same inode: a move.
        gone_by_inode = {old[rel].ino: rel for rel in deleted}
        moved_from: dict[str, str] = {}
        for rel in created:
            source = gone_by_inode.pop(walked[rel].st_ino, None)
            if source is not None:
                moved_from[rel] = source
        moved_sources = set(moved_from.values())
        new_entries = dict(old)
        for rel in deleted:
            entry = new_entries.pop(rel)
            self._release(entry)
            if rel not in moved_sources and rel not in skip:
                changes.append(FileChange(_wire(rel), "delete"))
        for rel in created:
            st = walked[rel]
            content = self._read(rel, st)
            if rel in moved_from:
                source_entry = old[moved_from[rel]]
                if rel not in skip:
                    diff, note = self._diff(source_entry, st, content, rel, moved_from[rel])
                    changes.append(
                        FileChange(_wire(rel), "move", diff, _wire(moved_from[rel]), note)
                    )
            elif rel not in skip:
                diff, note = self._diff(None, st, content, rel)
                changes.append(FileChange(_wire(rel), "create", diff, note=note))
            new_entries[rel] = self._entry(rel, st, content)
        for rel in modified:
            st = walked[rel]
            content = self._read(rel, st)
            previous = new_entries[rel]
            if rel not in skip and not (content is not None and content == previous.content):
                diff, note = self._diff(previous, st, content, rel)
                changes.append(FileChange(_wire(rel), "modify", diff, note=note))
            self._release(previous)
            new_entries[rel] = self._entry(rel, st, content)
        self._entries = new_entries
        paths = [(c.path, c.action, c.moved_from) for c in changes]
        return Changes(self._coalesce(changes), paths)

    # -- walking ----------------------------------------------------------------------

    def _walk(self) -> dict[str, os.stat_result] | None:
        """Every regular file and symlink not skipped or ignored, by relative path."""
        if self.too_large:
            return None
        found: dict[str, os.stat_result] = {}
        stack: list[tuple[str, list[tuple[str, GitIgnoreSpec]]]] = [("", [])]
        while stack:
            rel_dir, ignores = stack.pop()
            directory = self.root / rel_dir if rel_dir else self.root
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            names = {e.name for e in entries}
            if rel_dir and "pyvenv.cfg" in names:
                continue  # a virtualenv
            if ".gitignore" in names:
                spec = _read_ignore(directory / ".gitignore")
                if spec is not None:
                    ignores = [*ignores, (rel_dir, spec)]
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    st = None if is_dir else entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if entry.name in self.skip_dirs or _ignored(ignores, rel, True):
                        continue
                    stack.append((rel, ignores))
                    continue
                assert st is not None
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                if _ignored(ignores, rel, False):
                    continue
                found[rel] = st
                if len(found) > self.max_files:
                    self.too_large = True
                    self._entries, self._kept_bytes = {}, 0
                    return None
        return found

    # -- contents ---------------------------------------------------------------------

    def _read(self, rel: str, st: os.stat_result) -> bytes | None:
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DIFF_BYTES:
            return None
        try:
            with open(self.root / rel, "rb") as f:
                return f.read(MAX_DIFF_BYTES + 1)
        except OSError:
            return None

    def _read_for_baseline(self, rel: str, st: os.stat_result) -> bytes | None:
        if self._kept_bytes + st.st_size > BASELINE_BUDGET_BYTES:
            return None
        return self._read(rel, st)

    def _entry(self, rel: str, st: os.stat_result, content: bytes | None) -> _Entry:
        keep = content is not None and _is_text(content)
        if keep and content is not None and self._kept_bytes + len(content) > BASELINE_BUDGET_BYTES:
            keep = False
        kept = content if keep else None
        if kept is not None:
            self._kept_bytes += len(kept)
        return _Entry(st.st_size, st.st_mtime_ns, st.st_ino, kept)

    def _release(self, entry: _Entry) -> None:
        if entry.content is not None:
            self._kept_bytes -= len(entry.content)

    def _diff(
        self,
        previous: _Entry | None,
        st: os.stat_result,
        content: bytes | None,
        rel: str,
        old_rel: str | None = None,
    ) -> tuple[str, str | None]:
        """(unified diff, note): the note says why there is no diff."""
        if stat.S_ISLNK(st.st_mode):
            return "", "symbolic link"
        if st.st_size > MAX_DIFF_BYTES:
            return "", f"large file ({st.st_size} bytes): no diff"
        if content is None:
            return "", "could not be read"
        if not _is_text(content):
            return "", "binary file: no diff"
        if previous is not None and previous.content is None:
            if previous.size > MAX_DIFF_BYTES:
                return "", f"was a large file ({previous.size} bytes): no diff"
            return "", "previous content not kept (binary, or beyond the diff budget): no diff"
        old_text = previous.content.decode() if previous is not None and previous.content else None
        if previous is not None and old_text is None:
            old_text = ""
        diff = diff_texts(old_text, content.decode(), rel, old_path=old_rel)
        return diff.text, None

    # -- bursts -----------------------------------------------------------------------

    def _coalesce(self, changes: list[FileChange]) -> list[FileChange]:
        """At most about `max_events` events: grouped by action and directory when more."""
        if len(changes) <= self.max_events:
            return changes
        for depth in (None, 3, 2, 1, 0):
            groups: dict[tuple[Action, str], list[FileChange]] = {}
            for change in changes:
                groups.setdefault((change.action, _directory(change.path, depth)), []).append(
                    change
                )
            if len(groups) <= self.max_events or depth == 0:
                break
        out = []
        for (action, directory), members in groups.items():
            if len(members) == 1:
                out.append(members[0])
                continue
            out.append(
                FileChange(
                    directory,
                    action,
                    note=f"{len(members)} files {_past(action)} under {directory}",
                    count=len(members),
                )
            )
        return out


def _wire(rel: str) -> str:
    return "/" + rel


def _directory(path: str, depth: int | None) -> str:
    parts = path.strip("/").split("/")[:-1]
    if depth is not None:
        parts = parts[:depth]
    return "/" + "/".join(parts)


def _past(action: Action) -> str:
    return {"create": "created", "modify": "modified", "delete": "deleted", "move": "moved"}[action]


def _is_text(content: bytes) -> bool:
    if b"\0" in content:
        return False
    try:
        content.decode()
    except UnicodeDecodeError:
        return False
    return True


def _read_ignore(path: Path) -> GitIgnoreSpec | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return GitIgnoreSpec.from_lines(lines)


def _ignored(ignores: list[tuple[str, GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    for base, spec in ignores:
        below = rel[len(base) + 1 :] if base else rel
        if spec.match_file(below + "/" if is_dir else below):
            return True
    return False
