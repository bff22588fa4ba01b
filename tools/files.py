"""The file tools: read_file, write_file, edit_file, list_dir, glob and grep.

All paths are confined to the workspace (`ToolContext.resolve`). Everything that touches the
disk runs in a worker thread. Edits go through `tools.textfile.commit_writes` (temp file and
rename, mode kept) and emit a `file_edit` event with the unified diff of the change.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, TypeVar

import anyio
import anyio.abc
import regex
from anyio.streams.buffered import BufferedByteReceiveStream
from pydantic import Field
from wcmatch import glob as wcglob

from tools.base import (
    NO_SPACE_ERRNOS,
    Tool,
    ToolArgs,
    ToolContext,
    ToolError,
    ToolResult,
    disk_full_error,
)
from tools.diffs import diff_texts
from tools.patch import LEVELS, LineIndex
from tools.spares import SparePool, spares_for
from tools.textfile import (
    BINARY_SNIFF_BYTES,
    BOM,
    BinaryFileError,
    FileChangedError,
    FileStamp,
    FileWrite,
    TextFile,
    changed_meanwhile,
    commit_writes,
    decode_text,
    file_stamp,
    looks_binary,
)
from tools.workspace import Workspace

DEFAULT_READ_LIMIT = 2000
MAX_LINE_CHARS = 2000
MAX_READ_BYTES = 100_000
MAX_RAW_LINE_BYTES = 64 * 1024
MAX_EDIT_BYTES = 64 * 1024 * 1024
MAX_LIST_ENTRIES = 1000
MAX_GLOB_RESULTS = 1000
MAX_GREP_LINE_CHARS = 500
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj"})


def _path_key(rel: str) -> tuple[str, ...]:
    """Sort order for paths: component by component, as a directory walk visits them."""
    return tuple(rel.split("/"))


def _join(prefix: str, rel: str) -> str:
    return rel if prefix in ("", ".") else f"{prefix}/{rel}"


async def _emit_edit(ctx: ToolContext, rel: str, action: str, diff: str) -> None:
    await ctx.emit("file_edit", path=rel, action=action, diff=diff)


def _os_error(real: Path, rel: str, exc: OSError) -> ToolError:
    """The tool error for a file-system call on `rel` (`real` resolved) that failed with `exc`:
    what is wrong, in words the model can act on, and a code for it. The message names the
    part of the path at fault where it is not the file itself."""
    number = exc.errno
    if number in NO_SPACE_ERRNOS:
        return disk_full_error(rel, exc)
    if number == errno.ENOENT:  # a directory on the path went away meanwhile
        return ToolError(f"{rel}: {exc.strerror or exc}", code="not_found")
    if number == errno.ENOTDIR:
        blocker = _part_at_fault(real, rel, errno.ENOTDIR)
        what = f"{blocker} is not a directory" if blocker else "a part of it is not a directory"
        return ToolError(
            f"{rel}: {what}, so no file can be at this path; choose another path",
            code="invalid_path",
        )
    if number == errno.ENAMETOOLONG:
        longest = max(len(os.fsencode(part)) for part in rel.split("/"))
        if longest > 255:
            what = f"a file name in it has {longest} bytes; most file systems allow 255"
        else:
            what = f"the whole path has {len(os.fsencode(real))} bytes, more than the system allows"
        return ToolError(
            f"{_abbreviated(rel)}: name too long ({what}); use a shorter name or a shallower path",
            code="invalid_path",
        )
    if number == errno.ELOOP:
        link = _part_at_fault(real, rel, errno.ELOOP) or rel
        return ToolError(
            f"{rel}: too many levels of symbolic links ({link} is a symlink that leads back to "
            "itself, or through too many others); use the real path, or fix the link",
            code="invalid_path",
        )
    if number in (errno.EACCES, errno.EPERM):
        return ToolError(
            f"{rel}: permission denied; the file or a directory on its path does not let "
            "agentd's user read or write it (ls -l shows the permissions)",
            code="permission_denied",
        )
    return ToolError(f"{rel}: {exc.strerror or exc}", code="io_error")


def _part_at_fault(real: Path, rel: str, number: int) -> str | None:
    """The leading part of `rel` that makes a call on it fail with `number`: for ENOTDIR the
    first file that stands where a directory must be, for ELOOP the first symlink that loops.
    None if there is none (any more). Only called after a failure, so the stats are cheap."""
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        path = real.parents[len(parts) - depth - 1] if depth < len(parts) else real
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            if number == errno.ELOOP and exc.errno == errno.ELOOP:
                return "/".join(parts[:depth])
            return None
        if number == errno.ENOTDIR and depth < len(parts) and not stat.S_ISDIR(mode):
            return "/".join(parts[:depth])
    return None


def _abbreviated(rel: str, keep: int = 60) -> str:
    """`rel` cut in the middle past 2 * `keep` characters (a name too long to be a name)."""
    if len(rel) <= 2 * keep:
        return rel
    return f"{rel[:keep]}…[{len(rel) - 2 * keep} characters]…{rel[-keep:]}"


# ---------------------------------------------------------------------------------------------
# read_file


class ReadFileArgs(ToolArgs):
    path: str = Field(description="File path, relative to the workspace root.")
    offset: int | None = Field(
        default=None, ge=1, description="First line to show (1-based). Default 1."
    )
    limit: int | None = Field(
        default=None, ge=1, description=f"How many lines to show. Default {DEFAULT_READ_LIMIT}."
    )


@dataclass
class _Page:
    lines: list[str]
    first: int
    last: int
    total: int
    stopped_for_size: bool
    cut_lines: int
    crlf: bool


def _iter_raw_lines(handle: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """Lines (at most MAX_RAW_LINE_BYTES of each, ending removed) and whether one was cut."""
    while True:
        chunk = handle.readline(MAX_RAW_LINE_BYTES)
        if not chunk:
            return
        if chunk.endswith(b"\n") or len(chunk) < MAX_RAW_LINE_BYTES:
            yield chunk, False
            continue
        rest = chunk
        while rest and not rest.endswith(b"\n"):  # skip the remainder of a huge line
            rest = handle.readline(MAX_RAW_LINE_BYTES)
        yield chunk, True


def _read_page(path: Path, rel: str, offset: int, limit: int) -> _Page:
    with open(path, "rb") as handle:
        if looks_binary(handle.read(BINARY_SNIFF_BYTES)):
            raise BinaryFileError(
                f"{rel} is a binary file (it contains NUL bytes); read_file only shows text"
            )
        handle.seek(0)
        shown: list[str] = []
        size = 0
        total = 0
        stopped = False
        cut = 0
        crlf = False
        for number, (raw, oversized) in enumerate(_iter_raw_lines(handle), 1):
            total = number
            if number < offset or len(shown) >= limit or stopped:
                continue
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if raw.endswith(b"\r\n"):
                crlf, raw = True, raw[:-2]
            elif raw.endswith(b"\n"):
                raw = raw[:-1]
            if b"\0" in raw:
                raise BinaryFileError(
                    f"{rel} is a binary file (line {number} contains NUL bytes); read_file only "
                    "shows text"
                )
            try:
                text = raw.decode("utf-8", errors="ignore" if oversized else "strict")
            except UnicodeDecodeError:
                raise BinaryFileError(
                    f"{rel} is not UTF-8 text (line {number} has undecodable bytes); it is "
                    "binary or in another encoding"
                ) from None
            if oversized or len(text) > MAX_LINE_CHARS:
                cut += 1
                text = text[:MAX_LINE_CHARS] + " …[line truncated]"
            entry = f"{number:>6}\t{text}"
            if shown and size + len(entry) + 1 > MAX_READ_BYTES:
                stopped = True
                continue
            shown.append(entry)
            size += len(entry.encode("utf-8")) + 1
    last = offset + len(shown) - 1
    return _Page(shown, offset, last, total, stopped, cut, crlf)


class ReadFile(Tool):
    name = "read_file"
    description = (
        "Read a text file. Lines are numbered like `cat -n` (number, tab, line); the numbers "
        "are not part of the file. Shows up to 2000 lines from `offset`; page through longer "
        "files with `offset` and `limit`."
    )
    Args = ReadFileArgs
    read_only = True

    async def run(self, args: ReadFileArgs, ctx: ToolContext) -> ToolResult:
        real = ctx.resolve(args.path, must_exist=True)
        rel = ctx.workspace.relative(real)
        if real.is_dir():
            raise ToolError(f"{rel} is a directory; use list_dir to see what it contains")
        _refuse_special(real, rel)
        offset = args.offset or 1
        limit = args.limit or DEFAULT_READ_LIMIT
        try:
            page = await anyio.to_thread.run_sync(_read_page, real, rel, offset, limit)
        except OSError as exc:
            raise _os_error(real, rel, exc) from None
        data: dict[str, Any] = {"path": rel, "totalLines": page.total}
        if page.total == 0:
            return ToolResult(output=f"[{rel} is empty]", data=data)
        if offset > page.total:
            raise ToolError(
                f"offset {offset} is past the end of {rel}, which has {page.total} lines"
            )
        notes = []
        if page.stopped_for_size:
            notes.append(
                f"[Output truncated at {MAX_READ_BYTES // 1000} KB: showing lines "
                f"{page.first}-{page.last} of {page.total}. Call read_file with "
                f"offset={page.last + 1} to continue.]"
            )
        elif page.last < page.total:
            notes.append(
                f"[Showing lines {page.first}-{page.last} of {page.total}. Call read_file with "
                f"offset={page.last + 1} to continue.]"
            )
        if page.cut_lines:
            notes.append(
                f"[{page.cut_lines} line(s) longer than {MAX_LINE_CHARS} characters were cut.]"
            )
        data.update(
            firstLine=page.first,
            lastLine=page.last,
            truncated=page.last < page.total,
            lineEndings="crlf" if page.crlf else "lf",
        )
        return ToolResult(output="\n".join(page.lines + notes), data=data)


# ---------------------------------------------------------------------------------------------
# write_file and edit_file


@dataclass
class _Edit:
    action: Literal["create", "modify"]
    diff: str
    added: int
    removed: int
    count: int = 0
    snippet: str = ""


def _refuse_special(real: Path, rel: str) -> None:
    """Only regular files (or none yet) are read or written: opening a FIFO to read waits for
    a writer, so the call would hang, and a device or socket is no file to edit."""
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise _not_regular(rel)


def _not_regular(rel: str) -> ToolError:
    return ToolError(
        f"{rel} is not a regular file (a FIFO, socket or device); the file tools read and "
        "write regular files only",
        code="not_regular_file",
    )


def _current(real: Path, rel: str) -> tuple[TextFile | None, FileStamp | None]:
    """The file decoded (None if missing) and its stamp as read (None if missing);
    BinaryFileError for binary content. Blocking, and raises OSError for a path it cannot
    stat or read (the caller's `_os_error` words it)."""
    _refuse_special(real, rel)
    try:
        # (O_NONBLOCK: should a FIFO have taken the file's place since, opening it must not
        # wait for a writer; the fstat below refuses it)
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None, None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{rel} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(rel)
        if info.st_size > MAX_EDIT_BYTES:
            raise ToolError(
                f"{rel} is {info.st_size} bytes; the editing tools handle files up to 64 MiB"
            )
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as handle:
        data = handle.read()
    return decode_text(data, rel), file_stamp(info)


_T = TypeVar("_T")


def _holding(lock: threading.Lock, work: Callable[..., _T], *args: Any) -> _T:
    """`work(*args)` under `lock`: the workspace's write lock (see Workspace.write_lock), taken
    in the worker thread that reads and writes."""
    with lock:
        return work(*args)


def _write(real: Path, rel: str, content: str, spares: SparePool | None) -> _Edit | None:
    if real.is_dir():
        raise ToolError(f"{rel} is a directory")
    _refuse_special(real, rel)
    data = content.encode("utf-8")
    try:
        before = real.read_bytes() if real.stat().st_size <= MAX_EDIT_BYTES else None
        existed = True
    except FileNotFoundError:
        before, existed = None, False
    if before == data:
        return None
    commit_writes([FileWrite(real, data)], spares=spares)
    if not existed:
        result = diff_texts(None, content, rel)
        return _Edit("create", result.text, result.added, result.removed)
    try:
        old = None if before is None else decode_text(before, rel).text
    except BinaryFileError:
        old = None
    if old is None:  # binary, or too large to diff
        lines = content.count("\n") + (1 if content and not content.endswith("\n") else 0)
        diff = f"--- a/{rel}\n+++ b/{rel}\nBinary or large file replaced by {lines} lines of text\n"
        return _Edit("modify", diff, lines, 0)
    result = diff_texts(old, content, rel)
    return _Edit("modify", result.text, result.added, result.removed)


class WriteFileArgs(ToolArgs):
    path: str = Field(description="File path, relative to the workspace root.")
    content: str = Field(description="The complete new content of the file.")


class WriteFile(Tool):
    name = "write_file"
    description = (
        "Create a file, or replace a file's whole content, with `content` (written exactly as "
        "given). Missing parent directories are created. Prefer edit_file or apply_patch to "
        "change part of an existing file."
    )
    Args = WriteFileArgs

    async def run(self, args: WriteFileArgs, ctx: ToolContext) -> ToolResult:
        real = ctx.resolve(args.path)
        rel = ctx.workspace.relative(real)
        try:
            edit = await anyio.to_thread.run_sync(
                _holding, ctx.workspace.write_lock, _write, real, rel, args.content, spares_for(ctx)
            )
        except OSError as exc:  # stat, read or commit: a path that cannot be, a full disk
            raise _os_error(real, rel, exc) from None
        if edit is None:
            return ToolResult(
                output=f"{rel} already has exactly this content; nothing was written.",
                data={"path": rel, "action": "unchanged", "added": 0, "removed": 0},
            )
        await _emit_edit(ctx, rel, edit.action, edit.diff)
        verb = "Created" if edit.action == "create" else "Wrote"
        return ToolResult(
            output=f"{verb} {rel} (+{edit.added} -{edit.removed}).",
            data={"path": rel, "action": edit.action, "added": edit.added, "removed": edit.removed},
        )


class EditFileArgs(ToolArgs):
    path: str = Field(description="File path, relative to the workspace root.")
    old_string: str = Field(description="The exact text to replace (must occur exactly once).")
    new_string: str = Field(description="The text to put in its place.")
    replace_all: bool = Field(
        default=False, description="Replace every occurrence instead of requiring exactly one."
    )


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _edit(real: Path, rel: str, args: EditFileArgs, spares: SparePool | None) -> _Edit:
    if real.is_dir():
        raise ToolError(f"{rel} is a directory")
    current, stamp = _current(real, rel)
    old, new = args.old_string, args.new_string
    if current is None:
        if old:
            raise ToolError(f"{rel} does not exist; create it with write_file")
        return _commit_edit(real, rel, None, stamp, new, 1, 1, spares)
    text = current.text
    if not old:
        if text:
            raise ToolError(
                f"old_string is empty but {rel} is not; give the exact text to replace (or use "
                "write_file to replace the whole file)"
            )
        return _commit_edit(real, rel, current, stamp, new, 1, 1, spares)
    if old == new:
        raise ToolError("old_string and new_string are identical; there is nothing to change")
    # In a CRLF file, let the model write "\n" as it sees lines, and keep CRLF on disk.
    crlf = "\r" not in old and "\r\n" in text and text.count("\r\n") == text.count("\n")
    work = text.replace("\r\n", "\n") if crlf else text
    if crlf:
        new = new.replace("\r\n", "\n")
    count = work.count(old)
    if count == 0:
        raise ToolError(_not_found(work, old, rel))
    if count > 1 and not args.replace_all:
        lines: list[str] = []
        start = work.find(old)
        while start != -1 and len(lines) < 10:
            lines.append(str(_line_of(work, start)))
            start = work.find(old, start + len(old))
        raise ToolError(
            f"old_string occurs {count} times in {rel} (at lines {', '.join(lines)}); include "
            "more surrounding lines to make it unique, or set replace_all to true to replace "
            "every occurrence"
        )
    first_line = _line_of(work, work.find(old))
    result = work.replace(old, new) if args.replace_all else work.replace(old, new, 1)
    if crlf:
        result = result.replace("\n", "\r\n")
    count = count if args.replace_all else 1
    return _commit_edit(real, rel, current, stamp, result, count, first_line, spares)


def _commit_edit(
    real: Path,
    rel: str,
    current: TextFile | None,
    stamp: FileStamp | None,
    new: str,
    count: int,
    first_line: int,
    spares: SparePool | None,
) -> _Edit:
    data = new.encode("utf-8") if current is None else current.encode(new)  # keeps a BOM
    try:
        # the file must still be the one the edit was made on (FileChangedError otherwise)
        commit_writes([FileWrite(real, data)], spares=spares, unchanged={os.fspath(real): stamp})
    except FileChangedError:
        raise changed_meanwhile(rel) from None
    old = None if current is None else current.text
    result = diff_texts(old, new, rel)
    lines = new.split("\n")
    start = max(first_line - 4, 0)
    stop = min(first_line + 3 + max(result.added, 1), len(lines), start + 40)
    snippet = "\n".join(f"{n + 1:>6}\t{lines[n].rstrip(chr(13))}" for n in range(start, stop))
    action: Literal["create", "modify"] = "create" if old is None else "modify"
    return _Edit(action, result.text, result.added, result.removed, count, snippet)


def _not_found(text: str, old: str, rel: str) -> str:
    lines = text.split("\n")
    wanted = old.split("\n")
    message = f"old_string was not found in {rel}."
    index = LineIndex(lines)
    loose = index.find_first(wanted)
    if loose is not None and loose[1] > 0:
        at, level = loose
        message += (
            f" It matches lines {at + 1}-{at + len(wanted)} {LEVELS[level][0]}: copy the text "
            "exactly as read_file shows it (without the line-number prefix)."
        )
        return message
    probe = next((line for line in wanted if line.strip()), "")
    closest = index.closest(probe) if probe else None
    if closest is not None:
        message += f" The closest line is {closest[0] + 1}: {closest[1]!r}."
    return message + " Read the file and copy old_string exactly, including whitespace."


class EditFile(Tool):
    name = "edit_file"
    description = (
        "Replace `old_string` with `new_string` in a file. `old_string` must match the file "
        "exactly (whitespace included) and occur exactly once, unless `replace_all` is true. "
        "With an empty `old_string`, creates a missing file or fills an empty one."
    )
    Args = EditFileArgs

    async def run(self, args: EditFileArgs, ctx: ToolContext) -> ToolResult:
        real = ctx.resolve(args.path)
        rel = ctx.workspace.relative(real)
        try:
            edit = await anyio.to_thread.run_sync(
                _holding, ctx.workspace.write_lock, _edit, real, rel, args, spares_for(ctx)
            )
        except OSError as exc:  # stat, read or commit: a path that cannot be, a full disk
            raise _os_error(real, rel, exc) from None
        await _emit_edit(ctx, rel, edit.action, edit.diff)
        what = "Created" if edit.action == "create" else "Edited"
        times = f"replaced {edit.count} occurrence{'s' if edit.count != 1 else ''}"
        output = f"{what} {rel}: {times} (+{edit.added} -{edit.removed})."
        if edit.snippet:
            output += f"\n{edit.snippet}"
        return ToolResult(
            output=output,
            data={
                "path": rel,
                "action": edit.action,
                "replacements": edit.count,
                "added": edit.added,
                "removed": edit.removed,
            },
        )


# ---------------------------------------------------------------------------------------------
# list_dir


class ListDirArgs(ToolArgs):
    path: str | None = Field(default=None, description="Directory; default the workspace root.")
    depth: int = Field(default=2, ge=1, le=10, description="How many levels to descend.")


def _list(real: Path, depth: int) -> tuple[list[str], int]:
    lines: list[str] = []
    hidden = 0

    def visit(directory: Path, level: int) -> None:
        nonlocal hidden
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            lines.append(f"{'  ' * level}[cannot list: {exc.strerror}]")
            return
        for entry in entries:
            if len(lines) >= MAX_LIST_ENTRIES:
                hidden += 1
                continue
            indent = "  " * level
            if entry.is_symlink():
                lines.append(f"{indent}{entry.name} -> {os.readlink(entry.path)}")
            elif entry.is_dir():
                if entry.name in VCS_DIRS:
                    lines.append(f"{indent}{entry.name}/ (not expanded)")
                    continue
                lines.append(f"{indent}{entry.name}/")
                if level + 1 < depth:
                    visit(Path(entry.path), level + 1)
            else:
                lines.append(f"{indent}{entry.name}")

    visit(real, 0)
    return lines, hidden


class ListDir(Tool):
    name = "list_dir"
    description = (
        "List a directory as an indented tree (directories end with '/', symlinks show their "
        "target and are not followed; VCS directories such as .git are not expanded)."
    )
    Args = ListDirArgs
    read_only = True

    async def run(self, args: ListDirArgs, ctx: ToolContext) -> ToolResult:
        real = ctx.resolve(args.path, must_exist=True)
        rel = ctx.workspace.relative(real)
        if not real.is_dir():
            raise ToolError(f"{rel} is a file, not a directory; use read_file to read it")
        lines, hidden = await anyio.to_thread.run_sync(_list, real, args.depth)
        header = f"{rel}/" if rel != "." else "./"
        if not lines:
            lines = ["  (empty)"]
        else:
            lines = ["  " + line for line in lines]
        if hidden:
            lines.append(
                f"[{hidden} more entries not shown; list a subdirectory or use a smaller depth]"
            )
        return ToolResult(
            output="\n".join([header, *lines]),
            data={"path": rel, "entries": len(lines), "truncated": bool(hidden)},
        )


# ---------------------------------------------------------------------------------------------
# glob


GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.BRACE | wcglob.DOTGLOB
"""Glob syntax (wcmatch): `*`, `?` and `[...]` within one directory, `**` across directories,
`{a,b}` alternatives (nested too); hidden files match like any other."""
GLOB_EXPANSION_LIMIT = 1000  # patterns a brace expression may expand to


class GlobMatcher(Protocol):
    def match(self, filename: str) -> bool: ...


def compile_glob(pattern: str, *, match_base: bool = False) -> GlobMatcher:
    """Match a path relative to the search directory against a glob (wcmatch). With
    `match_base`, a pattern without '/' matches the file name at any depth. Raises ToolError
    for a pattern wcmatch refuses (a brace expansion beyond GLOB_EXPANSION_LIMIT)."""
    flags = GLOB_FLAGS | (wcglob.MATCHBASE if match_base else 0)
    try:
        return wcglob.compile(pattern.lstrip("/"), flags=flags, limit=GLOB_EXPANSION_LIMIT)
    except Exception as exc:  # wcmatch's errors (e.g. its pattern limit) are not public names
        raise ToolError(f"invalid glob pattern {pattern!r}: {exc}") from None


def compile_file_filter(pattern: str) -> tuple[GlobMatcher, bool]:
    """ripgrep's `--glob` rules: a pattern without '/' matches a file name at any depth, one
    with '/' matches the path from the search directory; a leading '!' excludes. Returns the
    matcher and whether it excludes."""
    exclude = pattern.startswith("!")
    pattern = pattern[1:] if exclude else pattern
    return compile_glob(pattern, match_base="/" not in pattern.rstrip("/")), exclude


def walk_files(base: Path) -> Iterator[tuple[str, str]]:
    """(path relative to base, path) of every regular file under base, in path order.

    Symlinks are neither followed nor returned (what they point to may be outside the
    workspace); VCS directories are skipped.
    """

    def visit(directory: str, prefix: str) -> Iterator[tuple[str, str]]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            # The kind comes from the directory listing (d_type) where the file system gives
            # it: no stat per file, which was half the cost of a walk over a large tree.
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in VCS_DIRS:
                        yield from visit(entry.path, f"{prefix}{entry.name}/")
                elif entry.is_file(follow_symlinks=False):
                    yield f"{prefix}{entry.name}", entry.path
            except OSError:
                continue

    yield from visit(os.fspath(base), "")


class GlobArgs(ToolArgs):
    pattern: str = Field(
        description="Glob relative to `path`, e.g. '**/*.py', 'src/*.{ts,tsx}', 'README*'."
    )
    path: str | None = Field(default=None, description="Directory to search; default the root.")


def _glob(base: Path, pattern: str) -> tuple[list[str], int]:
    matcher = compile_glob(pattern)
    found = [rel for rel, _ in walk_files(base) if matcher.match(rel)]
    return found[:MAX_GLOB_RESULTS], max(len(found) - MAX_GLOB_RESULTS, 0)


class Glob(Tool):
    name = "glob"
    description = (
        "Find files whose path (relative to `path`) matches a glob: '*' and '?' stay within a "
        "directory, '**' spans directories ('**/*.py' is every Python file, '*.py' only those "
        "directly in `path`), '[abc]' character classes, '{a,b}' alternatives (nested too). "
        "Returns workspace-relative paths, sorted."
    )
    Args = GlobArgs
    read_only = True

    async def run(self, args: GlobArgs, ctx: ToolContext) -> ToolResult:
        base = ctx.resolve(args.path, must_exist=True)
        prefix = ctx.workspace.relative(base)
        if not base.is_dir():
            raise ToolError(f"{prefix} is not a directory")
        found, more = await anyio.to_thread.run_sync(_glob, base, args.pattern)
        paths = [_join(prefix, rel) for rel in found]
        if not paths:
            output = f"No files match {args.pattern!r} under {prefix}."
        else:
            output = "\n".join(paths)
            if more:
                output += f"\n[{more} more files match; narrow the pattern or path]"
        return ToolResult(output=output, data={"count": len(paths) + more, "paths": paths})


# ---------------------------------------------------------------------------------------------
# grep


class GrepArgs(ToolArgs):
    pattern: str = Field(description="Regular expression searched for in each line.")
    path: str | None = Field(default=None, description="File or directory; default the root.")
    glob: str | None = Field(
        default=None,
        description="Only search files matching this glob ('*.py' at any depth, 'src/**/*.ts' "
        "from `path`; a leading '!' excludes).",
    )
    case_insensitive: bool = False
    max_results: int = Field(default=100, ge=1, le=5000)


@dataclass(frozen=True)
class GrepMatch:
    path: str  # relative to the searched directory
    line: int
    text: str

    def format(self, prefix: str) -> str:
        text = self.text
        if len(text) > MAX_GREP_LINE_CHARS:
            text = text[:MAX_GREP_LINE_CHARS] + " …[line truncated]"
        return f"{_join(prefix, self.path)}:{self.line}:{text}"


@dataclass
class GrepOutcome:
    matches: list[GrepMatch]
    more: bool
    engine: Literal["ripgrep", "python"]
    # Where the Python engine gave up at GREP_TIME_LIMIT (path relative to the searched
    # directory, line); `matches` are then those found before, not all there are.
    stopped_at: tuple[str, int] | None = None


# How long grep's Python engine may search. Its regular expressions backtrack: a pattern with
# nested or overlapping quantifiers ((a+)+, (a|a)+) takes time exponential in the length of
# some lines, and the worker thread it runs in cannot be cancelled, so it stops itself.
# (ripgrep's engine is linear-time; it has no such limit.)
GREP_TIME_LIMIT = 10.0

# Open a file to search without waiting or taking it over: opening a FIFO to read waits for
# a writer, a terminal would become the controlling terminal. (Reads of regular files ignore
# O_NONBLOCK.)
_OPEN_TO_SEARCH = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


def _open_regular(path: str) -> tuple[BinaryIO, int] | None:
    """`path` opened to read, and its size; None when it is not a regular file: the walk
    lists only regular files, but one may have been replaced by a FIFO or a device since."""
    fd = os.open(path, _OPEN_TO_SEARCH)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _clean_line(raw: bytes) -> str:
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class _OutOfTime(Exception):
    """grep_python's time limit passed. Not regex's TimeoutError: that is an OSError, which
    the search loop takes for a file it cannot read and skips."""


def grep_python(
    base: Path,
    single_file: str | None,
    pattern: regex.Pattern[str],
    glob: str | None,
    limit: int,
    time_limit: float = GREP_TIME_LIMIT,
) -> GrepOutcome:
    """The fallback: same files, order and binary rule as the ripgrep path.

    Files containing a NUL byte anywhere are binary and skipped (ripgrep stops at the first
    NUL and reports the file as binary; its matches are dropped on that path too). Only
    regular files are opened. Past `time_limit` seconds it stops and says where
    (`GrepOutcome.stopped_at`), with the matches found until then.
    """
    if single_file is not None:
        files: Iterator[tuple[str, str]] = iter([(single_file, os.fspath(base / single_file))])
    else:
        files = walk_files(base)
        if glob:
            file_filter, exclude = compile_file_filter(glob)
            files = (f for f in files if bool(file_filter.match(f[0])) != exclude)
    deadline = time.monotonic() + time_limit
    whole_text = _whole_text_pattern(pattern)
    matches: list[GrepMatch] = []
    for rel, path in files:
        found: list[GrepMatch] = []
        number = 0
        try:
            opened = _open_regular(path)
            if opened is None:
                continue
            handle, size = opened
            with handle:
                if (
                    whole_text is not None
                    and size <= WHOLE_TEXT_BYTES
                    and not _may_match(handle, whole_text, deadline)
                ):
                    continue
                for number, raw in enumerate(handle, 1):
                    if b"\0" in raw:
                        found = []
                        break
                    if number == 1 and raw.startswith(BOM):
                        raw = raw[len(BOM) :]
                    line = raw[:-1] if raw.endswith(b"\n") else raw
                    # regex times each call (in CPU time) from its start: a line gets the time left
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise _OutOfTime
                    try:
                        hit = pattern.search(line.decode("utf-8", errors="replace"), timeout=left)
                    except TimeoutError:
                        raise _OutOfTime from None
                    if hit:
                        found.append(GrepMatch(rel, number, _clean_line(line)))
        except _OutOfTime:
            matches.extend(found)
            return GrepOutcome(matches[:limit], True, "python", stopped_at=(rel, number))
        except OSError:
            continue
        matches.extend(found)
        if len(matches) > limit:
            return GrepOutcome(matches[:limit], True, "python")
        if time.monotonic() > deadline:  # a walk over many files with few lines
            return GrepOutcome(matches[:limit], True, "python", stopped_at=(rel, number))
    return GrepOutcome(matches, False, "python")


# Where a pattern may mean something else in a whole file than in one line: text anchors,
# lookarounds (they may look past the line), inline flags (which could turn MULTILINE off).
_LINE_BOUND = ("\\A", "\\Z", "\\z", "\\G", "(?=", "(?!", "(?<=", "(?<!")
# Groups that mean the same in a line and in a file: plain, named, a named backreference,
# ignoring case.
_HARMLESS_GROUPS = ("(?:", "(?P<", "(?P=", "(?i)")
# A file up to this size is searched whole first (see _may_match); a larger one line by line.
WHOLE_TEXT_BYTES = 1 << 20


def _whole_text_pattern(pattern: regex.Pattern[str]) -> regex.Pattern[str] | None:
    """`pattern` for a whole file's text (MULTILINE: `^` and `$` at each line's ends), or None
    where a match in the whole text may not mean a match in a line (see _LINE_BOUND).

    The line by line search is the one that counts; this one only rules files out. Each
    regex call with a timeout reads the CPU clock, which made the per-line search ~2x slower
    on a workspace where few files match; one call per file does not. It may not rule out a
    file with a matching line: a match within a line is a match within the text around it,
    since lines are searched without their newline, `^`/`$` then match at the same places,
    `\\b` sees a newline as it sees a line's end, and the rest reads only the line's
    characters. A match in the text but in no line (one crossing a newline) only costs the
    line by line search."""
    source = pattern.pattern
    groups_and_flags = source
    for harmless in _HARMLESS_GROUPS:
        groups_and_flags = groups_and_flags.replace(harmless, "")
    if any(token in source for token in _LINE_BOUND) or "(?" in groups_and_flags:
        return None
    return regex.compile(source, pattern.flags | regex.MULTILINE)


def _may_match(handle: BinaryIO, whole_text: regex.Pattern[str], deadline: float) -> bool:
    """Whether a line of the file (of at most WHOLE_TEXT_BYTES) may match (False: none does,
    or it is binary); the file is then read again from its start. Raises _OutOfTime past
    `deadline`."""
    data = handle.read()  # (read(n) would allocate n bytes, whatever the file's size)
    handle.seek(0)
    if b"\0" in data:
        return False  # binary: the line by line search would drop its matches
    left = deadline - time.monotonic()
    if left <= 0:
        raise _OutOfTime
    try:
        text = data.removeprefix(BOM).decode("utf-8", errors="replace")
        return whole_text.search(text, timeout=left) is not None
    except TimeoutError:
        raise _OutOfTime from None


class RipgrepRegexError(Exception):
    """ripgrep rejected the pattern (Rust regex syntax differs from Python's in places)."""


# Files a glob selects are handed to ripgrep by name (its own globs differ from wcmatch's:
# no nested braces, '/' inside a class); past this many bytes of names, the Python engine.
MAX_RG_FILE_ARGS_BYTES = 512 * 1024


def select_files(base: Path, glob: str) -> list[str] | None:
    """The files under `base` grep's `glob` selects (wcmatch), or None when there are too
    many to name on ripgrep's command line. Blocking: call it in a worker thread."""
    file_filter, exclude = compile_file_filter(glob)
    selected: list[str] = []
    size = 0
    for rel, _ in walk_files(base):
        if bool(file_filter.match(rel)) != exclude:
            selected.append(rel)
            size += len(rel) + 1
            if size > MAX_RG_FILE_ARGS_BYTES:
                return None
    return selected


async def grep_ripgrep(
    rg: str,
    base: Path,
    targets: list[str],
    pattern: str,
    case_insensitive: bool,
    limit: int,
) -> GrepOutcome:
    """Search `targets` (paths relative to `base`: one file, '.', or the files a glob
    selected) with ripgrep."""
    if not targets:
        return GrepOutcome([], False, "ripgrep")
    command = [rg, "--json", "--no-config", "--hidden", "--no-ignore", "--no-mmap"]
    command += ["--sort", "path"]
    for vcs in sorted(VCS_DIRS):
        command += ["--glob", f"!{vcs}"]
    if case_insensitive:
        command.append("--ignore-case")
    command += ["--regexp", pattern, "--", *targets]
    matches: list[GrepMatch] = []
    more = False
    errors = bytearray()

    async def collect_errors(stream: anyio.abc.ByteReceiveStream) -> None:
        # drained concurrently so a chatty stderr can never block ripgrep
        async for chunk in stream:
            if len(errors) < 65536:
                errors.extend(chunk)

    async with await anyio.open_process(command, cwd=base, stdin=subprocess.DEVNULL) as process:
        assert process.stdout is not None and process.stderr is not None
        async with anyio.create_task_group() as group:
            group.start_soon(collect_errors, process.stderr)
            finished = False
            try:
                more = await _read_rg_json(process.stdout, matches, limit)
                finished = not more
            finally:
                if not finished:
                    # os.kill, not process.kill(): Popen.kill polls (reaps) an exited child
                    # behind asyncio's child watcher. A zombie cannot be confused with
                    # another process, so signalling it is harmless.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    stderr = errors.decode("utf-8", errors="replace")
    if not matches and process.returncode == 2 and "regex parse error" in stderr:
        raise RipgrepRegexError(stderr.strip())
    matches.sort(key=lambda m: (_path_key(m.path), m.line))
    return GrepOutcome(matches[:limit], more, "ripgrep")


async def _read_rg_json(
    stdout: anyio.abc.ByteReceiveStream, matches: list[GrepMatch], limit: int
) -> bool:
    """Collect matches of non-binary files; True if it stopped with more than `limit`."""
    stream = BufferedByteReceiveStream(stdout)
    pending: list[GrepMatch] = []
    while True:
        try:
            raw = await stream.receive_until(b"\n", 1 << 30)
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return False
        message = json.loads(raw)
        kind = message.get("type")
        if kind == "match":
            data = message["data"]
            pending.append(
                GrepMatch(
                    _rg_text(data["path"]).removeprefix("./"),
                    int(data["line_number"]),
                    _clean_line(_rg_bytes(data["lines"])),
                )
            )
        elif kind == "end":
            # ripgrep stops reading a file at its first NUL and reports it as binary
            if message["data"].get("binary_offset") is None:
                matches.extend(pending)
            pending = []
            if len(matches) > limit:
                return True


def _rg_bytes(value: dict[str, str]) -> bytes:
    if "text" in value:
        return value["text"].encode("utf-8")
    return base64.b64decode(value["bytes"])


def _rg_text(value: dict[str, str]) -> str:
    return _rg_bytes(value).decode("utf-8", errors="surrogateescape")


class Grep(Tool):
    name = "grep"
    description = (
        "Search file contents for a regular expression (ripgrep when available). Prints "
        "'path:line:text' for each matching line, sorted by path then line. Binary files and "
        "VCS directories are skipped; hidden and git-ignored files are searched."
    )
    Args = GrepArgs
    read_only = True

    async def run(self, args: GrepArgs, ctx: ToolContext) -> ToolResult:
        target = ctx.resolve(args.path, must_exist=True)
        if args.glob:
            compile_file_filter(args.glob)  # a pattern wcmatch refuses is the model's to fix
        try:
            # regex's default syntax (VERSION0) is re's; it adds a timeout (GREP_TIME_LIMIT)
            pattern = regex.compile(args.pattern, regex.IGNORECASE if args.case_insensitive else 0)
        except regex.error as exc:
            raise ToolError(f"invalid regular expression {args.pattern!r}: {exc}") from None
        workspace: Workspace = ctx.workspace
        where = workspace.relative(target)
        if target.is_dir():
            base, single, prefix = target, None, where
        else:
            # ripgrep, like open(), waits for a writer on a FIFO it is given by name (it skips
            # special files only when it walks a directory)
            _refuse_special(target, where)
            base, single = target.parent, target.name
            prefix = workspace.relative(target.parent)
        rg = shutil.which("rg") if ctx.settings.use_ripgrep else None
        outcome: GrepOutcome | None = None
        targets: list[str] | None = [single or "."]
        if rg is not None and args.glob and single is None:
            targets = await anyio.to_thread.run_sync(select_files, base, args.glob)
        if rg is not None and targets is not None:
            try:
                outcome = await grep_ripgrep(
                    rg, base, targets, args.pattern, args.case_insensitive, args.max_results
                )
            except RipgrepRegexError:
                outcome = None  # a pattern only Python's engine understands: use the fallback
        if outcome is None:
            outcome = await anyio.to_thread.run_sync(
                grep_python, base, single, pattern, args.glob, args.max_results, GREP_TIME_LIMIT
            )
        lines = [match.format(prefix) for match in outcome.matches]
        if outcome.stopped_at is not None:
            return _grep_gave_up(args.pattern, outcome.stopped_at, prefix, lines)
        if not lines:
            output = f"No matches for {args.pattern!r} in {where}."
        else:
            output = "\n".join(lines)
            if outcome.more:
                output += (
                    f"\n[Showing the first {args.max_results} matches; there are more. Narrow "
                    "the pattern, path or glob, or raise max_results.]"
                )
        return ToolResult(
            output=output,
            data={"matches": len(lines), "truncated": outcome.more, "engine": outcome.engine},
        )


def _grep_gave_up(
    pattern: str, stopped_at: tuple[str, int], prefix: str, lines: list[str]
) -> ToolResult:
    """The error for a Python-engine search that ran out of time (GREP_TIME_LIMIT)."""
    path, line = stopped_at
    message = (
        f"grep gave up on {pattern!r} after {GREP_TIME_LIMIT:g} s (its time limit), at "
        f"{_join(prefix, path)}:{line}. A pattern with nested or overlapping quantifiers, such "
        "as (a+)+ or (a|a)+, can take time exponential in a line's length: simplify it (one "
        "quantifier per repeated part). Otherwise search a narrower path or glob."
    )
    if lines:
        found = f"{len(lines)} match{'es' if len(lines) != 1 else ''}"
        message += (
            f"\n[{found} found before it gave up; the search is incomplete, so there may be "
            "more:]\n" + "\n".join(lines)
        )
    return ToolResult.error(
        message, code="timeout", matches=len(lines), truncated=True, engine="python"
    )


# The tools this module provides, in the order models see them (tools.load_core_tools
# registers them).
TOOLS: tuple[type[Tool], ...] = (
    ReadFile,
    WriteFile,
    EditFile,
    ListDir,
    Glob,
    Grep,
)
