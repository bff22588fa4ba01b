"""The workspace during and after a run: directory listings and file contents.

Paths are relative to the workspace root (a leading `/` means the root). A path that
resolves outside the workspace (through `..` or a symlink) is refused with 403 and never
read; a missing one is a 404. The file is opened and then checked again through
`/proc/self/fd` where available, so swapping a path component for a symlink between the
check and the read does not leak a file either.
"""

from __future__ import annotations

import base64
import heapq
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
from aiohttp import web

from runtime.api.errors import ApiError, bad_request, not_found
from runtime.api.responses import json_data
from runtime.api.routing import Enveloped, RouteTable
from runtime.api.schemas import (
    FileContent,
    FileContentQuery,
    FileEntry,
    FileListing,
    FilesQuery,
)
from runtime.api.state import get_state
from runtime.api.validation import parse_query
from runtime.ids import format_ts
from tools.workspace import PathOutsideWorkspace, Workspace

MAX_ENTRIES = 10_000
"""A listing holds at most this many entries: the first in its order, `truncated` set."""


def _resolve(workspace: Workspace, raw: str) -> Path:
    """The real path `raw` names, taken exactly as given (a file name may begin or end with
    a space, or begin with `~`): only leading `/`s are dropped, as they mean the root."""
    if "\x00" in raw:
        raise bad_request("path must not contain NUL bytes", code="invalid_path")
    try:
        # "./": the workspace would expand a leading `~` to a home directory, as a shell does
        return workspace.resolve("./" + raw.lstrip("/"))
    except PathOutsideWorkspace as exc:
        # The tool's message names the daemon's host paths; an API client gets none of them.
        raise ApiError(
            403,
            "outside_workspace",
            f"path {raw!r} is outside the workspace; paths are relative to the workspace root, "
            "e.g. /src/App.tsx",
        ) from exc


def _display(workspace: Workspace, real: Path) -> str:
    rel = workspace.relative(real)
    return "/" if rel == "." else "/" + rel


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _mtime(seconds: float) -> str:
    return format_ts(datetime.fromtimestamp(seconds, UTC))


def _list_dir(workspace: Workspace, real: Path) -> FileListing:
    if not real.exists():
        raise not_found(f"{_display(workspace, real)} does not exist in the workspace")
    if not real.is_dir():
        raise bad_request(
            f"{_display(workspace, real)} is a file; read it with "
            "GET /v1/runs/{id}/files/content?path=",
            code="not_a_directory",
        )
    base = _display(workspace, real).rstrip("/")
    total = 0

    def counted(scan: Iterator[os.DirEntry[str]]) -> Iterator[os.DirEntry[str]]:
        nonlocal total
        for entry in scan:
            total += 1
            yield entry

    # The first MAX_ENTRIES in the listing's order, whatever order the directory gives them
    # in, holding no more than that many at a time (d_type says which are directories
    # without a stat of each); then only those are stat'ed.
    with os.scandir(real) as scan:
        first = heapq.nsmallest(MAX_ENTRIES, counted(scan), key=_sort_key)
    entries: list[FileEntry] = []
    for entry in first:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # vanished while listing
        entries.append(
            FileEntry.model_validate(
                {
                    "name": entry.name,
                    "path": f"{base}/{entry.name}",
                    "type": _kind(info.st_mode),
                    "size": info.st_size,
                    "modifiedAt": _mtime(info.st_mtime),
                }
            )
        )
    entries.sort(key=lambda e: (e.type != "dir", e.name))
    return FileListing(path=base or "/", entries=entries, total=total, truncated=total > len(first))


def _sort_key(entry: os.DirEntry[str]) -> tuple[bool, str]:
    """Directories first (not a symlink to one, as `_kind` has it), then by name."""
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        is_dir = False
    return (not is_dir, entry.name)


def _opened_inside(workspace: Workspace, fd: int) -> bool:
    link = f"/proc/self/fd/{fd}"
    if not os.path.exists(link):
        return True  # no procfs (macOS): the resolve() check stands alone
    return workspace.contains(Path(os.readlink(link)))


def _read_file(workspace: Workspace, real: Path, offset: int, limit: int) -> FileContent:
    shown = _display(workspace, real)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except FileNotFoundError:
        raise not_found(f"{shown} does not exist in the workspace") from None
    except IsADirectoryError:
        raise bad_request(f"{shown} is a directory", code="is_a_directory") from None
    except OSError as exc:
        raise ApiError(403, "unreadable", f"cannot read {shown}: {exc.strerror}") from exc
    try:
        if not _opened_inside(workspace, fd):
            raise ApiError(403, "outside_workspace", f"{shown} is outside the workspace")
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise bad_request(
                f"{shown} is a directory; list it with GET /v1/runs/{{id}}/files?path=",
                code="is_a_directory",
            )
        if not stat.S_ISREG(info.st_mode):
            raise bad_request(f"{shown} is not a regular file", code="not_a_file")
        chunk = _pread_all(fd, limit, offset)
    finally:
        os.close(fd)
    truncated = offset + len(chunk) < info.st_size
    encoding, content = _encode(chunk, cut=truncated)
    return FileContent(
        path=shown,
        size=info.st_size,
        offset=offset,
        encoding=encoding,
        content=content,
        truncated=truncated,
    )


def _pread_all(fd: int, limit: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while limit > 0:
        part = os.pread(fd, limit, offset)
        if not part:
            break
        parts.append(part)
        limit -= len(part)
        offset += len(part)
    return b"".join(parts)


def _encode(chunk: bytes, *, cut: bool) -> tuple[str, str]:
    """UTF-8 text when it is text (a character split by the cut is allowed), else base64."""
    if b"\x00" not in chunk:
        for trim in range(4 if cut else 1):
            try:
                return "utf-8", chunk[: len(chunk) - trim].decode("utf-8")
            except UnicodeDecodeError:
                continue
    return "base64", base64.b64encode(chunk).decode("ascii")


async def _run_workspace(request: web.Request) -> Workspace:
    manager = get_state(request).require_manager()
    await manager.get(request.match_info["run_id"])  # 404 for an unknown run
    return Workspace(manager.workspace)


async def list_files(request: web.Request) -> web.Response:
    query = parse_query(request, FilesQuery)
    workspace = await _run_workspace(request)
    real = _resolve(workspace, query.path)
    listing = await anyio.to_thread.run_sync(_list_dir, workspace, real)
    return json_data(listing)


async def file_content(request: web.Request) -> web.Response:
    query = parse_query(request, FileContentQuery)
    workspace = await _run_workspace(request)
    real = _resolve(workspace, query.path)
    content = await anyio.to_thread.run_sync(_read_file, workspace, real, query.offset, query.limit)
    return json_data(content)


def add_routes(table: RouteTable) -> None:
    table.add(
        "GET",
        "/v1/runs/{run_id}/files",
        list_files,
        summary="List a workspace directory (confined to the workspace)",
        tag="files",
        query=FilesQuery,
        response=Enveloped(FileListing),
        errors=(400, 403, 404),
    )
    table.add(
        "GET",
        "/v1/runs/{run_id}/files/content",
        file_content,
        summary="Read a workspace file (UTF-8 text, or base64 for binary), in byte ranges",
        tag="files",
        query=FileContentQuery,
        response=Enveloped(FileContent),
        errors=(400, 403, 404),
    )
