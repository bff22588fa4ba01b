"""apply_patch: edit workspace files with a Codex patch envelope or a unified diff.

Three steps, each usable on its own (like Codex's apply-patch crate):

1. `parse_patch(text) -> Patch` turns the model's text into a typed plan (`AddFile`,
   `DeleteFile`, `UpdateFile` with `Hunk`s). It strips the wrappers models put around patches
   (a heredoc such as `apply_patch <<'EOF'`, a markdown fence), detects the format and reports
   malformed input with the patch line that is wrong. Unified diffs are parsed by `unidiff`.
2. `plan_changes(patch, workspace) -> list[FileChange]` reads every file the patch touches
   and computes its new content in memory. Hunks are located by their context and removed
   lines, searching forward from the previous hunk with progressively looser comparison
   (exact, then ignoring trailing whitespace, then leading and trailing whitespace, then with
   typographic punctuation normalised). Every failure is collected and raised together as
   `PatchFailed`, naming the file, the hunk and the first line that could not be found, with
   the closest line in the file.
3. `commit_changes(changes)` writes them all or none (`tools.textfile.commit_writes`).

The tool runs steps 2 and 3 in a worker thread and then emits one `file_edit` event per file.
"""

from __future__ import annotations

import bisect
import codecs
import difflib
import logging
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from unidiff.errors import UnidiffParseError
from unidiff.patch import Hunk as UnidiffHunk
from unidiff.patch import PatchedFile, PatchSet

from tools.base import (
    NO_SPACE_ERRNOS,
    Tool,
    ToolArgs,
    ToolContext,
    ToolError,
    ToolResult,
    disk_full_error,
)
from tools.commit_journal import journal_directory
from tools.commit_journal import recover as recover_commits
from tools.diffs import TextLines, diff_regions, diff_texts
from tools.spares import SparePool, spares_for
from tools.textfile import (
    BinaryFileError,
    FileChangedError,
    FileStamp,
    FileWrite,
    TextFile,
    changed_meanwhile,
    commit_writes,
    decode_text,
    detect_newline,
    file_stamp,
    new_file_mode,
    rename_exchange,
    split_lines,
)
from tools.workspace import PathOutsideWorkspace, Workspace

log = logging.getLogger("agentd.tools")

MAX_FILE_BYTES = 64 * 1024 * 1024
DEV_NULL = "/dev/null"

# ---------------------------------------------------------------------------------------------
# The typed plan


@dataclass
class Hunk:
    """One hunk: `body` is the hunk's lines as (kind, text), kind in " ", "-", "+"."""

    number: int
    header: str
    body: list[tuple[str, str]] = field(default_factory=list)
    # Envelope `@@ <line>` headers: lines found in order before the hunk is searched for.
    anchors: list[str] = field(default_factory=list)
    # Envelope `*** End of File`: the hunk's old lines end the file.
    at_eof: bool = False
    # Unified diffs: the 0-based line where the hunk claims to start in the original file.
    hint: int | None = None
    # Unified diffs: a `\ No newline at end of file` marker after the last old / new line.
    old_no_newline: bool = False
    new_no_newline: bool = False

    @property
    def old(self) -> list[str]:
        return [text for kind, text in self.body if kind != "+"]

    @property
    def new(self) -> list[str]:
        return [text for kind, text in self.body if kind != "-"]

    @property
    def has_newline_markers(self) -> bool:
        return self.old_no_newline or self.new_no_newline


@dataclass
class AddFile:
    path: str
    lines: list[str]
    no_final_newline: bool = False
    executable: bool = False
    # Codex's `*** Add File` replaces an existing file; a unified diff's new file may not.
    overwrite: bool = True


@dataclass
class DeleteFile:
    path: str
    # Unified diffs carry the deleted content: it must match the file.
    hunks: list[Hunk] = field(default_factory=list)


@dataclass
class UpdateFile:
    path: str
    hunks: list[Hunk]
    move_to: str | None = None
    # Unified diffs without git headers: other spellings of the path, tried in order.
    alternatives: tuple[str, ...] = ()
    # Unified diffs with `old mode` / `new mode`: set (True) or clear (False) the x bits.
    executable: bool | None = None


FileOp = AddFile | DeleteFile | UpdateFile


@dataclass
class Patch:
    format: Literal["envelope", "unified"]
    ops: list[FileOp]


class PatchParseError(ToolError):
    """The patch text is malformed; the message says where and how to fix it."""


class PatchFailed(ToolError):
    """The patch does not apply; nothing was written. `failures` has one message per file."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__(
            "apply_patch failed; no file was changed.\n\n"
            + "\n\n".join(failures)
            + "\n\nFix these parts (read the files first if unsure of their content) and "
            "send the whole patch again."
        )


# ---------------------------------------------------------------------------------------------
# Step 1: parsing

_HEREDOC_START = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")
_FENCE = re.compile(r"^\s*(```|~~~)")
_UNIFIED_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
# a line starting with "@@" that _UNIFIED_HUNK does not match, searched for in "\n" + the
# diff: one search of the whole diff that skips from one "\n@@" to the next (a pattern that
# starts with text, unlike `^` in MULTILINE mode, which is tried at every character)
_UNNUMBERED_HUNK = re.compile(r"\n@@(?! -\d+(?:,\d+)? \+\d+(?:,\d+)? @@)")
_FILE_HEADERS = ("*** Add File:", "*** Delete File:", "*** Update File:", "*** End Patch")


def parse_patch(text: str) -> Patch:
    """Parse an envelope or unified diff (wrappers removed) into a `Patch`."""
    lines = unwrap(text)
    if "*** Begin Patch" in text and any(line.strip() == "*** Begin Patch" for line in lines):
        return _parse_envelope(lines)
    if _looks_unified(lines):
        return _parse_unified(lines)
    raise PatchParseError(
        "apply_patch input is neither a patch envelope nor a unified diff. Send either\n"
        "*** Begin Patch\n*** Update File: path/to/file\n@@ optional line to anchor on\n"
        " context line\n-removed line\n+added line\n*** End Patch\n"
        "or a unified diff with '--- a/path' and '+++ b/path' headers and '@@ -l,n +l,n @@' "
        "hunks."
    )


def unwrap(text: str) -> list[str]:
    """The patch's lines without CRLF, a surrounding code fence or heredoc."""
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1]:  # not .strip(): " " is a blank context line
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    # Closing fences and heredoc delimiters are matched without leading whitespace, so a
    # context line " ```" or " EOF" inside the patch is never taken for one.
    if lines and (fence := _FENCE.match(lines[0])) is not None:
        closing = [i for i in range(1, len(lines)) if lines[i].rstrip() == fence.group(1)]
        lines = lines[1 : closing[-1]] if closing else lines[1:]
    if lines and not lines[0].startswith(("*** ", "--- ", "diff ", "+++ ", "@@")):
        heredoc = _HEREDOC_START.search(lines[0])
        if heredoc is not None:
            delimiter = heredoc.group(2)
            end = next(
                (i for i in range(len(lines) - 1, 0, -1) if lines[i].rstrip() == delimiter),
                None,
            )
            if end is None:
                # `<<'EOF'` whose closing EOF is followed by the end of a quoted command
                end = next(
                    (i for i in range(len(lines) - 1, 0, -1) if lines[i].startswith(delimiter)),
                    len(lines),
                )
            lines = lines[1:end]
    return lines


