"""Unified diffs of real file changes, for `file_edit` events and tool results.

`difflib.unified_diff` compares whole files, which takes seconds on a 50,000-line file with
scattered edits. Editing tools know which regions they changed, so `diff_regions` only runs
`difflib` inside those regions and treats the rest as equal; `diff_texts` (for callers that
only have before and after) trims the common head and tail before comparing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

CONTEXT_LINES = 3
NO_NEWLINE_MARKER = "\\ No newline at end of file\n"

Opcode = tuple[str, int, int, int, int]


@dataclass(frozen=True)
class Diff:
    """A unified diff and how many lines it adds and removes."""

    text: str
    added: int
    removed: int


def keepends_lines(text: str) -> list[str]:
    """Split after every "\\n" (and only there), keeping the endings."""
    if not text:
        return []
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


class TextLines(Sequence[str]):
    """The lines of `text` as `keepends_lines` gives them, without building them all: the
    text is split once (in C) and a line gets its ending back only when it is read. Diffs
    read the lines around the changes, not the whole file."""

    def __init__(self, text: str, *, parts: list[str] | None = None) -> None:
        """`parts`: `text.split("\\n")` when the caller has it already."""
        self._parts = text.split("\n") if parts is None else parts
        self._complete = len(self._parts) - 1  # parts that had a "\n" after them
        self._len = self._complete if self._parts[-1] == "" else len(self._parts)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            if step != 1:
                return [self._line(i) for i in range(start, stop, step)]
            if stop <= start:
                return []
            # every line but the file's last has its "\n"
            complete = min(stop, self._complete)
            lines = [part + "\n" for part in self._parts[start:complete]]
            if stop > complete:
                lines.append(self._parts[complete])
            return lines
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("line index out of range")
        return self._line(index)

    def _line(self, index: int) -> str:
        part = self._parts[index]
        return part + "\n" if index < self._complete else part

    def prefixed(self, prefix: str, start: int, stop: int) -> str:
        """Lines [start, stop) as a diff writes them: each after `prefix`, the last line of a
        file without a final newline followed by the marker. One join for the whole run."""
        complete = min(stop, self._complete)
        text = ""
        if start < complete:
            text = prefix + ("\n" + prefix).join(self._parts[start:complete]) + "\n"
        if start <= self._complete < stop:  # the last line, which has no newline
            text += prefix + self._parts[self._complete] + "\n" + NO_NEWLINE_MARKER
        return text

    def keys(self, start: int, stop: int) -> list[str]:
        """Lines [start, stop) as strings that are equal exactly where the lines are: a line
        without its "\n", the last line of a file without a final newline with a "\n" added
        (which no other key has). A slice of the split text, no string built per line."""
        stop = min(stop, self._len)
        complete = min(stop, self._complete)
        keys = self._parts[start:complete]
        if start <= complete < stop:  # the last line, which has no newline
            keys.append(self._parts[complete] + "\n")
        return keys


def diff_texts(old: str | None, new: str | None, path: str, *, old_path: str | None = None) -> Diff:
    """Diff two versions of a file; `old=None` is a creation, `new=None` a deletion."""
    a = TextLines(old or "")
    b = TextLines(new or "")
    return diff_regions(
        a,
        b,
        [(0, len(a), 0, len(b))],
        path,
        old_path=old_path,
        created=old is None,
        deleted=new is None,
    )


def diff_regions(
    a: Sequence[str],
    b: Sequence[str],
    regions: Iterable[tuple[int, int, int, int]],
    path: str,
    *,
    old_path: str | None = None,
    created: bool = False,
    deleted: bool = False,
) -> Diff:
    """Diff `a` → `b` (lines with endings) where only `regions` (i1, i2, j1, j2) may differ.

    Regions must be sorted and non-overlapping; outside them `a` and `b` are equal line for
    line, so the gaps between regions must have the same length on both sides.
    """
    codes = _opcodes(a, b, regions)
    added = removed = 0
    for tag, i1, i2, j1, j2 in codes:
        if tag != "equal":  # a delete adds no line, an insert removes none
            added += j2 - j1
            removed += i2 - i1
    source = "/dev/null" if created else _header_name(f"a/{old_path or path}")
    target = "/dev/null" if deleted else _header_name(f"b/{path}")
    out = [f"--- {source}\n", f"+++ {target}\n"]
    old_run, new_run = _run_writer(a), _run_writer(b)
    for group in _grouped(codes, CONTEXT_LINES):
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.append(old_run(" ", i1, i2))
                continue
            if tag != "insert":
                out.append(old_run("-", i1, i2))
            if tag != "delete":
                out.append(new_run("+", j1, j2))
    if len(out) == 2 and old_path is None and not created and not deleted:
        return Diff("", 0, 0)
    return Diff("".join(out), added, removed)


def _opcodes(
    a: Sequence[str], b: Sequence[str], regions: Iterable[tuple[int, int, int, int]]
) -> list[Opcode]:
    """Opcodes covering all of a and b, merged so that no two neighbours are both equal."""
    codes: list[Opcode] = []
    old_run, new_run = _comparable_runs(a, b)
    i = j = 0
    for i1, i2, j1, j2 in regions:
        _add_equal(codes, i, i1, j, j1)
        # trim what the region's two sides share at the head and tail before difflib
        old, new = old_run(i1, i2), new_run(j1, j2)
        head = 0
        while head < len(old) and head < len(new) and old[head] == new[head]:
            head += 1
        tail = 0
        while (
            tail < len(old) - head
            and tail < len(new) - head
            and old[len(old) - 1 - tail] == new[len(new) - 1 - tail]
        ):
            tail += 1
        if head:
            _add_equal(codes, i1, i1 + head, j1, j1 + head)
        x1, x2, y1, y2 = i1 + head, i2 - tail, j1 + head, j2 - tail
        if x1 == x2 or y1 == y2:
            if x1 != x2 or y1 != y2:
                codes.append(("delete" if y1 == y2 else "insert", x1, x2, y1, y2))
        elif set(old[head : len(old) - tail]).isdisjoint(new[head : len(new) - tail]):
            # no line in common (the usual edit): difflib's answer is one replace, without
            # the cost of setting up a SequenceMatcher per region
            codes.append(("replace", x1, x2, y1, y2))
        else:
            matcher = difflib.SequenceMatcher(
                None, old[head : len(old) - tail], new[head : len(new) - tail], autojunk=False
            )
            for tag, k1, k2, m1, m2 in matcher.get_opcodes():
                if tag == "equal":
                    _add_equal(codes, x1 + k1, x1 + k2, y1 + m1, y1 + m2)
                else:
                    codes.append((tag, x1 + k1, x1 + k2, y1 + m1, y1 + m2))
        if tail:
            _add_equal(codes, x2, i2, y2, j2)
        i, j = i2, j2
    _add_equal(codes, i, len(a), j, len(b))
    return codes


def _comparable_runs(
    a: Sequence[str], b: Sequence[str]
) -> tuple[Callable[[int, int], list[str]], Callable[[int, int], list[str]]]:
    """`run(start, stop)` for each side: its lines [start, stop) as values to compare with the
    other side's. Two TextLines give their keys (slices of the split texts: no line is built
    with its ending); otherwise the lines themselves."""
    if isinstance(a, TextLines) and isinstance(b, TextLines):
        return a.keys, b.keys
    return (lambda start, stop: list(a[start:stop])), (lambda start, stop: list(b[start:stop]))


def _add_equal(codes: list[Opcode], i1: int, i2: int, j1: int, j2: int) -> None:
    """Append an equal run (none if empty), joined to the previous opcode if that is one."""
    if i1 == i2 and j1 == j2:
        return
    if codes and codes[-1][0] == "equal":
        _, start, _, new_start, _ = codes[-1]
        codes[-1] = ("equal", start, i2, new_start, j2)
    else:
        codes.append(("equal", i1, i2, j1, j2))


def _grouped(codes: list[Opcode], n: int) -> Iterator[list[Opcode]]:
    """difflib.SequenceMatcher.get_grouped_opcodes, for opcodes computed elsewhere."""
    if not codes or all(code[0] == "equal" for code in codes):
        return
    codes = list(codes)
    if codes[0][0] == "equal":
        tag, i1, i2, j1, j2 = codes[0]
        codes[0] = (tag, max(i1, i2 - n), i2, max(j1, j2 - n), j2)
    if codes[-1][0] == "equal":
        tag, i1, i2, j1, j2 = codes[-1]
        codes[-1] = (tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n))
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal" and i2 - i1 > 2 * n:
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            yield group
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        yield group


# What git quotes in a diff header's path (a C string, as `git diff` writes it), so that a
# name holding a newline cannot split the header; other characters stay as they are.
_HEADER_ESCAPES = {"\n": "\\n", "\t": "\\t", '"': '\\"', "\\": "\\\\"}


def _header_name(name: str) -> str:
    if name.isprintable() and '"' not in name and "\\" not in name:
        return name
    escaped = "".join(
        _HEADER_ESCAPES.get(char)
        or (f"\\{ord(char):03o}" if ord(char) < 0x20 or ord(char) == 0x7F else char)
        for char in name
    )
    return f'"{escaped}"'


def _range(start: int, stop: int) -> str:
    """difflib's unified range: 1-based start, length omitted when 1."""
    length = stop - start
    beginning = start + 1
    if length == 1:
        return f"{beginning}"
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


def _run_writer(lines: Sequence[str]) -> Callable[[str, int, int], str]:
    """`write(prefix, start, stop)`: lines [start, stop) of `lines`, each after `prefix` (and
    the marker after a last line without a newline)."""
    if isinstance(lines, TextLines):
        return lines.prefixed

    def write(prefix: str, start: int, stop: int) -> str:
        return _prefixed(prefix, lines, start, stop)

    return write


def _prefixed(prefix: str, lines: Sequence[str], start: int, stop: int) -> str:
    if start >= stop:
        return ""
    return "".join(
        prefix + line if line.endswith("\n") else prefix + line + "\n" + NO_NEWLINE_MARKER
        for line in lines[start:stop]
    )
