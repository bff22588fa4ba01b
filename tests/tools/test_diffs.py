"""`tools.diffs`: a diff of `TextLines` (which writes runs of lines from the split text) is the
diff of the same lines as a plain list, line by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.diffs import TextLines, diff_regions, diff_texts, keepends_lines
from tools.patch import apply_patch_text, parse_patch
from tools.workspace import Workspace

# few distinct lines, so that random texts share lines and difflib has real work
LINE = st.sampled_from(["a", "b", "c", "", "  d", "e\r", "x = 1"])
TEXT = st.tuples(st.lists(LINE, max_size=30), st.booleans()).map(
    lambda drawn: "\n".join(drawn[0]) + ("\n" if drawn[1] and drawn[0] else "")
)


@settings(max_examples=300, deadline=None)
@given(old=TEXT, new=TEXT)
def test_text_lines_diff_is_the_plain_lines_diff(old: str, new: str) -> None:
    plain_old, plain_new = keepends_lines(old), keepends_lines(new)
    plain = diff_regions(plain_old, plain_new, [(0, len(plain_old), 0, len(plain_new))], "f.txt")
    assert diff_texts(old, new, "f.txt") == plain


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (0, 2, "-one\n-two\n"),
        (1, 3, "-two\n-three\n\\ No newline at end of file\n"),
        (2, 3, "-three\n\\ No newline at end of file\n"),
        (1, 1, ""),
        (3, 3, ""),
    ],
)
def test_prefixed_runs(start: int, stop: int, expected: str) -> None:
    lines = TextLines("one\ntwo\nthree")
    assert lines.prefixed("-", start, stop) == expected


def test_crlf_lines_keep_their_carriage_returns(tmp_path: Path) -> None:
    old, new = "one\r\ntwo\r\nthree\r\n", "one\r\nTWO\r\nthree\r\n"
    diff = diff_texts(old, new, "f.txt")
    assert diff.text.splitlines(keepends=True)[3:6] == [" one\r\n", "-two\r\n", "+TWO\r\n"]
    # and the diff applies back to the new text
    (tmp_path / "f.txt").write_bytes(old.encode())
    apply_patch_text(diff.text, Workspace(tmp_path))
    assert (tmp_path / "f.txt").read_bytes() == new.encode()


@settings(max_examples=200, deadline=None)
@given(old=TEXT, new=TEXT)
def test_text_lines_keys_are_equal_where_the_lines_are(old: str, new: str) -> None:
    # diffs compare TextLines by these keys, plain lines by themselves
    a, b = TextLines(old), TextLines(new)
    assert a.keys(0, len(a)) == [
        line.removesuffix("\n") if line.endswith("\n") else line + "\n" for line in a
    ]
    for i in range(len(a)):
        for j in range(len(b)):
            assert (a.keys(i, i + 1) == b.keys(j, j + 1)) == (a[i] == b[j])
    assert a.keys(1, len(a) + 5) == a.keys(1, len(a))


@pytest.mark.parametrize("name", ["new\nline.txt", 'say "hi".txt', "back\\slash.txt", "tab\there"])
def test_a_name_that_would_break_the_header_is_quoted_as_git_quotes_it(name: str) -> None:
    """A newline in a name must not split the `+++` line: the path is a C string then, which
    the unified-diff reader (apply_patch's) turns back into the name."""
    diff = diff_texts("a\n", "b\n", name).text
    header = diff.splitlines()[:2]
    assert header[1].startswith('+++ "b/') and header[1].endswith('"')
    [op] = parse_patch(diff).ops
    assert op.path == name
    assert (
        diff_texts("a\n", "b\n", "plain name é.txt").text.splitlines()[1]
        == "+++ b/plain name é.txt"
    )