def _looks_unified(lines: Sequence[str]) -> bool:
    for i, line in enumerate(lines):
        if line.startswith("diff --git "):
            return True
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            return True
    return False


def _parse_envelope(lines: list[str]) -> Patch:
    begin = next(i for i, line in enumerate(lines) if line.strip() == "*** Begin Patch")
    end = next(
        (i for i in range(len(lines) - 1, begin, -1) if lines[i].strip() == "*** End Patch"),
        None,
    )
    if end is None:
        raise PatchParseError(
            "The patch has '*** Begin Patch' but no '*** End Patch' line (was it cut off?). "
            "End the patch with '*** End Patch' on its own line."
        )
    ops: list[FileOp] = []
    i = begin + 1
    while i < end:
        line = lines[i]
        stripped = line.strip()
        where = f"patch line {i + 1}"
        if not stripped:
            i += 1
        elif stripped.startswith("*** Add File:"):
            path = _header_path(stripped, "*** Add File:", where)
            i, content = _parse_add_body(lines, i + 1, end, path)
            ops.append(AddFile(path=path, lines=content))
        elif stripped.startswith("*** Delete File:"):
            ops.append(DeleteFile(path=_header_path(stripped, "*** Delete File:", where)))
            i += 1
        elif stripped.startswith("*** Update File:"):
            path = _header_path(stripped, "*** Update File:", where)
            i += 1
            move_to = None
            if i < end and lines[i].strip().startswith("*** Move to:"):
                move_to = _header_path(lines[i].strip(), "*** Move to:", f"patch line {i + 1}")
                i += 1
            i, hunks = _parse_update_body(lines, i, end, path)
            if not hunks and move_to is None:
                raise PatchParseError(
                    f"{where}: '*** Update File: {path}' has no hunks. Add hunks starting with "
                    "'@@', or remove the section."
                )
            ops.append(UpdateFile(path=path, hunks=hunks, move_to=move_to))
        else:
            raise PatchParseError(
                f"{where}: expected '*** Add File: <path>', '*** Delete File: <path>', "
                f"'*** Update File: <path>' or '*** End Patch', got {line!r}."
            )
    if not ops:
        raise PatchParseError("The patch envelope is empty: it changes no file.")
    return Patch(format="envelope", ops=ops)


def _header_path(stripped: str, prefix: str, where: str) -> str:
    path = stripped[len(prefix) :].strip()
    if not path:
        raise PatchParseError(f"{where}: {prefix!r} needs a file path after it.")
    if path.endswith("/"):
        raise PatchParseError(
            f"{where}: {path!r} ends with '/', which names a directory; apply_patch edits "
            "files (a file's directories are made for it): name the file."
        )
    return path


def _is_file_header(line: str) -> bool:
    # the substring test (in C) spares stripping every hunk line of a large patch
    return "***" in line and line.strip().startswith(_FILE_HEADERS)


def _parse_add_body(lines: list[str], i: int, end: int, path: str) -> tuple[int, list[str]]:
    content: list[str] = []
    bare_blanks = 0  # blank lines without '+': kept only when more content follows
    while i < end and not _is_file_header(lines[i]):
        line = lines[i]
        if line.startswith("+"):
            content.extend([""] * bare_blanks)
            bare_blanks = 0
            content.append(line[1:])
        elif not line.strip():
            bare_blanks += 1
        else:
            raise PatchParseError(
                f"patch line {i + 1}: every line of '*** Add File: {path}' must start with '+' "
                f"(got {line!r})."
            )
        i += 1
    return i, content


def _parse_update_body(lines: list[str], i: int, end: int, path: str) -> tuple[int, list[Hunk]]:
    hunks: list[Hunk] = []
    current: Hunk | None = None

    def start(header: str) -> Hunk:
        hunk = Hunk(number=len(hunks) + 1, header=header)
        hunks.append(hunk)
        return hunk

    while i < end:
        line = lines[i]
        # every file header and `*** End of File` holds "***": the hunks' lines, nearly all
        # of a patch, are told from them by that substring test (in C), without a call each
        if "***" in line:
            if _is_file_header(line):
                break
            if line.strip() == "*** End of File":
                if current is None or not current.body:
                    raise PatchParseError(
                        f"patch line {i + 1}: '*** End of File' must follow a hunk's lines."
                    )
                current.at_eof = True
                current = None
                i += 1
                continue
        kind = line[:1]
        if kind in (" ", "-", "+") or not line:
            if current is None:
                current = start("@@")
            current.body.append((kind or " ", line[1:]))
        elif line.startswith("@@"):
            if current is None or current.body:
                current = start(line.strip())
            else:
                current.header += " " + line.strip()
            numbered = _UNIFIED_HUNK.match(line.strip())
            if numbered is not None:
                # a unified-style header inside an envelope: its line number is a hint
                current.hint = max(int(numbered.group(1)) - 1, 0)
            else:
                anchor = line[3:] if line.startswith("@@ ") else line[2:]
                if anchor.strip():
                    current.anchors.append(anchor)
        else:
            raise PatchParseError(
                f"patch line {i + 1}: unexpected line in '*** Update File: {path}': {line!r}. "
                "Hunk lines start with ' ' (context), '-' (removed) or '+' (added); hunks "
                "start with '@@' or '@@ <a line of the file to anchor on>'."
            )
        i += 1
    for hunk in hunks:
        if not hunk.body:
            raise PatchParseError(
                f"'*** Update File: {path}': hunk {hunk.number} ({hunk.header}) has no lines."
            )
    return i, hunks


def _parse_unified(lines: list[str]) -> Patch:
    source = "\n".join(lines) + "\n"
    split = [*lines, ""]  # source.split("\n")
    if _UNNUMBERED_HUNK.search("\n" + source):
        source = _recount_hunks(lines)
        split = source.split("\n")
    # unidiff checks the structure and reads the headers; keeping every line as an object is
    # most of its cost, so it only reads metadata and `_hunk_bodies` takes the lines.
    try:
        patch_set = PatchSet(source, metadata_only=True)
    except UnidiffParseError:
        # Models often miscount the lengths in `@@ -a,b +c,d @@`: the body decides.
        try:
            source = _recount_hunks(lines)
            split = source.split("\n")
            patch_set = PatchSet(source, metadata_only=True)
        except UnidiffParseError as exc:
            raise PatchParseError(f"The unified diff could not be parsed: {exc}.") from None
    bodies = _hunk_bodies(split)
    if len(bodies) != sum(len(patched) for patched in patch_set):
        raise RuntimeError("apply_patch found other hunks in the unified diff than unidiff did")
    ops: list[FileOp] = []
    taken = 0
    for patched in patch_set:
        hunks = [
            _unified_hunk(number, meta, bodies[taken + number - 1])
            for number, meta in enumerate(patched, 1)
        ]
        taken += len(hunks)
        op = _unified_op(patched, hunks)
        if op is not None:
            ops.append(op)
    if not ops:
        raise PatchParseError("The unified diff changes no file (no '@@' hunks were found).")
    return Patch(format="unified", ops=ops)


