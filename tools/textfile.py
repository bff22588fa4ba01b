"""Workspace text files as the editing tools see them, and all-or-nothing writes.

`decode_text` turns a file's bytes into text while remembering what an edit must keep (a
UTF-8 BOM, CRLF line endings) and refuses binary data. `commit_writes` writes and deletes a
set of files so that either every change lands or none does: new contents go to temporary
files beside their targets first, then each target is swapped with its temporary file
(`renameat2(RENAME_EXCHANGE)`, or `os.replace` where there is none), keeping what it
displaces aside while a later step can still fail, so a failure half-way rolls everything
back.

Everything here blocks; async callers run it through `anyio.to_thread.run_sync`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tools.base import ToolError
from tools.commit_journal import Journal
from tools.libc import libc_function

if TYPE_CHECKING:
    from tools.spares import SparePool

BOM = b"\xef\xbb\xbf"
BINARY_SNIFF_BYTES = 8192

# The process umask, read once at import (reading it means setting it, which is not
# thread-safe later): new files get 0o666 & ~umask like `open()` would give them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _load_exchange() -> Callable[[str, str], None] | None:
    """`exchange(a, b)`: swap two names atomically (`renameat2(RENAME_EXCHANGE)`, Linux 3.15
    and glibc 2.28 or later); None where this libc has no renameat2."""
    c_int, c_char_p = ctypes.c_int, ctypes.c_char_p
    renameat2 = libc_function("renameat2", [c_int, c_char_p, c_int, c_char_p, ctypes.c_uint])
    if renameat2 is None:
        return None

    def exchange(a: str, b: str) -> None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), a, None, b)

    return exchange


def _load_writeback() -> Callable[[str], None] | None:
    """`start_writeback(path)`: start writing a file's data out, without waiting for it
    (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); None where this libc has no such call."""
    sync_file_range = libc_function(
        "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    )
    if sync_file_range is None:
        return None

    def start_writeback(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # the whole file; a failure changes nothing a commit relies on (it only starts
            # the writing early), so the result is not read
            sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
        finally:
            os.close(fd)

    return start_writeback


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_SYNC_FILE_RANGE_WRITE = 2
# `rename_exchange(a, b)` swaps two names atomically; `start_writeback(path)` starts writing
# a file's data out. Each is None where the system has no such call (not Linux, an old libc).
rename_exchange = _load_exchange()
start_writeback = _load_writeback()
# what renameat2 answers where the system or the filesystem cannot exchange (an old kernel,
# a filesystem without RENAME_EXCHANGE): the commit replaces instead
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV})


class BinaryFileError(ToolError):
    """The file is not UTF-8 text (NUL bytes or undecodable data)."""


@dataclass(frozen=True)
class TextFile:
    """A decoded text file: `text` without the BOM, plus what re-encoding must restore."""

    text: str
    bom: bool = False

    def encode(self, text: str | None = None) -> bytes:
        body = (self.text if text is None else text).encode("utf-8")
        return BOM + body if self.bom else body


def detect_newline(text: str) -> str:
    """The line ending new lines get: CRLF when most line breaks are CRLF, else LF."""
    if "\r" not in text:  # a search for one character, much cheaper than counting pairs
        return "\n"
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf * 2 >= text.count("\n") else "\n"


def looks_binary(data: bytes) -> bool:
    return b"\0" in data[:BINARY_SNIFF_BYTES]


def decode_text(data: bytes, label: str) -> TextFile:
    """Decode UTF-8 (with or without BOM); binary data raises `BinaryFileError` naming `label`."""
    if looks_binary(data):
        raise BinaryFileError(
            f"{label} is a binary file (it contains NUL bytes); only UTF-8 text files can be "
            "read or edited with this tool"
        )
    bom = data.startswith(BOM)
    try:
        text = data[len(BOM) :].decode("utf-8") if bom else data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BinaryFileError(
            f"{label} is not UTF-8 text (undecodable byte at offset {exc.start}); it looks "
            "binary or uses another encoding, so this tool will not read or edit it"
        ) from None
    return TextFile(text=text, bom=bom)


def split_lines(text: str) -> tuple[list[str], list[str]]:
    """Lines without their endings, and each line's ending ("\\r\\n", "\\n" or "" at EOF).

    Only "\\n" ends a line (a lone "\\r" is content), as in every diff tool.
    """
    parts = text.split("\n")
    last = parts.pop()  # what follows the final newline: "" unless that line has no ending
    if "\r" not in text:  # the common case, without a loop over the lines in Python
        endings = ["\n"] * len(parts)
        if last:
            parts.append(last)
            endings.append("")
        return parts, endings
    lines: list[str] = []
    endings = []
    for part in parts:
        if part.endswith("\r"):
            lines.append(part[:-1])
            endings.append("\r\n")
        else:
            lines.append(part)
            endings.append("\n")
    if last:
        lines.append(last)
        endings.append("")
    return lines, endings


def file_mode(path: Path) -> int | None:
    """Permission bits of an existing file, or None if it does not exist."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def new_file_mode(executable: bool = False) -> int:
    return (0o777 if executable else 0o666) & ~_UMASK


