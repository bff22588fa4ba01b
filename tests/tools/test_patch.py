"""apply_patch through `Toolbox.call`: both patch formats, fuzzy matching, atomicity, events."""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tools.patch
import tools.textfile
from tests.needs import need_program
from tests.tools.harness import (
    Harness,
    envelope,
    fail_swaps,
    hidden_leftovers,
    open_harness,
    read_tree,
    write_tree,
)
from tools.diffs import keepends_lines
from tools.patch import LineIndex, apply_patch_text, parse_patch
from tools.textfile import split_lines
from tools.workspace import Workspace


@pytest.fixture
async def harness(workspace: Path) -> AsyncIterator[Harness]:
    async with open_harness(workspace, enabled=["apply_patch"]) as h:
        yield h


def udiff(before: str, after: str, path: str, *, old_path: str | None = None) -> str:
    """A unified diff as difflib writes it, plus the `\\ No newline` markers diff(1) adds."""
    lines = difflib.unified_diff(
        keepends_lines(before), keepends_lines(after), f"a/{old_path or path}", f"b/{path}"
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


APP = "\n".join(
    [
        "import os",
        "",
        "",
        "def alpha():",
        "    return 1",
        "",
        "",
        "def beta():",
        "    x = 2",
        "    return x",
        "",
        "",
        "def gamma():",
        "    return 3",
        "",
    ]
)
APP_AFTER = APP.replace("return 1", "return 10").replace("return 3", "return 30")


@dataclass
class Case:
    id: str
    before: dict[str, str | bytes]
    patch: str
    after: dict[str, str | bytes]
    summary: list[str]
    note: str | None = None


SUCCESS_CASES = [
    Case(
        "envelope-add",
        {},
        envelope("*** Add File: docs/readme.md", "+# Title", "+", "+text"),
        {"docs/readme.md": "# Title\n\ntext\n"},
        ["A docs/readme.md (+3 -0)"],
    ),
    Case(
        "unified-add",
        {},
        "diff --git a/docs/readme.md b/docs/readme.md\nnew file mode 100644\n"
        "index 0000000..3333333\n--- /dev/null\n+++ b/docs/readme.md\n"
        "@@ -0,0 +1,3 @@\n+# Title\n+\n+text\n",
        {"docs/readme.md": "# Title\n\ntext\n"},
        ["A docs/readme.md (+3 -0)"],
    ),
    Case(
        "envelope-delete",
        {"gone.txt": "bye\nnow\n", "keep.txt": "k\n"},
        envelope("*** Delete File: gone.txt"),
        {"keep.txt": "k\n"},
        ["D gone.txt (+0 -2)"],
    ),
    Case(
        "unified-delete",
        {"gone.txt": "bye\nnow\n", "keep.txt": "k\n"},
        "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\nindex 4444444..0000000\n"
        "--- a/gone.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-bye\n-now\n",
        {"keep.txt": "k\n"},
        ["D gone.txt (+0 -2)"],
    ),
    Case(
        "envelope-update-several-hunks",
        {"app.py": APP},
        envelope(
            "*** Update File: app.py",
            "@@ def alpha():",
            "-    return 1",
            "+    return 10",
            "@@ def gamma():",
            "-    return 3",
            "+    return 30",
        ),
        {"app.py": APP_AFTER},
        ["M app.py (+2 -2)"],
    ),
    Case(
        "unified-update-several-hunks",
        {"app.py": APP},
        udiff(APP, APP_AFTER, "app.py"),
        {"app.py": APP_AFTER},
        ["M app.py (+2 -2)"],
    ),
    Case(
        "envelope-move",
        {"old.py": "x = 1\ny = 2\n"},
        envelope("*** Update File: old.py", "*** Move to: pkg/new.py", "@@", "-x = 1", "+x = 10"),
        {"pkg/new.py": "x = 10\ny = 2\n"},
        ["R old.py -> pkg/new.py (+1 -1)"],
    ),
    Case(
        "unified-rename-with-edit",
        {"old.py": "x = 1\ny = 2\n"},
        "diff --git a/old.py b/pkg/new.py\nsimilarity index 80%\nrename from old.py\n"
        "rename to pkg/new.py\nindex 1111111..2222222 100644\n--- a/old.py\n+++ b/pkg/new.py\n"
        "@@ -1,2 +1,2 @@\n-x = 1\n+x = 10\n y = 2\n",
        {"pkg/new.py": "x = 10\ny = 2\n"},
        ["R old.py -> pkg/new.py (+1 -1)"],
    ),
    Case(
        "unified-pure-rename",
        {"old.py": "x = 1\n"},
        "diff --git a/old.py b/new.py\nsimilarity index 100%\nrename from old.py\n"
        "rename to new.py\n",
        {"new.py": "x = 1\n"},
        ["R old.py -> new.py (+0 -0)"],
    ),
    Case(
        "envelope-multiple-files",
        {"app.py": APP, "gone.txt": "bye\n"},
        envelope(
            "*** Add File: new.txt",
            "+hello",
            "*** Update File: app.py",
            "@@ def gamma():",
            "-    return 3",
            "+    return 30",
            "*** Delete File: gone.txt",
        ),
        {"app.py": APP.replace("return 3", "return 30"), "new.txt": "hello\n"},
        ["A new.txt (+1 -0)", "M app.py (+1 -1)", "D gone.txt (+0 -1)"],
    ),
    Case(
        "unified-multiple-files",
        {"app.py": APP, "b.txt": "one\ntwo\n"},
        udiff(APP, APP_AFTER, "app.py") + udiff("one\ntwo\n", "one\n2\n", "b.txt"),
        {"app.py": APP_AFTER, "b.txt": "one\n2\n"},
        ["M app.py (+2 -2)", "M b.txt (+1 -1)"],
    ),
    Case(
        "envelope-fuzzy-trailing-whitespace",
        {"f.py": "def f():   \n    return 1\n"},
        envelope("*** Update File: f.py", "@@", " def f():", "-    return 1", "+    return 2"),
        {"f.py": "def f():   \n    return 2\n"},
        ["M f.py (+1 -1)"],
        note="matched ignoring trailing whitespace",
    ),
    Case(
        "unified-fuzzy-trailing-whitespace",
        {"f.py": "def f():   \n    return 1\n"},
        "--- a/f.py\n+++ b/f.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2\n",
        {"f.py": "def f():   \n    return 2\n"},
        ["M f.py (+1 -1)"],
        note="matched ignoring trailing whitespace",
    ),
    Case(
        "envelope-fuzzy-indentation",
        {"f.py": "def f():\n\tif x:\n\t\treturn 1\n"},
        envelope("*** Update File: f.py", "@@", "     if x:", "-        return 1", "+\t\treturn 2"),
        {"f.py": "def f():\n\tif x:\n\t\treturn 2\n"},
        ["M f.py (+1 -1)"],
        note="matched ignoring leading and trailing whitespace",
    ),
    Case(
        "unified-fuzzy-indentation",
        {"f.py": "def f():\n\tif x:\n\t\treturn 1\n"},
        "--- a/f.py\n+++ b/f.py\n@@ -2,2 +2,2 @@\n     if x:\n-        return 1\n+\t\treturn 2\n",
        {"f.py": "def f():\n\tif x:\n\t\treturn 2\n"},
        ["M f.py (+1 -1)"],
        note="matched ignoring leading and trailing whitespace",
    ),
    Case(
        "envelope-fuzzy-punctuation",
        {"t.py": "msg = “it’s done” — ok\u00a0now\nx = 1\n"},
        envelope("*** Update File: t.py", "@@", ' msg = "it\'s done" - ok now', "-x = 1", "+x = 2"),
        {"t.py": "msg = “it’s done” — ok\u00a0now\nx = 2\n"},
        ["M t.py (+1 -1)"],
        note="matched with typographic punctuation normalised",
    ),
    Case(
        "unified-fuzzy-punctuation",
        {"t.py": "msg = “it’s done” — ok\nx = 1\n"},
        '--- a/t.py\n+++ b/t.py\n@@ -1,2 +1,2 @@\n msg = "it\'s done" - ok\n-x = 1\n+x = 2\n',
        {"t.py": "msg = “it’s done” — ok\nx = 2\n"},
        ["M t.py (+1 -1)"],
        note="matched with typographic punctuation normalised",
    ),
    Case(
        "envelope-crlf",
        {"w.txt": b"one\r\ntwo\r\nthree\r\n"},
        envelope("*** Update File: w.txt", "@@", " one", "-two", "+TWO", "+2.5", " three"),
        {"w.txt": b"one\r\nTWO\r\n2.5\r\nthree\r\n"},
        ["M w.txt (+2 -1)"],
    ),
    Case(
        "unified-crlf-file-lf-patch",
        {"w.txt": b"one\r\ntwo\r\nthree\r\n"},
        "--- a/w.txt\n+++ b/w.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n",
        {"w.txt": b"one\r\nTWO\r\nthree\r\n"},
        ["M w.txt (+1 -1)"],
    ),
    Case(
        "unified-crlf-patch",
        {"w.txt": b"one\r\ntwo\r\nthree\r\n"},
        "--- a/w.txt\r\n+++ b/w.txt\r\n@@ -1,3 +1,3 @@\r\n one\r\n-two\r\n+TWO\r\n three\r\n",
        {"w.txt": b"one\r\nTWO\r\nthree\r\n"},
        ["M w.txt (+1 -1)"],
    ),
    Case(
        "envelope-no-final-newline-kept",
        {"n.txt": "a\nb\nc"},
        envelope("*** Update File: n.txt", "@@", " b", "-c", "+C", "+D", "*** End of File"),
        {"n.txt": "a\nb\nC\nD"},
        ["M n.txt (+2 -1)"],
    ),
    Case(
        "envelope-append-to-file-without-final-newline",
        {"n.txt": "a\nb"},
        envelope("*** Update File: n.txt", "@@", " b", "+c"),
        {"n.txt": "a\nb\nc"},
        ["M n.txt (+2 -1)"],
    ),
    Case(
        "unified-no-final-newline-markers",
        {"n.txt": "a\nb\nc"},
        udiff("a\nb\nc", "a\nb\nC", "n.txt"),
        {"n.txt": "a\nb\nC"},
        ["M n.txt (+1 -1)"],
    ),
    Case(
        "unified-adds-final-newline",
        {"n.txt": "a\nb\nc"},
        udiff("a\nb\nc", "a\nb\nc\n", "n.txt"),
        {"n.txt": "a\nb\nc\n"},
        ["M n.txt (+1 -1)"],
    ),
    Case(
        "unified-removes-final-newline",
        {"n.txt": "a\nb\n"},
        udiff("a\nb\n", "a\nB", "n.txt"),
        {"n.txt": "a\nB"},
        ["M n.txt (+1 -1)"],
    ),
    Case(
        "bom-preserved",
        {"bom.txt": b"\xef\xbb\xbfhello\nworld\n"},
        envelope("*** Update File: bom.txt", "@@", " hello", "-world", "+earth"),
        {"bom.txt": b"\xef\xbb\xbfhello\nearth\n"},
        ["M bom.txt (+1 -1)"],
    ),
    Case(
        "wrapper-heredoc",
        {"f.txt": "a\n"},
        "apply_patch <<'EOF'\n" + envelope("*** Update File: f.txt", "@@", "-a", "+b") + "EOF\n",
        {"f.txt": "b\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "wrapper-cat-heredoc-pipe",
        {"f.txt": "a\n"},
        'cat <<"PATCH" | apply_patch\n'
        + envelope("*** Update File: f.txt", "@@", "-a", "+b")
        + "PATCH\n",
        {"f.txt": "b\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "wrapper-fence",
        {"f.txt": "a\n"},
        "```\n" + envelope("*** Update File: f.txt", "@@", "-a", "+b") + "```\n",
        {"f.txt": "b\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "wrapper-fence-around-heredoc",
        {"f.txt": "a\n"},
        "```bash\napply_patch <<'EOF'\n"
        + envelope("*** Update File: f.txt", "@@", "-a", "+b")
        + "EOF\n```",
        {"f.txt": "b\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "wrapper-fence-around-fenced-content",
        {"doc.md": "text\n```\ncode\n```\n"},
        "```\n--- a/doc.md\n+++ b/doc.md\n@@ -2,3 +2,3 @@\n ```\n-code\n+CODE\n ```\n```\n",
        {"doc.md": "text\n```\nCODE\n```\n"},
        ["M doc.md (+1 -1)"],
    ),
    Case(
        "wrapper-heredoc-around-heredoc-content",
        {"s.sh": "cat <<EOF\nhi\nEOF\n"},
        "apply_patch <<'EOF'\n"
        # no closing EOF: the context line " EOF" must not be taken for it
        + envelope("*** Update File: s.sh", "@@", " cat <<EOF", "-hi", "+hello", " EOF"),
        {"s.sh": "cat <<EOF\nhello\nEOF\n"},
        ["M s.sh (+1 -1)"],
    ),
    Case(
        "wrapper-fenced-unified-diff",
        {"f.txt": "a\n"},
        "```diff\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-a\n+b\n```\n",
        {"f.txt": "b\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "wrapper-heredoc-unified-diff",
        {"f.txt": "a\n"},
        "git apply <<'EOF'\n--- a/f.txt\n+++ b/f.txt\n@@ -1 +1 @@\n-a\n+b\nEOF",
        {"f.txt": "b\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "unified-miscounted-hunk-header",
        {"f.txt": "a\nb\nc\n"},
        "--- a/f.txt\n+++ b/f.txt\n@@ -1,7 +1,9 @@\n a\n-b\n+B\n c\n",
        {"f.txt": "a\nB\nc\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "unified-hunk-header-without-numbers",
        {"f.txt": "a\nb\nc\n"},
        "--- a/f.txt\n+++ b/f.txt\n@@ @@\n a\n-b\n+B\n c\n",
        {"f.txt": "a\nB\nc\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "diff-u-without-prefixes",
        {"f.txt": "a\nb\n"},
        "--- f.txt.orig\t2024-01-01 10:00:00.000000000 +0000\n"
        "+++ f.txt\t2024-01-01 10:01:00.000000000 +0000\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n",
        {"f.txt": "a\nB\n"},
        ["M f.txt (+1 -1)"],
    ),
    Case(
        "envelope-ambiguous-takes-first-after-previous-hunk",
        {"r.txt": "x\nval = 0\nmid\nval = 0\nend\n"},
        envelope("*** Update File: r.txt", "@@", " mid", "@@", "-val = 0", "+val = 1"),
        {"r.txt": "x\nval = 0\nmid\nval = 1\nend\n"},
        ["M r.txt (+1 -1)"],
    ),
    Case(
        "unified-ambiguous-takes-nearest-hint",
        {"r.txt": "val = 0\n" + "filler\n" * 20 + "val = 0\nend\n"},
        "--- a/r.txt\n+++ b/r.txt\n@@ -20,1 +20,1 @@\n-val = 0\n+val = 1\n",
        {"r.txt": "val = 0\n" + "filler\n" * 20 + "val = 1\nend\n"},
        ["M r.txt (+1 -1)"],
        note="was ambiguous: its lines occur at lines 1, 22; used line 22",
    ),
    Case(
        "envelope-anchor-then-eof",
        {"e.txt": "x\nend\nx\nend\n"},
        envelope("*** Update File: e.txt", "@@", "-end", "+END", "*** End of File"),
        {"e.txt": "x\nend\nx\nEND\n"},
        ["M e.txt (+1 -1)"],
    ),
]


@pytest.mark.parametrize("case", SUCCESS_CASES, ids=lambda c: c.id)
async def test_patch_cases(harness: Harness, case: Case) -> None:
    harness.write(case.before)
    result = await harness.call("apply_patch", input=case.patch)
    assert not result.is_error, result.output
    expected = {k: v.encode() if isinstance(v, str) else v for k, v in case.after.items()}
    assert harness.tree() == expected
    listed = result.output.splitlines()
    assert listed[0] == "Success. Updated the following files:"
    assert listed[1 : 1 + len(case.summary)] == case.summary
    if case.note:
        assert case.note in result.output
    # one file_edit event per file, each with the real diff of its change
    assert len(harness.events) == len(case.summary)
    for event, line in zip(harness.events, case.summary, strict=True):
        assert event["type"] == "file_edit"
        assert line.split(" (")[0].split(" ")[-1] == event["path"]
    for info in result.data["files"]:
        assert {"path", "action", "status", "added", "removed"} <= set(info)


async def test_unified_hunk_at_its_stated_line_needs_no_search(harness: Harness) -> None:
    # The hunk's lines also occur at line 1, but they are exactly where its header says
    # (line 22): the line number settles it, as in git apply, so no ambiguity note.
    harness.write({"r.txt": "val = 0\n" + "filler\n" * 20 + "val = 0\nend\n"})
    patch = "--- a/r.txt\n+++ b/r.txt\n@@ -22,1 +22,1 @@\n-val = 0\n+val = 1\n"
    result = await harness.call("apply_patch", input=patch)
    assert not result.is_error, result.output
    assert harness.tree() == {"r.txt": ("val = 0\n" + "filler\n" * 20 + "val = 1\nend\n").encode()}
    assert "Notes:" not in result.output
    # one line off its header (and still ambiguous): found by the search, and said so
    harness.write({"r.txt": "val = 0\n" + "filler\n" * 20 + "val = 0\nend\n"})
    result = await harness.call("apply_patch", input=patch.replace("-22,1 +22,1", "-21,1 +21,1"))
    assert not result.is_error, result.output
    assert "was ambiguous: its lines occur at lines 1, 22; used line 22" in result.output


async def test_file_edit_events_carry_applicable_diffs(harness: Harness, tmp_path: Path) -> None:
    harness.write({"app.py": APP, "old.py": "x = 1\n", "gone.txt": "bye\n", "crlf.txt": b"a\r\nb"})
    patch = envelope(
        "*** Add File: new.txt",
        "+hello",
        "*** Update File: app.py",
        "@@ def alpha():",
        "-    return 1",
        "+    return 10",
        "*** Update File: old.py",
        "*** Move to: moved.py",
        "@@",
        "-x = 1",
        "+x = 2",
        "*** Delete File: gone.txt",
        "*** Update File: crlf.txt",
        "@@",
        " a",
        "-b",
        "+B",
    )
    before = harness.tree()
    result = await harness.call("apply_patch", input=patch)
    assert not result.is_error, result.output
    events = {e["path"]: e for e in harness.events}
    assert {(e["path"], e["action"]) for e in harness.events} == {
        ("new.txt", "create"),
        ("app.py", "modify"),
        ("moved.py", "move"),
        ("gone.txt", "delete"),
        ("crlf.txt", "modify"),
    }
    assert events["moved.py"]["movedFrom"] == "old.py"
    assert all("movedFrom" not in e for e in harness.events if e["action"] != "move")
    assert events["gone.txt"]["diff"].startswith("--- a/gone.txt\n+++ /dev/null\n")
    assert events["new.txt"]["diff"].startswith("--- /dev/null\n+++ b/new.txt\n")
    # replaying the events' diffs on a copy of the old tree gives the new tree
    replay = tmp_path / "replay"
    replay.mkdir()
    write_tree(replay, before)
    combined = "".join(e["diff"] for e in harness.events)
    apply_patch_text(combined, Workspace(replay))
    assert read_tree(replay) == harness.tree()
    if shutil.which("patch"):
        check = tmp_path / "gnu"
        check.mkdir()
        write_tree(check, before)
        run = subprocess.run(
            ["patch", "-p1", "-s", "--binary"],
            input=events["app.py"]["diff"] + events["crlf.txt"]["diff"],
            cwd=check,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert (check / "app.py").read_bytes() == harness.tree()["app.py"]
        assert (check / "crlf.txt").read_bytes() == b"a\r\nB"


FAILURE_CASES = [
    (
        "envelope-missing-context",
        envelope(
            "*** Update File: a.txt",
            "@@",
            "-one",
            "+1",
            "*** Update File: app.py",
            "@@ def beta():",
            "     x = 2",
            "-    return y",
            "+    return z",
        ),
        [
            "app.py: hunk 1 (@@ def beta():)",
            "this context/removed line was not found: '    return y'",
            "match the file at line 9; there the file continues with '    return x' (line 10)",
            "Closest line in the file: 10: '    return x'",
        ],
    ),
    (
        "unified-missing-context",
        udiff("one\n", "1\n", "a.txt")
        + "--- a/app.py\n+++ b/app.py\n@@ -4,2 +4,2 @@\n"
        + " def alpha():\n-    return 5\n+    return 6\n",
        [
            "app.py: hunk 1 (@@ -4,2 +4,2 @@)",
            "not found: '    return 5'",
            "Closest line in the file: 5: '    return 1'",
        ],
    ),
    (
        "anchor-not-found",
        envelope("*** Update File: app.py", "@@ def delta():", "-    return 4", "+    return 5"),
        ["app.py: hunk 1 (@@ def delta():): the '@@' context line 'def delta():' was not found"],
    ),
    (
        "already-applied",
        envelope("*** Update File: app.py", "@@ def beta():", "-    x = 1", "+    x = 2"),
        ["app.py: hunk 1 (@@ def beta():) looks already applied", "at line 9"],
    ),
    (
        "missing-file",
        envelope("*** Update File: nope.py", "@@", "-a", "+b"),
        ["nope.py: the file does not exist"],
    ),
    (
        "delete-missing-file",
        envelope("*** Delete File: nope.py"),
        ["nope.py: the file does not exist"],
    ),
    (
        "binary-file",
        envelope("*** Update File: blob.bin", "@@", "-a", "+b"),
        ["blob.bin: blob.bin is a binary file"],
    ),
    (
        "binary-diff",
        "diff --git a/blob.bin b/blob.bin\nindex 1..2 100644\nBinary files a/blob.bin and "
        "b/blob.bin differ\n",
        ["blob.bin is a binary patch"],
    ),
    (
        "move-onto-existing",
        envelope("*** Update File: a.txt", "*** Move to: app.py", "@@", "-one", "+1"),
        ["cannot move it to app.py: that path already exists"],
    ),
    (
        "same-file-twice",
        envelope(
            "*** Update File: a.txt", "@@", "-one", "+1", "*** Update File: a.txt", "@@", "-two"
        ),
        ["changed twice in this patch"],
    ),
    (
        "unified-new-file-exists",
        "--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1 @@\n+other\n",
        ["a.txt: the diff creates this file but it already exists"],
    ),
    (
        "out-of-order-hunks",
        envelope(
            "*** Update File: app.py",
            "@@ def gamma():",
            "-    return 3",
            "+    return 30",
            "@@",
            "-    return 1",
            "+    return 10",
        ),
        ["hunk 2 (@@): its lines are in the file at line 5, before the end of the previous hunk"],
    ),
]


@pytest.mark.parametrize(
    ("patch", "messages"), [c[1:] for c in FAILURE_CASES], ids=[c[0] for c in FAILURE_CASES]
)
async def test_failed_patch_changes_nothing(
    harness: Harness, patch: str, messages: list[str]
) -> None:
    harness.write({"app.py": APP, "a.txt": "one\ntwo\n", "blob.bin": b"a\x00b\n"})
    before = harness.tree()
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error
    assert (
        result.output.startswith("apply_patch failed; no file was changed.")
        or result.data["code"] == "invalid_patch"
    ), result.output
    for message in messages:
        assert message in result.output, result.output
    assert harness.tree() == before
    assert harness.events == []
    assert not [p for p in harness.root.rglob("*") if p.name.endswith((".tmp", ".bak"))]


async def test_every_failing_file_is_reported(harness: Harness) -> None:
    harness.write({"a.txt": "one\n", "b.txt": "two\n"})
    patch = envelope(
        "*** Update File: a.txt", "@@", "-uno", "+1", "*** Update File: b.txt", "@@", "-dos", "+2"
    )
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error
    assert [f.split(":")[0] for f in result.data["failures"]] == ["a.txt", "b.txt"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("*** Begin Patch\n*** Update File: a.txt\n@@\n-one\n+1\n", "no '*** End Patch'"),
        (envelope("*** Update File: a.txt", "@@", "one", "+1"), "patch line 4: unexpected line"),
        (envelope("*** Frobnicate File: a.txt"), "patch line 2: expected '*** Add File"),
        (envelope("*** Add File: x.txt", "hello"), "must start with '+'"),
        (envelope("*** Update File: a.txt"), "has no hunks"),
        (envelope(), "changes no file"),
        ("please change one to 1", "neither a patch envelope nor a unified diff"),
    ],
)
async def test_malformed_patches_say_where(harness: Harness, patch: str, message: str) -> None:
    harness.write({"a.txt": "one\n"})
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error and result.data["code"] == "invalid_patch"
    assert message in result.output
    assert harness.tree() == {"a.txt": b"one\n"}


async def test_mode_is_preserved_and_new_files_get_default_mode(harness: Harness) -> None:
    harness.write({"run.sh": "echo hi\n"})
    script = harness.root / "run.sh"
    script.chmod(0o750)
    patch = envelope(
        "*** Update File: run.sh", "@@", "-echo hi", "+echo bye", "*** Add File: n.txt", "+n"
    )
    result = await harness.call("apply_patch", input=patch)
    assert not result.is_error, result.output
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    assert stat.S_IMODE((harness.root / "n.txt").stat().st_mode) == tools.textfile.new_file_mode()


async def test_git_mode_change_sets_executable_bit(harness: Harness) -> None:
    harness.write({"run.sh": "echo hi\n"})
    (harness.root / "run.sh").chmod(0o644)
    patch = "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
    result = await harness.call("apply_patch", input=patch)
    assert not result.is_error, result.output
    assert os.access(harness.root / "run.sh", os.X_OK)


async def test_failure_while_writing_rolls_everything_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    harness.write({"a.txt": "one\n", "b.txt": "two\n", "c.txt": "three\n"})
    before = harness.tree()

    def error_for(src: str, dst: str) -> OSError | None:
        # let the first file land, then fail the second: the first must be restored
        if Path(dst).name == "b.txt":
            return OSError(28, "No space left on device")
        return None

    replaced = fail_swaps(monkeypatch, error_for)
    patch = envelope(
        "*** Update File: a.txt",
        "@@",
        "-one",
        "+1",
        "*** Update File: b.txt",
        "@@",
        "-two",
        "+2",
        "*** Delete File: c.txt",
        "*** Add File: d/new.txt",
        "+new",
    )
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error and result.data["code"] == "disk_full"
    assert "no file" in result.output and "Free space" in result.output
    assert "No space left on device" in result.output
    assert "a.txt" in replaced  # the first write really happened before the fault
    assert harness.tree() == before
    assert not (harness.root / "d").exists()
    assert hidden_leftovers(harness.root) == []
    assert harness.events == []


@pytest.mark.parametrize("fails", [False, True])
async def test_files_named_at_the_length_limit_are_patched(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, fails: bool, swap: str
) -> None:
    """The temporary and backup files beside a target are named after it: for a name at
    NAME_MAX (255 bytes) that name is shortened, not refused by the filesystem; a failed
    commit still puts everything back through them."""
    long_ascii = "a" * 251 + ".txt"  # 255 bytes
    long_utf8 = "é" * 125 + ".txt"  # 254 bytes, two per character
    doomed = "d" * 251 + ".txt"
    harness.write({long_ascii: "one\n", long_utf8: "two\n", doomed: "three\n"})
    before = harness.tree()
    if fails:

        def error_for(src: str, dst: str) -> OSError | None:
            # the last step, moving the deleted file aside, fails: both updates are undone
            if Path(dst).name.endswith(".bak"):
                return OSError(5, "Input/output error")
            return None

        fail_swaps(monkeypatch, error_for)
    patch = envelope(
        f"*** Update File: {long_ascii}",
        "@@",
        "-one",
        "+1",
        f"*** Update File: {long_utf8}",
        "@@",
        "-two",
        "+2",
        f"*** Delete File: {doomed}",
    )
    result = await harness.call("apply_patch", input=patch)
    if fails:
        assert result.is_error, result.output
        assert harness.tree() == before
    else:
        assert not result.is_error, result.output
        assert harness.tree() == {long_ascii: b"1\n", long_utf8: b"2\n"}
    assert hidden_leftovers(harness.root) == []


async def test_real_git_diff_applies(harness: Harness, tmp_path: Path) -> None:
    git = need_program("git")
    before = {
        "src/app.py": APP,
        "src/util.py": "def helper():\n    return 'x'\n"
        + "".join(f"# line {i}\n" for i in range(20)),
        "README.md": "# Project\n\nSome text\n",
        "old_name.txt": "".join(f"row {i}\n" for i in range(30)),
        "nonl.txt": "last line without newline",
    }
    after = {
        "src/app.py": APP_AFTER.replace("def beta():", "def beta(y):"),
        "src/util.py": "def helper():\n    return 'y'\n"
        + "".join(f"# line {i}\n" for i in range(20))
        + "# end\n",
        "docs/new.md": "new doc\n",
        "new_name.txt": "".join(f"row {i}\n" for i in range(30)).replace("row 7\n", "row seven\n"),
        "nonl.txt": "last line changed, still without newline",
    }
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

    def run_git(*args: str) -> str:
        return subprocess.run(
            [git, "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    write_tree(repo, before)
    run_git("init", "-q")
    run_git("add", "-A")
    run_git("commit", "-q", "-m", "before")
    for rel in before:
        (repo / rel).unlink()
    write_tree(repo, after)
    run_git("add", "-A")
    diff = run_git("diff", "--cached", "-M", "HEAD")
    assert "rename from old_name.txt" in diff and "\\ No newline at end of file" in diff

    harness.write(before)
    result = await harness.call("apply_patch", input=diff)
    assert not result.is_error, result.output
    assert harness.tree() == {k: v.encode() for k, v in after.items()}
    assert "R old_name.txt -> new_name.txt (+1 -1)" in result.output
    assert "D README.md (+0 -3)" in result.output
    assert "A docs/new.md (+1 -0)" in result.output


@pytest.mark.parametrize(
    "patch",
    [
        envelope("*** Add File: ../escape.txt", "+x"),
        envelope("*** Add File: /tmp/agentd-escape-test.txt", "+x"),
        envelope("*** Add File: link/escape.txt", "+x"),
        envelope("*** Update File: ../outside/victim.txt", "@@", "-secret", "+changed"),
        envelope("*** Update File: link/victim.txt", "@@", "-secret", "+changed"),
        envelope("*** Update File: inside.txt", "*** Move to: ../moved.txt", "@@", "-in", "+x"),
        envelope("*** Update File: inside.txt", "*** Move to: link/moved.txt", "@@", "-in", "+x"),
        envelope("*** Delete File: ../outside/victim.txt"),
        envelope("*** Delete File: link/victim.txt"),
        envelope("*** Update File: filelink.txt", "@@", "-secret", "+changed"),
        "--- a/../outside/victim.txt\n+++ b/../outside/victim.txt\n"
        "@@ -1 +1 @@\n-secret\n+changed\n",
        "--- /dev/null\n+++ b/link/new.txt\n@@ -0,0 +1 @@\n+x\n",
        "diff --git a/inside.txt b/../moved.txt\nsimilarity index 100%\nrename from inside.txt\n"
        "rename to ../moved.txt\n",
    ],
)
async def test_confinement(harness: Harness, tmp_path: Path, patch: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("secret\n")
    harness.write({"inside.txt": "in\n"})
    (harness.root / "link").symlink_to(outside)
    (harness.root / "filelink.txt").symlink_to(outside / "victim.txt")
    before_inside = harness.tree()
    before_outside = read_tree(tmp_path)
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error
    assert "outside the workspace" in result.output
    assert harness.tree() == before_inside
    assert read_tree(tmp_path) == before_outside
    assert not Path("/tmp/agentd-escape-test.txt").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("where", ["outside, absolute", "outside, through a link", "inside"])
@pytest.mark.parametrize("operation", ["Update", "Add"])
async def test_a_fifo_is_refused_at_once_not_waited_on(
    harness: Harness, tmp_path: Path, where: str, operation: str
) -> None:
    """Opening a FIFO to read waits for a writer: apply_patch must neither hang on one nor
    touch one outside the workspace (the confinement check comes after the open)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "pipe.txt")
    os.mkfifo(harness.root / "pipe.txt")
    (harness.root / "link").symlink_to(outside)
    name = {
        "outside, absolute": str(outside / "pipe.txt"),
        "outside, through a link": "link/pipe.txt",
        "inside": "pipe.txt",
    }[where]
    if operation == "Update":
        patch = envelope(f"*** Update File: {name}", "@@", "-a", "+b")
    else:  # an added file replaces what is there: it must look at the FIFO, not wait on it
        patch = envelope(f"*** Add File: {name}", "+b")
    try:
        with anyio.fail_after(20):
            result = await harness.call("apply_patch", input=patch)
    finally:
        # a reader stuck in open() gets a writer, and then the end of the pipe
        for fifo in (outside / "pipe.txt", harness.root / "pipe.txt"):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert result.is_error
    if where == "inside":
        assert "not a regular file" in result.output
    else:
        assert "outside the workspace" in result.output
    assert stat.S_ISFIFO((harness.root / "pipe.txt").lstat().st_mode)
    assert stat.S_ISFIFO((outside / "pipe.txt").lstat().st_mode)


# ---------------------------------------------------------------------------------------------
# Property: a diff of A to B applied to A gives B, in both formats.

LINE = st.one_of(
    st.sampled_from(["", "x", "y", "  indented", "end", "}", "def f():", "trailing  ", "‘q’"]),
    st.text(st.characters(exclude_characters="\r\n\x00", exclude_categories=("Cs",)), max_size=6),
)
TEXT_LINES = st.lists(LINE, max_size=25)


def join(lines: list[str], final_newline: bool) -> str:
    text = "\n".join(lines)
    return text + "\n" if lines and final_newline else text


def envelope_from_difflib(a: list[str], b: list[str], path: str) -> tuple[str, list[int]]:
    """An envelope with difflib's hunks, and where each hunk's old lines start in a."""
    body = [f"*** Update File: {path}"]
    starts = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(3):
        body.append("@@")
        starts.append(group[0][1])
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                body += [" " + line for line in a[i1:i2]]
            if tag in ("replace", "delete"):
                body += ["-" + line for line in a[i1:i2]]
            if tag in ("replace", "insert"):
                body += ["+" + line for line in b[j1:j2]]
        if group[-1][2] == len(a):
            body.append("*** End of File")
    return envelope(*body), starts


def first_match_is_intended(a: list[str], patch: str, starts: list[int]) -> bool:
    """The envelope places each hunk at the first match after the previous one; random texts
    with repeated lines can make that differ from where difflib meant it."""
    hunks = parse_patch(patch).ops[0].hunks  # type: ignore[union-attr]
    cursor = 0
    for hunk, start in zip(hunks, starts, strict=True):
        old = hunk.old
        if hunk.at_eof:
            found = len(a) - len(old)
        else:
            found = next(
                (i for i in range(cursor, len(a) - len(old) + 1) if a[i : i + len(old)] == old),
                None,
            )
        if found != start and old:
            return False
        cursor = start + len(old)
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=TEXT_LINES, b=TEXT_LINES, a_nl=st.booleans(), b_nl=st.booleans())
def test_property_unified_diff_from_difflib_applies(
    tmp_path_factory: pytest.TempPathFactory, a: list[str], b: list[str], a_nl: bool, b_nl: bool
) -> None:
    old, new = join(a, a_nl), join(b, b_nl)
    assume(old != new)
    root = tmp_path_factory.mktemp("prop")
    (root / "f.txt").write_text(old)
    _, changes = apply_patch_text(udiff(old, new, "f.txt"), Workspace(root))
    assert (root / "f.txt").read_text() == new
    # and the file_edit diff of the change replays to the same result
    (root / "f.txt").write_text(old)
    apply_patch_text(changes[0].diff, Workspace(root))
    assert (root / "f.txt").read_text() == new


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=TEXT_LINES, b=TEXT_LINES, a_nl=st.booleans(), b_nl=st.booleans())
def test_property_unified_diff_applies_to_crlf_files(
    tmp_path_factory: pytest.TempPathFactory, a: list[str], b: list[str], a_nl: bool, b_nl: bool
) -> None:
    # CRLF kept where lines are copied, given to added lines, and put back on (or taken off)
    # a last line that gains (or loses) its newline
    old = join(a, a_nl).replace("\n", "\r\n")
    new = join(b, b_nl).replace("\n", "\r\n")
    assume(old != new and "\r\n" in old)
    root = tmp_path_factory.mktemp("prop")
    (root / "f.txt").write_bytes(old.encode())
    _, changes = apply_patch_text(udiff(old, new, "f.txt"), Workspace(root))
    assert (root / "f.txt").read_bytes() == new.encode()
    # and the file_edit diff of the change replays to the same result
    (root / "f.txt").write_bytes(old.encode())
    apply_patch_text(changes[0].diff, Workspace(root))
    assert (root / "f.txt").read_bytes() == new.encode()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(a=TEXT_LINES, b=TEXT_LINES, final_newline=st.booleans())
def test_property_envelope_from_difflib_applies(
    tmp_path_factory: pytest.TempPathFactory, a: list[str], b: list[str], final_newline: bool
) -> None:
    old = join(a, final_newline)
    a = split_lines(old)[0]  # the lines the file really has
    assume(a != b)
    patch, starts = envelope_from_difflib(a, b, "f.txt")
    assume(first_match_is_intended(a, patch, starts))
    # The envelope cannot say whether the file ends with a newline: the file keeps its own
    # state (an empty file counts as ending with one, and an empty last line needs one).
    expected = "".join(line + "\n" for line in b)
    if old and not old.endswith("\n") and b and b[-1]:
        expected = expected[:-1]
    root = tmp_path_factory.mktemp("prop")
    (root / "f.txt").write_text(old)
    apply_patch_text(patch, Workspace(root))
    assert (root / "f.txt").read_text() == expected


@settings(max_examples=400, deadline=None)
@given(
    lines=TEXT_LINES,
    taken=st.tuples(st.integers(0, 25), st.integers(1, 5)),
    other=st.lists(LINE, min_size=1, max_size=4),
    from_file=st.booleans(),
    start=st.integers(0, 25),
    expected=st.none() | st.integers(0, 25),
)
def test_probing_for_a_unique_line_places_as_counting_does(
    lines: list[str],
    taken: tuple[int, int],
    other: list[str],
    from_file: bool,
    start: int,
    expected: int | None,
) -> None:
    # A hunk or two of a file probe for a line of theirs that occurs once instead of counting
    # the file's lines: the answer must be the same, found or not.
    at, size = taken
    pattern = lines[at : at + size] if from_file and lines[at : at + size] else other
    counted = LineIndex(lines, pattern).only_exact(pattern, start, expected)
    probed = LineIndex(lines, pattern, probes=1).only_exact(pattern, start, expected)
    assert probed == counted


def applied_or_error(text: str, hunks: list[tools.patch.Hunk], nearest_hint: bool) -> object:
    try:
        applied = tools.patch.apply_hunks(text, hunks, nearest_hint=nearest_hint)
    except tools.patch.HunkMismatch as exc:
        return str(exc)
    return applied.text, applied.regions, applied.notes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=TEXT_LINES,
    b=TEXT_LINES,
    final_newline=st.booleans(),
    crlf=st.booleans(),
    shift=st.lists(LINE, max_size=3),
    repeated=st.booleans(),
    unified=st.booleans(),
)
def test_probing_files_apply_as_counted_files(
    a: list[str],
    b: list[str],
    final_newline: bool,
    crlf: bool,
    shift: list[str],
    repeated: bool,
    unified: bool,
) -> None:
    # Files with few hunks probe for a unique line (LineIndex._probe); with probing turned
    # off they count their lines. Both must place every hunk alike, or fail alike, whether
    # the file is CRLF or ends without a newline, with the hunks off their line numbers, or
    # with every hunk's lines twice in the file (ambiguous).
    old, new = join(a, final_newline), join(b, final_newline)
    assume(a and old != new)
    if unified:
        patch = udiff(old, new, "f.txt")
    else:
        patch = envelope_from_difflib(a, b, "f.txt")[0]
    op = parse_patch(patch).ops[0]
    assume(isinstance(op, tools.patch.UpdateFile) and op.hunks)
    assert isinstance(op, tools.patch.UpdateFile)
    hunks = op.hunks
    text = join(shift + a + (a if repeated else []), final_newline)
    if crlf:
        text = text.replace("\n", "\r\n")
    probed = applied_or_error(text, hunks, unified)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(tools.patch, "_MOST_PROBED_HUNKS", 0)
        counted = applied_or_error(text, hunks, unified)
    assert probed == counted


# ---------------------------------------------------------------------------------------------
# Patches a model gets wrong in ways that used to be internal errors or odd advice


async def test_a_bad_escape_in_a_quoted_path_is_a_parse_error(harness: Harness) -> None:
    harness.write({"a.txt": "a\n"})
    patch = '--- "a/a\\x.txt"\n+++ "b/a\\x.txt"\n@@ -1 +1 @@\n-a\n+A\n'
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error and result.data["code"] == "invalid_patch", result.output
    assert "invalid escape" in result.output
    assert harness.tree() == {"a.txt": b"a\n"}


async def test_a_path_ending_with_a_slash_is_refused_not_made_a_file(harness: Harness) -> None:
    result = await harness.call("apply_patch", input=envelope("*** Add File: newdir/", "+x"))
    assert result.is_error and result.data["code"] == "invalid_patch", result.output
    assert "names a directory" in result.output
    assert harness.tree() == {}


async def test_adding_a_file_under_a_file_says_which_is_in_the_way(harness: Harness) -> None:
    harness.write({"f": "a file\n"})
    patch = envelope("*** Delete File: f", "*** Add File: f/x.txt", "+x")
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error and result.data["code"] == "patch_failed", result.output
    assert "f/x.txt: one of its directories is a file" in result.output
    assert ".tmp" not in result.output  # not a temporary file's name from a failed commit
    assert harness.tree() == {"f": b"a file\n"}


async def test_moving_onto_an_existing_file_gives_advice_that_works(harness: Harness) -> None:
    harness.write({"a.txt": "a\n", "b.txt": "b\n"})
    patch = envelope("*** Update File: a.txt", "*** Move to: b.txt", "@@", "-a", "+A")
    result = await harness.call("apply_patch", input=patch)
    assert result.is_error and "already exists" in result.output
    assert "delete that file with one patch and move this one with the next" in result.output
    # ... and that advice applies
    deleted = await harness.call("apply_patch", input=envelope("*** Delete File: b.txt"))
    assert not deleted.is_error
    assert not (await harness.call("apply_patch", input=patch)).is_error
    assert harness.tree() == {"b.txt": b"A\n"}


async def test_a_tilde_path_of_no_user_is_a_name_in_the_workspace(harness: Harness) -> None:
    """As a shell reads it: `~nobody-x/f.txt` expands only for a user who exists."""
    patch = envelope("*** Add File: ~no-such-user-agentd/f.txt", "+x")
    result = await harness.call("apply_patch", input=patch)
    assert not result.is_error, result.output
    assert harness.tree() == {"~no-such-user-agentd/f.txt": b"x\n"}


# A process that applies the patch on its stdin to the workspace argv[1] and is SIGKILLed
# just before its third swap (tools/commit_journal.py's case).
_KILLED_MID_COMMIT = """
import os, signal, sys
from pathlib import Path
import tools.textfile
from tools.patch import apply_patch_text
from tools.workspace import Workspace

real = tools.textfile.rename_exchange
swaps = 0

def exchange(a, b):
    global swaps
    swaps += 1
    if swaps == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    real(a, b)

tools.textfile.rename_exchange = exchange
apply_patch_text(sys.stdin.read(), Workspace(Path(sys.argv[1])))
"""


def leave_a_half_applied_patch(root: Path) -> dict[str, str]:
    """Five files in `root`, and a 5-file patch of them applied by a process killed between
    two swaps (some files new, the rest old): the files as they were."""
    old = {f"f{n}.txt": f"old {n}\n" for n in range(5)}
    for name, text in old.items():
        (root / name).write_text(text)
    hunks = (f"*** Update File: f{n}.txt\n@@\n-old {n}\n+new {n}\n" for n in range(5))
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_COMMIT, str(root)],
        input="*** Begin Patch\n" + "".join(hunks) + "*** End Patch\n",
        text=True,
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    new = sum((root / name).read_text().startswith("new") for name in old)
    assert 0 < new < len(old)  # the kill landed mid-commit
    return old


@pytest.mark.skipif(tools.textfile.rename_exchange is None, reason="no renameat2 exchange here")
async def test_a_patch_a_killed_process_left_half_applied_is_rolled_back_first(
    harness: Harness,
) -> None:
    """A daemon killed between two swaps of a 5-file patch leaves some files new, the rest
    old; the next apply_patch settles its journal (tools/commit_journal.py) first."""
    old = leave_a_half_applied_patch(harness.root)
    result = await harness.call("apply_patch", input=envelope("*** Add File: g.txt", "+g"))
    assert not result.is_error, result.output
    tree = harness.tree()
    assert tree == {**{n: t.encode() for n, t in old.items()}, "g.txt": b"g\n"}