def _recount_hunks(lines: list[str]) -> str:
    """Rewrite every hunk header with the lengths its body really has."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("@@"):
            out.append(line)
            i += 1
            continue
        numbered = _UNIFIED_HUNK.match(line)
        j = i + 1
        while j < len(lines):
            body_line = lines[j]
            if body_line.startswith(("@@", "diff --git ")):
                break
            if (
                body_line.startswith("--- ")
                and j + 1 < len(lines)
                and lines[j + 1].startswith("+++ ")
            ):
                break
            if body_line[:1] not in (" ", "-", "+", "\\") and body_line != "":
                break
            j += 1
        body = lines[i + 1 : j]
        trailing_blanks = 0
        while body and body[-1] == "":
            body.pop()
            trailing_blanks += 1
        old = sum(1 for b in body if b[:1] in (" ", "-", ""))
        new = sum(1 for b in body if b[:1] in (" ", "+", ""))
        # no numbers in the header: 0 as the old start marks "no position hint"
        old_start = numbered.group(1) if numbered else "0"
        new_start = numbered.group(3) if numbered else "0"
        section = numbered.group(5) if numbered else line[2:].strip().strip("@").strip()
        out.append(
            f"@@ -{old_start},{old} +{new_start},{new} @@" + (f" {section}" if section else "")
        )
        out.extend(body)
        out.extend([""] * trailing_blanks)
        i = j
    return "\n".join(out) + "\n"


_GIT_PREFIX = re.compile(r"^[abciow12]/")


def _unified_op(patched: PatchedFile, hunks: list[Hunk]) -> FileOp | None:
    info = [str(line).rstrip("\n") for line in (patched.patch_info or [])]
    git = any(line.startswith("diff --git ") for line in info)
    source = _unquote(patched.source_file or "")
    target = _unquote(patched.target_file or "")
    prefixed = all(p == DEV_NULL or _GIT_PREFIX.match(p) for p in (source, target))
    if prefixed:
        source = source if source == DEV_NULL else source[2:]
        target = target if target == DEV_NULL else target[2:]
    if patched.is_binary_file:
        raise PatchParseError(
            f"The diff for {target if target != DEV_NULL else source} is a binary patch; "
            "apply_patch only edits text files."
        )
    renamed_from = _info_value(info, "rename from ")
    renamed_to = _info_value(info, "rename to ")
    if renamed_from and renamed_to:
        source, target = renamed_from, renamed_to
    if source == DEV_NULL or (not git and patched.is_added_file and not patched.is_removed_file):
        lines = [text for hunk in hunks for text in hunk.new]
        path = target if source == DEV_NULL or git else (target or source)
        return AddFile(
            path=path,
            lines=lines,
            no_final_newline=bool(hunks) and hunks[-1].new_no_newline,
            executable=patched.target_mode == "100755",
            overwrite=False,
        )
    if target == DEV_NULL or any(line.startswith("deleted file mode") for line in info):
        return DeleteFile(path=source, hunks=hunks)
    executable = None
    if patched.source_mode and patched.target_mode and patched.source_mode != patched.target_mode:
        executable = patched.target_mode == "100755"
    if git or prefixed:
        move_to = target if target != source else None
        if not hunks and move_to is None and executable is None:
            return None
        return UpdateFile(path=source, hunks=hunks, move_to=move_to, executable=executable)
    # `diff -u old new`: the names differ by convention (file.orig, dir1/ vs dir2/), not as a
    # rename; try the target, the source, then each without its first directory (-p1).
    candidates = [target, source]
    for path in (target, source):
        if "/" in path:
            candidates.append(path.split("/", 1)[1])
    unique = tuple(dict.fromkeys(p for p in candidates if p))
    return UpdateFile(path=unique[0], hunks=hunks, alternatives=unique[1:])


def _info_value(info: list[str], prefix: str) -> str | None:
    for line in info:
        if line.startswith(prefix):
            return _unquote(line[len(prefix) :])
    return None


def _unquote(path: str) -> str:
    """Git quotes paths with unusual characters as C strings with octal escapes."""
    path = path.strip()
    if len(path) >= 2 and path[0] == path[-1] == '"':
        try:
            raw = codecs.escape_decode(path[1:-1].encode("utf-8"))[0]
        except ValueError as exc:
            raise PatchParseError(
                f"The quoted path {path} has an invalid escape ({exc}); git quotes a path as a "
                'C string ("a/caf\\303\\251.txt"), or give it unquoted.'
            ) from None
        return raw.decode("utf-8", errors="surrogateescape")
    return path


@dataclass
class _HunkBody:
    lines: list[tuple[str, str]]
    old_no_newline: bool = False
    new_no_newline: bool = False


_NO_NEWLINE = "\\ No newline at end of file"


def _hunk_bodies(lines: list[str]) -> list[_HunkBody]:
    """The lines of every hunk of a unified diff that unidiff has validated, in order, cut
    where unidiff cuts them: after each header, as many lines as its lengths count (`\\`
    markers aside), then the markers and blank lines that follow."""
    bodies: list[_HunkBody] = []
    i, total = 0, len(lines)
    while i < total:
        header = _UNIFIED_HUNK.match(lines[i]) if lines[i].startswith("@@ -") else None
        i += 1
        if header is None:
            continue
        old_left = int(header.group(2) or 1)
        new_left = int(header.group(4) or 1)
        body = _HunkBody([])
        taken = body.lines
        append = taken.append
        while i < total and (old_left > 0 or new_left > 0):
            line = lines[i]
            kind = line[:1]
            i += 1
            # the three kinds of nearly every line first, each with what it counts
            if kind == " ":
                append((" ", line[1:]))
                old_left -= 1
                new_left -= 1
            elif kind == "-":
                append(("-", line[1:]))
                old_left -= 1
            elif kind == "+":
                append(("+", line[1:]))
                new_left -= 1
            elif kind == "\\":
                previous = taken[-1][0] if taken else None
                body.old_no_newline |= previous in (" ", "-")
                body.new_no_newline |= previous in (" ", "+")
            else:
                # an empty line (or a stray CR) is a context line, as unidiff reads it;
                # another first character counts as one too
                append((" ", line) if kind in ("", "\r") else (kind, line[1:]))
                old_left -= 1
                new_left -= 1
        previous = taken[-1][0] if taken else None
        while i < total and (not lines[i] or lines[i].startswith(_NO_NEWLINE)):
            if lines[i]:
                body.old_no_newline |= previous in (" ", "-")
                body.new_no_newline |= previous in (" ", "+")
            i += 1
        bodies.append(body)
    return bodies


def _unified_hunk(number: int, hunk: UnidiffHunk, body: _HunkBody) -> Hunk:
    header = (
        f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},{hunk.target_length} @@"
    )
    if hunk.source_start == 0 and hunk.source_length > 0:
        hint = None  # header written without line numbers
    elif hunk.source_length == 0:
        hint = hunk.source_start  # an insertion goes after line `source_start`
    else:
        hint = hunk.source_start - 1
    return Hunk(
        number=number,
        header=header,
        body=body.lines,
        hint=hint,
        old_no_newline=body.old_no_newline,
        new_no_newline=body.new_no_newline,
    )


# ---------------------------------------------------------------------------------------------
# Step 2: locating hunks and computing new contents

_PUNCTUATION = str.maketrans(
    {
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033", '"'),
        **dict.fromkeys("\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a", " "),
        **dict.fromkeys("\u202f\u205f\u3000", " "),
        "\u2026": "...",
    }
)


def _normalise_punctuation(line: str) -> str:
    return line.translate(_PUNCTUATION).strip()


# (description for notes, normaliser), from strictest to loosest
LEVELS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("exactly", lambda line: line),
    ("ignoring trailing whitespace", str.rstrip),
    ("ignoring leading and trailing whitespace", str.strip),
    ("with typographic punctuation normalised", _normalise_punctuation),
)
LOOSEST = len(LEVELS) - 1


class LineIndex:
    """The lines of one file, with per-level lookup tables built on first use."""

    def __init__(
        self, lines: list[str], searched: Iterable[str] | None = None, *, probes: int = 0
    ) -> None:
        """`searched`: every line `only_exact` will be asked about, if known (read on its
        first call); then only those are counted, where counting a file's lines, mostly
        distinct, means a dict entry per line. A line left out counts as absent: its
        pattern goes through the level-by-level search.

        `probes`: how many `only_exact` calls may first look for one line of their pattern
        that occurs once, by comparing it with every line, before the lines are counted.
        Only for callers whose patterns' lines are all in `searched`."""
        self.lines = lines
        self._normalised: dict[int, list[str]] = {0: lines}
        self._positions: dict[int, dict[str, list[int]]] = {}
        self._counts: Counter[str] | None = None
        self._searched = searched
        self._probes = probes

    def normalised(self, level: int) -> list[str]:
        if level not in self._normalised:
            normalise = LEVELS[level][1]
            self._normalised[level] = [normalise(line) for line in self.lines]
        return self._normalised[level]

    def _table(self, level: int) -> dict[str, list[int]]:
        table = self._positions.get(level)
        if table is None:
            table = {}
            for i, line in enumerate(self.normalised(level)):
                table.setdefault(line, []).append(i)
            self._positions[level] = table
        return table

    def only_exact(self, pattern: list[str], start: int, expected: int | None) -> int | None:
        """Where `pattern` occurs exactly at or after `start`, if it occurs exactly once in the
        whole file (so the match is not ambiguous); None when that is not the case or cannot be
        told cheaply, and the caller searches level by level.

        The common case of a patch (its context is in the file as written, at the stated line)
        costs a count of the file's lines and a comparison, without the lookup tables.
        """
        if not pattern:
            return None
        offset = self._probe(pattern) if self._counts is None and self._probes else None
        if offset is None:
            if self._counts is None:
                if self._searched is None:
                    self._counts = Counter(self.lines)
                else:
                    wanted = set(self._searched)
                    self._counts = Counter(filter(wanted.__contains__, self.lines))
            counts = self._counts
            frequencies = list(map(counts.__getitem__, pattern))
            offset = frequencies.index(min(frequencies))  # the first of the rarest lines
            if frequencies[offset] != 1:
                return None
        elif offset < 0:
            return None  # a line of the pattern is not in the file
        # pattern[offset] occurs once in the file, so the pattern occurs once at most
        size = len(pattern)
        if expected is not None and start <= expected:
            if self.lines[expected : expected + size] == pattern:
                return expected
        try:
            at = self.lines.index(pattern[offset], start + offset)
        except ValueError:
            return None
        first = at - offset
        return first if self.lines[first : first + size] == pattern else None

    def _probe(self, pattern: list[str]) -> int | None:
        """Where in `pattern` a line is that occurs once in the file (the pattern's longest
        line, the likeliest to), -1 if that line is not in the file, None if it occurs more
        than once (then the lines are counted). A comparison per line (`list.count`) costs
        a quarter of a line counted (a hash and a dict entry): for a patch's few hunks of a
        file, probing each hunk costs less than counting the file once."""
        self._probes -= 1
        longest = max(pattern, key=len)
        occurrences = self.lines.count(longest)
        if occurrences > 1:
            return None
        return pattern.index(longest) if occurrences else -1

    def matches(self, pattern: Sequence[str], level: int, start: int = 0) -> Iterator[int]:
        """Positions >= start where `pattern` occurs at `level`, in order."""
        if not pattern:
            return
        normalise = LEVELS[level][1]
        wanted = [normalise(line) for line in pattern]
        table = self._table(level)
        # walk the occurrences of the pattern's rarest line
        rarest: list[int] | None = None
        offset = 0
        for k, line in enumerate(wanted):
            occurrences = table.get(line)
            if occurrences is None:
                return
            if rarest is None or len(occurrences) < len(rarest):
                rarest, offset = occurrences, k
        assert rarest is not None
        norm = self.normalised(level)
        size, total = len(wanted), len(norm)
        for at in rarest[bisect.bisect_left(rarest, start + offset) :]:
            first = at - offset
            if first + size > total:
                break
            if norm[first : first + size] == wanted:
                yield first

    def matches_at(self, pattern: Sequence[str], level: int, first: int) -> bool:
        if first < 0 or first + len(pattern) > len(self.lines):
            return False
        normalise = LEVELS[level][1]
        norm = self.normalised(level)
        return all(norm[first + k] == normalise(line) for k, line in enumerate(pattern))

    def find_first(self, pattern: Sequence[str], start: int = 0) -> tuple[int, int] | None:
        """(position, level) of the first occurrence at the strictest level that has one."""
        for level in range(len(LEVELS)):
            found = next(self.matches(pattern, level, start), None)
            if found is not None:
                return found, level
        return None

    def closest(self, line: str, near: int = 0) -> tuple[int, str] | None:
        """The file line most similar to `line` (0-based index, text), if any is similar
        enough; among equally similar lines, the one nearest `near`."""
        target = _normalise_punctuation(line)
        if not target:
            return None
        norm = self.normalised(LOOSEST)
        matcher = difflib.SequenceMatcher()
        matcher.set_seq2(target)  # SequenceMatcher caches its analysis of seq2
        best_score, best = 0.5, set()
        for candidate in dict.fromkeys(norm):
            matcher.set_seq1(candidate)
            if matcher.real_quick_ratio() < best_score or matcher.quick_ratio() < best_score:
                continue
            score = matcher.ratio()
            if score > best_score:
                best_score, best = score, {candidate}
            elif score == best_score:
                best.add(candidate)
        if not best:
            return None
        index = min(
            (i for i, text in enumerate(norm) if text in best), key=lambda i: (abs(i - near), i)
        )
        return index, self.lines[index]