FileStamp = tuple[int, int, int, int]
"""What a file was when a tool read it (`file_stamp`)."""


def file_stamp(info: os.stat_result) -> FileStamp:
    """A file's stamp from its `stat`: which file it is (device, inode), its size, and when
    its content last changed (mtime). Not its ctime, which the commit's own exchange
    changes. A commit puts another inode in place (or a spare file, tools/spares.py, with a
    new mtime), so a file a commit replaced does not keep its stamp; a write into the file in
    place changes its mtime, unless it keeps the size and comes within the same tick of the
    kernel's clock (a few milliseconds). A plain tuple: a commit makes two per file."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _stamp_now(path: str) -> FileStamp | None:
    try:
        return file_stamp(os.lstat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


class FileChangedError(Exception):
    """A file a commit was to replace, create or delete is no longer what the caller read
    (something else wrote it meanwhile: a command, an editor, another program); the commit
    changed nothing. `path` is the file."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed after it was read")
        self.path = path


def changed_meanwhile(rel: str) -> ToolError:
    """The tool error for a FileChangedError on `rel`, the file's workspace-relative name."""
    return ToolError(
        f"{rel} changed on disk while this call was working on it (something else wrote it "
        "after the tool read it), so no file was changed. Read the file again and redo the "
        "change on its current content.",
        code="file_changed",
    )


@dataclass(frozen=True)
class FileWrite:
    """Replace (or create) `path` with `data`; `mode` None keeps the current mode or, for a
    new file, uses the default one.

    `previous` (with `previous_mode`): what `path` holds now, when the caller has read it.
    Only used where the file is replaced rather than exchanged (see `commit_writes`): rolling
    back then writes it back (atomically, like any write), so the commit needs no backup
    link of the file; without it the current file is hard-linked aside.
    """

    path: Path
    data: bytes
    mode: int | None = None
    previous: bytes | None = None
    previous_mode: int | None = None


