"""Unified diffs of real file changes, for `file_edit` events and tool results.

`difflib.unified_diff` compares whole files, which takes seconds on a 50,000-line file with
scattered edits. Editing tools know which regions they changed, so `diff_regions` only runs
`difflib` inside those regions and treats the rest as equal; `diff_texts` (for callers that
only have before and after) trims the common head and tail before comparing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

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


def diff_texts(old: str | None, new: str | None, path: str, *, old_path: str | None = None) -> Diff:
    """Diff two versions of a file; `old=None` is a creation, `new=None` a deletion."""
    a = keepends_lines(old or "")
    b = keepends_lines(new or "")
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
    codes = list(_opcodes(a, b, regions))
    added = sum(j2 - j1 for tag, _, _, j1, j2 in codes if tag in ("replace", "insert"))
    removed = sum(i2 - i1 for tag, i1, i2, _, _ in codes if tag in ("replace", "delete"))
    source = "/dev/null" if created else f"a/{old_path or path}"
    target = "/dev/null" if deleted else f"b/{path}"
    out = [f"--- {source}\n", f"+++ {target}\n"]
    for group in _grouped(codes, CONTEXT_LINES):
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(_prefixed(" ", a[i1:i2]))
                continue
            if tag in ("replace", "delete"):
                out.extend(_prefixed("-", a[i1:i2]))
            if tag in ("replace", "insert"):
                out.extend(_prefixed("+", b[j1:j2]))
    if len(out) == 2 and old_path is None and not created and not deleted:
        return Diff("", 0, 0)
    return Diff("".join(out), added, removed)


def _opcodes(
    a: Sequence[str], b: Sequence[str], regions: Iterable[tuple[int, int, int, int]]
) -> Iterator[Opcode]:
    """Opcodes covering all of a and b, merged so that no two neighbours are both equal."""
    pending: Opcode | None = None
    for code in _raw_opcodes(a, b, regions):
        tag, i1, i2, j1, j2 = code
        if i1 == i2 and j1 == j2:
            continue
        if pending is not None and pending[0] == tag == "equal":
            pending = ("equal", pending[1], i2, pending[3], j2)
            continue
        if pending is not None:
            yield pending
        pending = code
    if pending is not None:
        yield pending


def _raw_opcodes(
    a: Sequence[str], b: Sequence[str], regions: Iterable[tuple[int, int, int, int]]
) -> Iterator[Opcode]:
    i = j = 0
    for i1, i2, j1, j2 in regions:
        yield ("equal", i, i1, j, j1)
        # trim what the region's two sides share at the head and tail before difflib
        while i1 < i2 and j1 < j2 and a[i1] == b[j1]:
            yield ("equal", i1, i1 + 1, j1, j1 + 1)
            i1 += 1
            j1 += 1
        tail: list[Opcode] = []
        while i2 > i1 and j2 > j1 and a[i2 - 1] == b[j2 - 1]:
            tail.append(("equal", i2 - 1, i2, j2 - 1, j2))
            i2 -= 1
            j2 -= 1
        if i1 == i2 or j1 == j2:
            yield ("delete" if j1 == j2 else "insert", i1, i2, j1, j2)
        else:
            matcher = difflib.SequenceMatcher(None, a[i1:i2], b[j1:j2], autojunk=False)
            for tag, x1, x2, y1, y2 in matcher.get_opcodes():
                yield (tag, i1 + x1, i1 + x2, j1 + y1, j1 + y2)
        yield from reversed(tail)
        i, j = i2 + len(tail), j2 + len(tail)
    yield ("equal", i, len(a), j, len(b))


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


def _range(start: int, stop: int) -> str:
    """difflib's unified range: 1-based start, length omitted when 1."""
    length = stop - start
    beginning = start + 1
    if length == 1:
        return f"{beginning}"
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


def _prefixed(prefix: str, lines: Sequence[str]) -> Iterator[str]:
    for line in lines:
        if line.endswith("\n"):
            yield prefix + line
        else:
            yield prefix + line + "\n" + NO_NEWLINE_MARKER