@dataclass
class _Placement:
    start: int
    length: int
    hunk: Hunk
    body: list[tuple[str, str]]


class HunkMismatch(Exception):
    """A hunk could not be placed; the message explains why (without the file name)."""


@dataclass
class AppliedHunks:
    """The outcome of `apply_hunks`."""

    text: str
    # the changed line ranges (i1, i2, j1, j2), old lines i1:i2 became new lines j1:j2
    regions: list[tuple[int, int, int, int]]
    notes: list[str]
    # the old and new text's lines, each split once while applying and reused for the diff
    old_lines: TextLines
    new_lines: TextLines


# the most hunks of one file that probe for a unique line rather than count the file's lines:
# three probes (a comparison per line each) cost about as much as one count
_MOST_PROBED_HUNKS = 3


def apply_hunks(text: str, hunks: Sequence[Hunk], *, nearest_hint: bool) -> AppliedHunks:
    """Apply `hunks` to `text`: the new text, the changed regions and notes.

    `nearest_hint`: when a hunk matches in several places, take the one nearest its line
    number hint (unified diffs) rather than the first after the previous hunk (envelopes).
    Raises `HunkMismatch` for the first hunk that does not fit.
    """
    raw, lines = _file_lines(text)
    newline = detect_newline(text)
    # the hunks' old lines: all that `only_exact` counts. A hunk or two (as most files of a
    # patch have) probe for a unique line rather than count the file's lines: see
    # `LineIndex._probe`. More hunks would cost more than the count, which a failed probe
    # adds to.
    index = LineIndex(
        lines,
        (line for hunk in hunks for kind, line in hunk.body if kind != "+"),
        probes=len(hunks) if len(hunks) <= _MOST_PROBED_HUNKS else 0,
    )
    placements: list[_Placement] = []
    notes: list[str] = []
    cursor = 0
    drift = 0  # how far the previous unified hunk was from its hint
    for hunk in hunks:
        cursor = _find_anchors(index, hunk, cursor)
        body = hunk.body
        old = hunk.old
        if not old:
            start = _insertion_point(hunk, cursor, len(lines))
            placements.append(_Placement(start, 0, hunk, body))
            cursor = start
            continue
        expected = None if hunk.hint is None or not nearest_hint else hunk.hint + drift
        found = _locate(index, old, hunk.at_eof, cursor, expected)
        if found is None and body[-1] == (" ", "") and len(old) > 1:
            # a trailing blank context line often stands for the file's final newline
            body = body[:-1]
            old = [text for kind, text in body if kind != "+"]
            found = _locate(index, old, hunk.at_eof, cursor, expected)
        if found is None:
            raise HunkMismatch(_describe_mismatch(index, hunk, cursor))
        start, level, others = found
        label = f"hunk {hunk.number} ({hunk.header})" if level or others else ""
        if level:
            notes.append(f"{label} matched {LEVELS[level][0]}")
        if others:
            where = ", ".join(str(p + 1) for p in sorted([start, *others])[:6])
            rule = (
                "nearest its line number"
                if expected is not None
                else "first after the previous hunk"
            )
            notes.append(
                f"{label} was ambiguous: its lines occur at lines {where}; used line "
                f"{start + 1} ({rule})"
            )
        if hunk.hint is not None:
            drift = start - hunk.hint
        placements.append(_Placement(start, len(old), hunk, body))
        cursor = start + len(old)
    new_text, new_parts, regions = _assemble(raw, lines, newline, placements)
    return AppliedHunks(
        new_text,
        regions,
        notes,
        TextLines(text, parts=raw),
        TextLines(new_text, parts=new_parts),
    )