def commit_writes(
    writes: Sequence[FileWrite],
    deletes: Sequence[Path] = (),
    *,
    spares: SparePool | None = None,
    journal: Path | None = None,
    unchanged: Mapping[str, FileStamp | None] | None = None,
) -> None:
    """Apply every write and delete, or none of them (the exception is re-raised).

    Every new content goes to a temporary file beside its target first (same directory, so
    no rename crosses a filesystem): a failure while writing them (a full disk) leaves every
    file as it was. Then each target is swapped with its temporary file by one atomic
    `renameat2(RENAME_EXCHANGE)`: the target has the new content and the temporary name the
    old one, so a crash at any point leaves each file with its old or its new content, never
    a mix or a partial write, and a failure later puts every swapped file back by renaming
    its old file over it (no write, so no free space needed; the very inode comes back).
    The old contents are unlinked once every step has succeeded. A deleted file is renamed
    aside until then.

    Where the exchange is not available (not Linux, a filesystem without it) a target is
    replaced with `os.replace` instead and its old content kept otherwise: a file whose
    previous content the caller passed (`FileWrite.previous`) gets it back through another
    temporary file and rename; any other replaced file was hard-linked aside before its
    swap. Nothing is kept aside for the last replace of a commit without deletes (nothing
    after it can fail).

    No fsync: the rename is atomic against a crashing daemon, and the data is in the page
    cache; durability across power loss is the filesystem's business, as for every other
    write of a tool (each file's writeback is started just before its exchange, as ext4
    does inside a rename over a file).

    With `spares` (tools/spares.py), each temporary file is a spare file of earlier commits
    where the pool has one, and the old files (and deleted ones) are given to the pool, emptied,
    instead of unlinked: a commit then creates and deletes no file, the cost that dominates on
    ext4. Nothing else changes: the same swaps, the same rollback.

    With `journal` (a directory, tools/commit_journal.py), a commit of more than one file
    records what it is about to swap before the first swap, so that one a killed daemon cut
    short is finished or rolled back at the next start; where the exchange is missing there
    is no journal (a replaced file's old content may then be in memory only).

    `unchanged`: the targets (written or deleted) the caller read, by `os.fspath`, each with
    its stamp then (`file_stamp`; None: it did not exist). Each must still be that file when
    it is swapped out, or the commit raises `FileChangedError` and puts back what it swapped,
    changing nothing: a write the caller did not make (a command's, an editor's) is not
    overwritten with content computed from what was there before it. Where the exchange
    exists the file compared is the one the exchange took out (it `lstat`s it anyway), so no
    write can come between the check and the swap, and the check costs no system call; a
    replace compares the target just before it, a delete the file it moved aside.
    """
    tag = secrets.token_hex(6)  # one random part per commit; files add their own number
    recorded: Journal | None = None
    created_dirs: list[Path] = []
    existing_dirs: set[str] = set()
    temps: list[str] = []
    # what to undo, in order: (target, aside, the write whose `previous` is put back).
    # aside: the old file, renamed over the target to undo (an exchange's temporary name, a
    # backup link, a deleted file moved aside); the write: its `previous` is written back;
    # both None: the target was created, so it is removed
    done: list[tuple[str, str | None, FileWrite | None]] = []
    # a backup made for a replace that has not happened yet: only the backup must go
    pending_backup: str | None = None
    swapped = 0  # temps[:swapped] are renamed (a temporary name then holds an old file)
    exchange = rename_exchange
    last = len(writes) - 1 if not deletes else -1
    try:
        if journal is not None and exchange is not None and len(writes) + len(deletes) > 1:
            recorded = Journal.begin(journal, tag, _planned_temps(writes, tag))
        for number, write in enumerate(writes):
            parent = os.path.dirname(os.fspath(write.path))  # a str: no Path built per file
            if parent not in existing_dirs:
                created_dirs.extend(_make_parents(write.path.parent))
                existing_dirs.add(parent)
            temps.append(_write_temp(write, f"{tag}{number}", spares))
        if recorded is not None:
            _record_swaps(recorded, tag, writes, temps, deletes, created_dirs)
        for number, (write, temp) in enumerate(zip(writes, temps, strict=True)):
            target = os.fspath(write.path)
            missing = False  # the exchange found nothing at the target
            if exchange is not None:
                if start_writeback is not None:
                    # what ext4 does inside a rename over a file (`auto_da_alloc`), not inside
                    # an exchange: the data goes out before the swap is journalled, so a
                    # power loss does not leave the target empty
                    start_writeback(temp)
                try:
                    exchange(temp, target)
                except FileNotFoundError:
                    missing = True  # nothing at the target to exchange with: a new file,
                    # renamed below
                except OSError as exc:
                    if exc.errno not in _NO_EXCHANGE:
                        raise
                    exchange = None  # this filesystem cannot: replace, as below, from now on
                    if recorded is not None:  # which a journal cannot undo
                        recorded.end()
                        recorded = None
                else:
                    old = os.lstat(temp)  # what the target was until the exchange
                    if stat.S_ISDIR(old.st_mode):
                        # `os.replace` refuses to put a file over a directory; so does this
                        exchange(temp, target)
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
                    if unchanged is not None and target in unchanged:
                        if file_stamp(old) != unchanged[target]:
                            exchange(temp, target)  # theirs back
                            raise FileChangedError(write.path)
                    swapped += 1
                    done.append((target, temp, None))
                    continue
            if unchanged is not None and target in unchanged:
                now = None if missing else _stamp_now(target)
                if now != unchanged[target]:
                    raise FileChangedError(write.path)
            if number == last:
                # nothing after this can fail, and if this fails the target is untouched
                os.replace(temp, target)
                swapped += 1
                break
            if write.previous is not None:
                os.replace(temp, target)
                swapped += 1
                done.append((target, None, write))
                continue
            pending_backup = _backup(target, f"{tag}{number}", link=True)
            os.replace(temp, target)
            swapped += 1
            done.append((target, pending_backup, None))
            pending_backup = None
        for number, path in enumerate(deletes):
            target = os.fspath(path)
            try:
                aside = _backup(target, f"{tag}d{number}", link=False)
            except FileNotFoundError:
                if unchanged is not None and target in unchanged:
                    raise FileChangedError(path) from None  # deleted meanwhile
                raise
            done.append((target, aside, None))
            if unchanged is not None and target in unchanged and aside is not None:
                if file_stamp(os.lstat(aside)) != unchanged[target]:
                    raise FileChangedError(path)  # (put back with the rest)
    except BaseException:
        if pending_backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(pending_backup)
        for temp in temps[swapped:]:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        for number, (target, aside, undo) in reversed(list(enumerate(done))):
            with contextlib.suppress(OSError):
                if aside is not None:
                    os.replace(aside, target)
                elif undo is not None and undo.previous is not None:
                    restore = FileWrite(undo.path, undo.previous, undo.previous_mode)
                    os.replace(_write_temp(restore, f"{tag}r{number}"), target)
                else:
                    os.unlink(target)
        for directory in reversed(created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        if recorded is not None:
            recorded.end()
        raise
    for _target, aside, _write in done:
        if aside is not None and (spares is None or not spares.give(aside)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
    if recorded is not None:
        recorded.end()


def _planned_temps(writes: Sequence[FileWrite], tag: str) -> list[tuple[str, str]]:
    """Each target with the temporary name `_write_temp` gives it (unless that name is taken,
    when it draws another tag)."""
    planned = []
    for number, write in enumerate(writes):
        directory, name = os.path.split(os.fspath(write.path))
        planned.append(
            (
                os.fspath(write.path),
                os.path.join(directory, _aside_name(name, f"{tag}{number}", "tmp")),
            )
        )
    return planned


def _record_swaps(
    journal: Journal,
    tag: str,
    writes: Sequence[FileWrite],
    temps: list[str],
    deletes: Sequence[Path],
    created_dirs: list[Path],
) -> None:
    """The commit's swaps, to its journal: each target with its temporary file and that
    file's inode (the target's once they are exchanged), each deleted file with the name it
    will be moved to."""
    swaps = [
        (os.fspath(write.path), temp, os.lstat(temp).st_ino)
        for write, temp in zip(writes, temps, strict=True)
    ]
    asides = []
    for number, path in enumerate(deletes):
        parent, name = os.path.split(os.fspath(path))
        asides.append(
            (os.fspath(path), os.path.join(parent, _aside_name(name, f"{tag}d{number}", "bak")))
        )
    journal.record_swaps(swaps, asides, [os.fspath(d) for d in created_dirs])


def _make_parents(directory: Path) -> list[Path]:
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_temp(write: FileWrite, tag: str, spares: SparePool | None = None) -> str:
    """A new file beside `write.path` holding `write.data` with the target's mode (a spare
    file from `spares` where it has one)."""
    mode = write.mode
    if mode is None:
        mode = file_mode(write.path)
    if mode is None:
        mode = new_file_mode()
    directory, name = os.path.split(os.fspath(write.path))
    temp = os.path.join(directory, _aside_name(name, tag, "tmp"))
    fd = spares.take(temp) if spares is not None else None
    spare = fd is not None
    while fd is None:
        try:
            # created with its final mode where the umask allows it (one chmod less)
            fd = os.open(temp, _CREATE, mode)
        except FileExistsError:
            tag = secrets.token_hex(6)  # a leftover of an earlier crash: take another name
            temp = os.path.join(directory, _aside_name(name, tag, "tmp"))
    try:
        try:
            if spare or mode & _UMASK:
                os.fchmod(fd, mode)
            view = memoryview(write.data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


# The longest file name most filesystems take (ext4, APFS, tmpfs: NAME_MAX bytes).
NAME_MAX = 255


def _aside_name(name: str, tag: str, suffix: str) -> str:
    """`.{name}.{tag}.{suffix}`: a hidden name beside `name` that says whose it is, with
    `name` shortened (whole characters) where the whole would pass NAME_MAX, so a file whose
    own name is near the limit can still be written."""
    aside = f".{name}.{tag}.{suffix}"
    while len(os.fsencode(aside)) > NAME_MAX and name:
        name = name[:-1]
        aside = f".{name}.{tag}.{suffix}"
    return aside


def _backup(path: str, tag: str, *, link: bool) -> str | None:
    """Keep the current `path` aside under a temporary name so it can be restored.

    `link=True` (before a replace) hard-links it, falling back to a copy where links are not
    supported, so `path` never disappears; it is None when there is nothing at `path`.
    `link=False` (a delete) renames it away.
    """
    directory, name = os.path.split(path)
    while True:
        backup = os.path.join(directory, _aside_name(name, tag, "bak"))
        try:
            if not link:
                if os.path.lexists(backup):
                    raise FileExistsError(backup)
                os.replace(path, backup)
            else:
                os.link(path, backup, follow_symlinks=False)
            return backup
        except FileExistsError:
            tag = secrets.token_hex(6)  # a leftover of an earlier crash: take another name
        except FileNotFoundError:
            if link and not os.path.lexists(path):
                return None  # a new file: nothing to keep
            raise
        except OSError:
            if not link:
                raise
            shutil.copy2(path, backup, follow_symlinks=False)
            return backup