def _find_anchors(index: LineIndex, hunk: Hunk, cursor: int) -> int:
    for anchor in hunk.anchors:
        found = index.find_first([anchor], cursor)
        if found is None:
            closest = index.closest(anchor, cursor)
            hint = (
                f"\n  Closest line in the file: {closest[0] + 1}: {closest[1]!r}" if closest else ""
            )
            raise HunkMismatch(
                f"hunk {hunk.number} ({hunk.header}): the '@@' context line {anchor.strip()!r} "
                f"was not found after line {cursor}.{hint}"
            )
        # the hunk may start on the anchor line itself (models often repeat it as context)
        cursor = found[0]
    return cursor


def _insertion_point(hunk: Hunk, cursor: int, total: int) -> int:
    if hunk.anchors:
        return cursor + 1
    if hunk.hint is not None:
        return min(max(hunk.hint, cursor), total)
    return total


def _locate(
    index: LineIndex, old: list[str], at_eof: bool, cursor: int, expected: int | None
) -> tuple[int, int, list[int]] | None:
    """(start, level, other matching starts) for `old`, or None."""
    if expected is not None and not at_eof and cursor <= expected:
        # A unified hunk whose lines are exactly at its stated line (shifted as much as the
        # previous hunk was): its line number settles where it goes, as in `git apply` and
        # `patch`, without counting the file's lines or searching for other occurrences.
        if index.lines[expected : expected + len(old)] == old:
            return expected, 0, []
    if not at_eof:
        only = index.only_exact(old, cursor, expected)
        if only is not None:
            return only, 0, []
    if at_eof:
        end_start = len(index.lines) - len(old)
        for level in range(len(LEVELS)):
            if end_start >= cursor and index.matches_at(old, level, end_start):
                return end_start, level, []
    for level in range(len(LEVELS)):
        found = index.matches(old, level, cursor)
        if expected is None:
            first = next(found, None)
            if first is None:
                continue
            second = next(found, None)
            return first, level, [] if second is None else [second]
        every = [p for p, _ in zip(found, range(1000), strict=False)]
        if not every:
            continue
        best = min(every, key=lambda p: (abs(p - expected), p))
        return best, level, [p for p in every if p != best]
    return None


def _describe_mismatch(index: LineIndex, hunk: Hunk, cursor: int) -> str:
    old, new, lines = hunk.old, hunk.new, index.lines
    label = f"hunk {hunk.number} ({hunk.header})"
    if old != new and new and index.find_first(old) is None:
        present = index.find_first(new)
        if present is not None:
            return (
                f"{label} looks already applied: its new lines are in the file at line "
                f"{present[0] + 1} and its old lines are not. Drop this hunk if the change is "
                "already made."
            )
    anywhere = index.find_first(old)
    if anywhere is not None:
        return (
            f"{label}: its lines are in the file at line {anywhere[0] + 1}, before the end of "
            f"the previous hunk (line {cursor}). Hunks must be in file order, without overlap."
        )
    # the longest head of the hunk found at the loosest level, then the line that breaks it
    matched = 0
    at = None
    for size in range(1, len(old) + 1):
        first = next(index.matches(old[:size], LOOSEST, cursor), None)
        if first is None:
            break
        matched, at = size, first
    missing = old[matched]
    lines_desc = f"lines 1-{matched}" if matched > 1 else "line 1"
    message = f"{label}: this context/removed line was not found: {missing!r}"
    if at is not None:
        following = at + matched
        actual = repr(lines[following]) if following < len(lines) else "the end of the file"
        message += (
            f"\n  The hunk's old {lines_desc} match the file at line {at + 1}; there the file "
            f"continues with {actual} (line {following + 1})."
        )
    if at is not None:
        near = at + matched
    else:
        near = cursor if hunk.hint is None else max(hunk.hint, cursor)
    closest = index.closest(missing, near)
    if closest is not None:
        message += f"\n  Closest line in the file: {closest[0] + 1}: {closest[1]!r}"
    return message


def _file_lines(text: str) -> tuple[list[str], list[str]]:
    """`text.split("\\n")` (each part but the last had a newline after it) and the file's
    lines as hunks compare them, without their endings (a CRLF's "\\r" included)."""
    raw = text.split("\n")
    if "\r" in text:
        return raw, split_lines(text)[0]
    return raw, raw[:-1] if raw[-1] == "" else list(raw)


def _assemble(
    raw: list[str],
    lines: list[str],
    newline: str,
    placements: list[_Placement],
) -> tuple[str, list[str], list[tuple[int, int, int, int]]]:
    """The new text, its `split("\\n")` and the changed regions. The new text is built as
    that split: unchanged stretches are the old text's own parts (no copy of their lines), and
    only the hunks' own lines are handled one by one; one join makes the text."""
    total = len(lines)
    complete = len(raw) - 1  # lines 0 .. complete-1 end with "\n"; a line `complete` has none
    # what a line ending in `newline` keeps in its part ("\r" of a CRLF; the "\n" is the split)
    cr = newline[:-1]
    parts: list[str] = []  # a part per line written so far
    regions: list[tuple[int, int, int, int]] = []
    # The line `parts` ends with: the old line `last_old` (>= 0), else the hunk line
    # `last_added` (None: no line yet). Only the old line `complete` has no ending; a line
    # written after it gives it one.
    last_old, last_added = -1, None
    final_newline = raw[-1] == ""

    previous = 0
    for placement in placements:
        start = placement.start
        if previous < start:  # the old lines between hunks
            if last_old == complete:
                parts[-1] += cr
            parts.extend(raw[previous:start])
            last_old = start - 1
        at = start
        context_from = start  # a run of context lines [context_from, at) not copied yet
        # the hunk's changed lines, a run of -/+ lines between context lines at a time, are
        # its regions: the context copied from the file is equal on both sides
        block: tuple[int, int] | None = None
        for kind, text in placement.body:
            if kind == " ":
                if block is not None:
                    regions.append((block[0], at, block[1], len(parts)))
                    block = None
                at += 1
                continue
            # keep the file's own lines for the context (they may differ from the patch in
            # whitespace), a run at a time
            if context_from < at:
                if last_old == complete:
                    parts[-1] += cr
                parts.extend(raw[context_from:at])
                last_old = at - 1
            if block is None:
                block = (at, len(parts))
            if kind == "+":
                if last_old == complete:
                    parts[-1] += cr
                parts.append(text + cr)
                last_old, last_added = -1, text
            else:
                at += 1
            context_from = at
        if block is not None:
            regions.append((block[0], at, block[1], len(parts)))
        if context_from < at:
            if last_old == complete:
                parts[-1] += cr
            parts.extend(raw[context_from:at])
            last_old = at - 1
        previous = start + placement.length
        hunk = placement.hunk
        if hunk.has_newline_markers and previous == total:
            final_newline = not hunk.new_no_newline
    if previous < total:
        if last_old == complete:
            parts[-1] += cr
        parts.extend(raw[previous:total])
        last_old = total - 1
    out_count = len(parts)
    if last_old >= 0:
        last_empty, last_ending = not lines[last_old], _old_ending(raw, last_old)
    elif last_added is not None:
        last_empty, last_ending = not last_added, newline
    else:
        last_empty, last_ending = True, "\n"
    # an empty last line only exists with its newline
    keep = final_newline or last_empty
    if not out_count:
        parts.append("")
    elif keep:
        if not last_ending:
            parts[-1] += cr
        parts.append("")  # the last line's newline
    elif last_ending == "\r\n":
        parts[-1] = parts[-1][:-1]
    if total and out_count:
        ending = _old_ending(raw, total - 1)
        regions = _cover_old_last_line(regions, total, ending, out_count, keep, newline)
    return "\n".join(parts), parts, regions


def _old_ending(raw: list[str], i: int) -> str:
    """The ending of old line `i` given the old text's `split("\\n")`: "" for a last line
    without one."""
    if i >= len(raw) - 1:
        return ""
    return "\r\n" if raw[i].endswith("\r") else "\n"


def _cover_old_last_line(
    regions: list[tuple[int, int, int, int]],
    total: int,
    old_ending: str,
    out_count: int,
    keep_final_newline: bool,
    newline: str,
) -> list[tuple[int, int, int, int]]:
    """If the old last line kept its text but changed its ending outside every region (a line
    appended after it, or its final newline restored), widen the regions to include it so the
    diff shows the change."""
    last = total - 1
    shift = 0
    for i1, i2, _j1, j2 in regions:
        if i1 <= last < i2:
            return regions
        if i2 <= last:
            shift = j2 - i2
    mapped = last + shift
    # outside every region the line was copied as it was; only its ending can have changed
    if mapped < out_count - 1 or keep_final_newline:
        new_ending = old_ending or newline
    else:
        new_ending = ""
    if new_ending == old_ending:
        return regions
    widened = [(last, total, mapped, mapped + 1)]
    merged: list[tuple[int, int, int, int]] = []
    for region in sorted([*regions, *widened]):
        if merged and region[0] <= merged[-1][1] and region[2] <= merged[-1][3]:
            i1, i2, j1, j2 = merged[-1]
            merged[-1] = (i1, max(i2, region[1]), j1, max(j2, region[3]))
        else:
            merged.append(region)
    return merged


# ---------------------------------------------------------------------------------------------
# Step 2 (files): what happens to each file


@dataclass
class FileChange:
    """The computed outcome for one file of the patch."""

    action: Literal["create", "modify", "delete", "move"]
    path: Path  # the file written (or deleted)
    rel: str
    old_text: str | None
    new_text: str | None
    data: bytes | None = None
    mode: int | None = None
    old_mode: int | None = None
    moved_from: Path | None = None
    moved_from_rel: str | None = None
    # the file's bytes as read, to put back if the commit fails after replacing it
    old_data: bytes | None = None
    # each path the plan read or found missing, with its stamp then (None: missing): the
    # commit makes sure nothing else changed it since (tools.textfile.FileChangedError)
    read: list[tuple[str, FileStamp | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diff: str = ""
    added: int = 0
    removed: int = 0

    @property
    def unchanged(self) -> bool:
        return (
            self.action == "modify"
            and self.new_text == self.old_text
            and self.mode == self.old_mode
        )

    @property
    def status(self) -> str:
        return {"create": "A", "modify": "M", "delete": "D", "move": "R"}[self.action]

    def summary(self) -> str:
        name = f"{self.moved_from_rel} -> {self.rel}" if self.moved_from_rel else self.rel
        if self.unchanged:
            return f"{self.status} {name} (unchanged: the patch makes no difference)"
        return f"{self.status} {name} (+{self.added} -{self.removed})"

    def event(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"path": self.rel, "action": self.action, "diff": self.diff}
        if self.moved_from_rel is not None:
            payload["movedFrom"] = self.moved_from_rel
        return payload

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "path": self.rel,
            "action": self.action,
            "status": self.status,
            "added": self.added,
            "removed": self.removed,
        }
        if self.moved_from_rel is not None:
            info["movedFrom"] = self.moved_from_rel
        if self.notes:
            info["notes"] = list(self.notes)
        return info


def plan_changes(patch: Patch, workspace: Workspace) -> list[FileChange]:
    """Validate the whole patch against the files and compute every file's new content.

    Blocking (reads files). Raises `PatchFailed` listing every problem found.
    """
    failures: list[str] = []
    changes: list[FileChange] = []
    touched: dict[Path, str] = {}
    nearest_hint = patch.format == "unified"

    def claim(path: Path, name: str) -> None:
        if path in touched:
            raise HunkMismatch(
                f"it is changed twice in this patch (also as {touched[path]!r}); put all of a "
                "file's hunks in one section"
            )
        touched[path] = name

    for op in patch.ops:
        label = op.path
        applied = None
        try:
            if isinstance(op, AddFile):
                change = _plan_add(op, workspace, claim)
            elif isinstance(op, DeleteFile):
                change = _plan_delete(op, workspace, claim, nearest_hint)
            else:
                label = _existing_spelling(op, workspace)
                change, applied = _plan_update(op, label, workspace, claim, nearest_hint)
        except (HunkMismatch, BinaryFileError, PathOutsideWorkspace) as exc:
            failures.append(f"{label}: {exc}")
            continue
        except IsADirectoryError:
            failures.append(f"{label}: is a directory, not a file")
            continue
        except OSError as exc:
            failures.append(f"{label}: {exc.strerror or exc}")
            continue
        # The diff now rather than once every file is planned: the file's split lines that it
        # reads are then dropped with the rest of this file's working data, not kept (and
        # walked by every garbage collection) until the last file is planned.
        _compute_diff(change, applied)
        changes.append(change)
    if failures:
        raise PatchFailed(failures)
    return changes


def _existing_spelling(op: UpdateFile, workspace: Workspace) -> str:
    if not op.alternatives:
        return op.path
    for candidate in (op.path, *op.alternatives):
        try:
            if workspace.resolve(candidate).is_file():
                return candidate
        except PathOutsideWorkspace:
            continue
    return op.path


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _read_existing(
    workspace: Workspace, path: str, hint: str = ""
) -> tuple[Path, str, int, bytes, TextFile, FileStamp]:
    """`_read_file`, a missing file being a mismatch (`hint` added to its message)."""
    try:
        return _read_file(workspace, path)
    except (FileNotFoundError, NotADirectoryError):
        raise HunkMismatch(f"the file does not exist{hint}") from None


def _read_file(
    workspace: Workspace, path: str
) -> tuple[Path, str, int, bytes, TextFile, FileStamp]:
    """The file's real path, workspace-relative name, permission bits, bytes, text and stamp: one
    open, one readlink (the confinement check), one fstat and one read (no stat or lstat per
    path component, no buffered file object). A directory is IsADirectoryError; a FIFO,
    socket or device a mismatch (opened without waiting, never read)."""
    fd, real = workspace.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise HunkMismatch(
                "it is not a regular file (a FIFO, socket or device): apply_patch edits files"
            )
        if info.st_size > MAX_FILE_BYTES:
            raise HunkMismatch(
                f"the file is {info.st_size} bytes; apply_patch edits files up to {MAX_FILE_BYTES}"
            )
        chunks = [os.read(fd, info.st_size + 1)]
        if len(chunks[0]) != info.st_size:
            # not the size fstat gave: read on until the end of the file
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
    finally:
        os.close(fd)
    rel = workspace.relative(real)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    text = decode_text(data, rel)
    return real, rel, stat.S_IMODE(info.st_mode), data, text, file_stamp(info)


def _plan_add(op: AddFile, workspace: Workspace, claim: Callable[[Path, str], None]) -> FileChange:
    real = workspace.resolve(op.path)
    claim(real, op.path)
    rel = workspace.relative(real)
    new_text = "\n".join(op.lines) + ("\n" if op.lines and not op.no_final_newline else "")
    mode = new_file_mode(op.executable)
    stamp: FileStamp | None = None
    try:
        _, _, current_mode, _, current, stamp = _read_file(workspace, op.path)
    except FileNotFoundError:
        current = None
    except NotADirectoryError:
        raise HunkMismatch(
            "one of its directories is a file. One patch cannot replace a file by a directory: "
            "delete that file with one patch and add this one with the next"
        ) from None
    if current is not None:
        if not op.overwrite and current.text:
            if current.text == new_text:
                raise HunkMismatch(
                    "the diff creates this file, and it already exists with that content: the "
                    "patch looks already applied"
                )
            raise HunkMismatch(
                "the diff creates this file but it already exists; diff against the current "
                "content instead"
            )
        return FileChange(
            action="modify",
            path=real,
            rel=rel,
            old_text=current.text,
            new_text=new_text,
            data=current.encode(new_text),
            mode=current_mode,
            old_mode=current_mode,
            notes=["the file already existed and was replaced"] if current.text else [],
            read=[(os.fspath(real), stamp)],
        )
    return FileChange(
        action="create",
        path=real,
        rel=rel,
        old_text=None,
        new_text=new_text,
        data=new_text.encode("utf-8"),
        mode=mode,
        read=[(os.fspath(real), None)],
    )


def _plan_delete(
    op: DeleteFile, workspace: Workspace, claim: Callable[[Path, str], None], nearest_hint: bool
) -> FileChange:
    entry = _lexical(workspace, op.path)
    if entry is not None and entry.is_symlink():
        # delete the link itself, not what it points to (which must still be inside)
        workspace.resolve(op.path)
        claim(entry, op.path)
        return FileChange(
            action="delete", path=entry, rel=workspace.relative(entry), old_text="", new_text=None
        )
    real, rel, _, _, current, stamp = _read_existing(workspace, op.path)
    claim(real, op.path)
    if op.hunks:
        try:
            remaining = apply_hunks(current.text, op.hunks, nearest_hint=nearest_hint).text
        except HunkMismatch as exc:
            raise HunkMismatch(f"the deleted content does not match the file: {exc}") from None
        if remaining.strip():
            raise HunkMismatch(
                "the diff deletes this file but the file has more lines than the diff removes"
            )
    return FileChange(
        action="delete",
        path=real,
        rel=rel,
        old_text=current.text,
        new_text=None,
        read=[(os.fspath(real), stamp)],
    )


def _lexical(workspace: Workspace, path: str) -> Path | None:
    """The directory entry `path` names (its parent resolved, its last part kept)."""
    parts = Path(path)
    if parts.name in ("", ".", ".."):
        return None
    parent = workspace.resolve(str(parts.parent) if str(parts.parent) else ".")
    return parent / parts.name


def _plan_update(
    op: UpdateFile,
    path: str,
    workspace: Workspace,
    claim: Callable[[Path, str], None],
    nearest_hint: bool,
) -> tuple[FileChange, AppliedHunks]:
    real, rel, old_mode, old_data, current, stamp = _read_existing(
        workspace, path, " (check the path; '*** Add File' creates a file)"
    )
    claim(real, path)
    applied = apply_hunks(current.text, op.hunks, nearest_hint=nearest_hint)
    mode = old_mode
    if op.executable is not None:
        mode = (mode | (new_file_mode(True) & 0o111)) if op.executable else mode & ~0o111
    change = FileChange(
        action="modify",
        path=real,
        rel=rel,
        old_text=current.text,
        new_text=applied.text,
        data=current.encode(applied.text),
        mode=mode,
        old_mode=old_mode,
        old_data=old_data,
        notes=applied.notes,
        read=[(os.fspath(real), stamp)],
    )
    if op.move_to is not None:
        destination = workspace.resolve(op.move_to)
        if destination != real:
            claim(destination, op.move_to)
            if destination.exists():
                raise HunkMismatch(
                    f"cannot move it to {op.move_to}: that path already exists. Choose another "
                    "name, or delete that file with one patch and move this one with the next "
                    "(one patch cannot both delete a path and move a file onto it)"
                )
            change.action = "move"
            change.moved_from, change.moved_from_rel = real, rel
            change.read.append((os.fspath(destination), None))
            change.path, change.rel = destination, workspace.relative(destination)
    return change, applied


def _compute_diff(change: FileChange, applied: AppliedHunks | None) -> None:
    """The change's diff and counts; `applied`: how its hunks were applied, for an update."""
    if applied is not None:
        diff = diff_regions(
            applied.old_lines,
            applied.new_lines,
            applied.regions,
            change.rel,
            old_path=change.moved_from_rel,
        )
    else:
        diff = diff_texts(
            change.old_text if change.action != "create" else None,
            change.new_text,
            change.rel,
            old_path=change.moved_from_rel,
        )
    change.diff, change.added, change.removed = diff.text, diff.added, diff.removed


# ---------------------------------------------------------------------------------------------
# Step 3: writing


def commit_changes(
    changes: Sequence[FileChange],
    spares: SparePool | None = None,
    journal: Path | None = None,
) -> None:
    """Write every change or none (blocking); with `spares`, into spare files where the pool
    has them; with `journal`, recorded there so that a killed daemon's commit is undone (see
    `commit_writes`). Raises FileChangedError, changing nothing, if a file the plan read was
    changed since."""
    writes = [
        FileWrite(
            change.path,
            change.data,
            change.mode,
            # a moved file's old bytes belong to the source, which is deleted, not replaced
            previous=change.old_data if change.action == "modify" else None,
            previous_mode=change.old_mode,
        )
        for change in changes
        if change.data is not None and not change.unchanged
    ]
    deletes = [change.path for change in changes if change.action == "delete"]
    deletes += [change.moved_from for change in changes if change.moved_from is not None]
    unchanged = {
        path: stamp for change in changes if not change.unchanged for path, stamp in change.read
    }
    commit_writes(writes, deletes, spares=spares, journal=journal, unchanged=unchanged)


def apply_patch_text(
    text: str, workspace: Workspace, spares: SparePool | None = None
) -> tuple[Patch, list[FileChange]]:
    """Parse, validate and apply a patch (blocking): the whole tool without events. A commit a
    killed process left in the workspace is settled first (tools/commit_journal.py). The
    workspace's write lock is held from the first read to the last write, so no other
    writing tool of this process changes a file between them (see Workspace.write_lock)."""
    patch = parse_patch(text)
    journal = journal_directory(workspace.root)
    with workspace.write_lock:
        for line in recover_commits(journal, rename_exchange):
            log.warning("%s", line)
        changes = plan_changes(patch, workspace)
        commit_changes(changes, spares, journal)
    return patch, changes


# ---------------------------------------------------------------------------------------------
# The tool


class ApplyPatchArgs(ToolArgs):
    input: str


_DESCRIPTION = """\
Edit files by applying a patch. All or nothing: if any hunk does not apply, no file changes.
Use the patch envelope:
*** Begin Patch
*** Add File: path/new.py
+every line of the new file, prefixed with +
*** Delete File: path/old.py
*** Update File: path/app.py
*** Move to: path/renamed.py   (optional)
@@ def some_function():   (optional line to anchor on; '@@' alone starts a hunk)
 context line (3 lines before and after each change)
-removed line
+added line
*** End of File   (optional: the hunk ends at the end of the file)
*** End Patch
A unified diff (git diff / diff -u output) is accepted too. Paths are relative to the \
workspace. Copy context and removed lines exactly from the file."""


class ApplyPatch(Tool):
    name = "apply_patch"
    description = _DESCRIPTION
    Args = ApplyPatchArgs

    async def run(self, args: ApplyPatchArgs, ctx: ToolContext) -> ToolResult:
        try:
            patch, changes = await anyio.to_thread.run_sync(
                apply_patch_text, args.input, ctx.workspace, spares_for(ctx)
            )
        except PatchFailed as exc:
            return ToolResult.error(str(exc), code="patch_failed", failures=exc.failures)
        except PatchParseError as exc:
            return ToolResult.error(str(exc), code="invalid_patch")
        except FileChangedError as exc:
            raise changed_meanwhile(ctx.workspace.relative(exc.path)) from None
        except OSError as exc:
            # only the commit step lets OSError out, after rolling every file back
            if exc.errno in NO_SPACE_ERRNOS:
                return ToolResult.error(
                    str(disk_full_error("apply_patch could not write the files", exc)),
                    code="disk_full",
                )
            return ToolResult.error(
                f"apply_patch could not write the files ({exc}); the writes were rolled back "
                "and no file was changed.",
                code="write_failed",
            )
        for change in changes:
            if not change.unchanged:
                await ctx.emit("file_edit", **change.event())
        lines = ["Success. Updated the following files:"]
        lines += [change.summary() for change in changes]
        notes = [f"{change.rel}: {note}" for change in changes for note in change.notes]
        if notes:
            lines.append("Notes:")
            lines += [f"- {note}" for note in notes]
        return ToolResult(
            output="\n".join(lines),
            data={"format": patch.format, "files": [change.describe() for change in changes]},
        )


# The tools this module provides, in the order models see them (tools.load_core_tools
# registers them).
TOOLS: tuple[type[Tool], ...] = (ApplyPatch,)
