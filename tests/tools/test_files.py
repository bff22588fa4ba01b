"""The file tools through `Toolbox.call`: read_file, write_file, edit_file, list_dir, glob, grep."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import regex

import tools.files
from tests.needs import need_program
from tests.tools.harness import Harness, fail_swaps, open_harness, read_tree
from tools.base import core_tool_names
from tools.files import grep_python
from tools.patch import apply_patch_text
from tools.workspace import Workspace


@pytest.fixture
async def harness(workspace: Path) -> AsyncIterator[Harness]:
    async with open_harness(workspace) as h:
        yield h


def test_tools_are_registered_in_model_order() -> None:
    mine = [
        "apply_patch",
        "read_file",
        "write_file",
        "edit_file",
        "list_dir",
        "glob",
        "grep",
        "get_dev_url",
    ]
    names = core_tool_names()
    assert [n for n in names if n in mine] == mine
    if "exec_command" in names:
        assert names.index("exec_command") < names.index("write_stdin") < names.index("apply_patch")


async def test_read_only_flags(harness: Harness) -> None:
    box = harness.box
    assert [box.is_read_only(n) for n in ("read_file", "list_dir", "glob", "grep")] == [True] * 4
    for name in ("apply_patch", "write_file", "edit_file", "get_dev_url"):
        assert not box.is_read_only(name)


# ---------------------------------------------------------------------------------------------
# read_file


async def test_read_file_numbers_lines_like_cat_n(harness: Harness) -> None:
    harness.write({"a.txt": "first\n\tsecond\nthird"})
    result = await harness.call("read_file", path="a.txt")
    assert not result.is_error
    assert result.output == "     1\tfirst\n     2\t\tsecond\n     3\tthird"
    assert result.data["totalLines"] == 3 and not result.data["truncated"]


async def test_read_file_offset_limit_and_paging_note(harness: Harness) -> None:
    harness.write({"n.txt": "".join(f"line {i}\n" for i in range(1, 11))})
    result = await harness.call("read_file", path="n.txt", offset=4, limit=3)
    lines = result.output.splitlines()
    assert lines[:3] == ["     4\tline 4", "     5\tline 5", "     6\tline 6"]
    assert lines[3] == "[Showing lines 4-6 of 10. Call read_file with offset=7 to continue.]"
    tail = await harness.call("read_file", path="n.txt", offset=9)
    assert tail.output == "     9\tline 9\n    10\tline 10"
    past = await harness.call("read_file", path="n.txt", offset=11)
    assert past.is_error and "offset 11 is past the end of n.txt, which has 10 lines" in past.output


async def test_read_file_default_limit_pages_long_files(harness: Harness) -> None:
    harness.write({"long.txt": "".join(f"{i}\n" for i in range(1, 2501))})
    result = await harness.call("read_file", path="long.txt")
    lines = result.output.splitlines()
    assert lines[1999] == "  2000\t2000"
    assert lines[2000] == (
        "[Showing lines 1-2000 of 2500. Call read_file with offset=2001 to continue.]"
    )


async def test_read_file_huge_output_is_cut_with_a_note(harness: Harness) -> None:
    harness.write({"wide.txt": "".join(f"{i:05d} " + "x" * 200 + "\n" for i in range(1, 3001))})
    result = await harness.call("read_file", path="wide.txt")
    assert len(result.output.encode()) <= tools.files.MAX_READ_BYTES + 300
    last = result.data["lastLine"]
    assert 300 < last < 2000
    assert f"Call read_file with offset={last + 1} to continue" in result.output
    assert result.output.splitlines()[-2].startswith(f"{last:>6}\t{last:05d} ")


async def test_read_file_cuts_long_lines(harness: Harness) -> None:
    harness.write({"min.js": "short\n" + "y" * 5000 + "\nend\n", "giant.txt": "z" * 200_000})
    result = await harness.call("read_file", path="min.js")
    lines = result.output.splitlines()
    assert lines[1] == "     2\t" + "y" * tools.files.MAX_LINE_CHARS + " …[line truncated]"
    assert lines[2] == "     3\tend"
    assert "[1 line(s) longer than 2000 characters were cut.]" in result.output
    giant = await harness.call("read_file", path="giant.txt")
    assert giant.output.startswith("     1\t" + "z" * 2000 + " …[line truncated]")


async def test_read_file_crlf_bom_and_empty(harness: Harness) -> None:
    harness.write({"w.txt": b"\xef\xbb\xbfone\r\ntwo\r\n", "empty.txt": ""})
    result = await harness.call("read_file", path="w.txt")
    assert result.output == "     1\tone\n     2\ttwo"
    assert result.data["lineEndings"] == "crlf"
    empty = await harness.call("read_file", path="empty.txt")
    assert not empty.is_error and empty.output == "[empty.txt is empty]"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PNG\x00\x01\x02", "is a binary file (it contains NUL bytes)"),
        (b"caf\xe9 au lait\n", "is not UTF-8 text (line 1 has undecodable bytes)"),
    ],
    ids=["nul", "latin-1"],
)
async def test_read_file_refuses_binary(harness: Harness, content: bytes, message: str) -> None:
    harness.write({"blob": content})
    result = await harness.call("read_file", path="blob")
    assert result.is_error and message in result.output


async def test_read_file_finds_binary_past_the_sniffed_head(harness: Harness) -> None:
    harness.write({"blob": b"a\n" * 5000 + b"b\x00\n"})
    head = await harness.call("read_file", path="blob", limit=3)
    assert not head.is_error  # the lines shown are text
    tail = await harness.call("read_file", path="blob", offset=4999)
    assert tail.is_error and "line 5001 contains NUL bytes" in tail.output


async def test_read_file_missing_and_directory(harness: Harness) -> None:
    (harness.root / "d").mkdir()
    missing = await harness.call("read_file", path="nope.txt")
    assert missing.is_error and missing.data["code"] == "not_found"
    directory = await harness.call("read_file", path="d")
    assert directory.is_error and "is a directory; use list_dir" in directory.output


# ---------------------------------------------------------------------------------------------
# write_file


async def test_write_file_creates_parents_and_emits_diffs(harness: Harness) -> None:
    created = await harness.call("write_file", path="a/b/c.txt", content="one\ntwo\n")
    assert not created.is_error and created.output == "Created a/b/c.txt (+2 -0)."
    assert (harness.root / "a/b/c.txt").read_text() == "one\ntwo\n"
    rewritten = await harness.call("write_file", path="a/b/c.txt", content="one\n2\n")
    assert rewritten.output == "Wrote a/b/c.txt (+1 -1)."
    same = await harness.call("write_file", path="a/b/c.txt", content="one\n2\n")
    assert "already has exactly this content" in same.output
    (harness.root / "bom.txt").write_bytes(b"\xef\xbb\xbfone\n")
    bom_dropped = await harness.call("write_file", path="bom.txt", content="one\n")
    assert bom_dropped.output == "Wrote bom.txt (+0 -0)."
    assert (harness.root / "bom.txt").read_bytes() == b"one\n"
    harness.events.pop()
    assert [(e["type"], e["path"], e["action"]) for e in harness.events] == [
        ("file_edit", "a/b/c.txt", "create"),
        ("file_edit", "a/b/c.txt", "modify"),
    ]
    assert (
        harness.events[0]["diff"] == "--- /dev/null\n+++ b/a/b/c.txt\n@@ -0,0 +1,2 @@\n+one\n+two\n"
    )
    assert harness.events[1]["diff"] == (
        "--- a/a/b/c.txt\n+++ b/a/b/c.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+2\n"
    )


async def test_write_file_keeps_mode_and_refuses_directories(harness: Harness) -> None:
    harness.write({"run.sh": "echo\n"})
    (harness.root / "run.sh").chmod(0o755)
    result = await harness.call("write_file", path="run.sh", content="echo hi\n")
    assert not result.is_error
    assert stat.S_IMODE((harness.root / "run.sh").stat().st_mode) == 0o755
    (harness.root / "dir").mkdir()
    directory = await harness.call("write_file", path="dir", content="x")
    assert directory.is_error and "is a directory" in directory.output
    under_file = await harness.call("write_file", path="run.sh/x.txt", content="x")
    assert under_file.is_error and "run.sh/x.txt" in under_file.output


async def test_write_file_over_binary_file(harness: Harness) -> None:
    harness.write({"b.bin": b"\x00\x01"})
    result = await harness.call("write_file", path="b.bin", content="text\n")
    assert not result.is_error
    assert harness.events[-1]["diff"].endswith("Binary or large file replaced by 1 lines of text\n")


# ---------------------------------------------------------------------------------------------
# edit_file


async def test_edit_file_replaces_a_unique_string(harness: Harness) -> None:
    harness.write({"app.py": "def f():\n    return 1\n\n\ndef g():\n    return 2\n"})
    result = await harness.call(
        "edit_file", path="app.py", old_string="return 2", new_string="return 20"
    )
    assert not result.is_error, result.output
    assert (harness.root / "app.py").read_text().endswith("def g():\n    return 20\n")
    assert result.output.startswith("Edited app.py: replaced 1 occurrence (+1 -1).")
    assert "     6\t    return 20" in result.output
    event = harness.events[-1]
    assert (event["path"], event["action"]) == ("app.py", "modify")
    assert "-    return 2\n+    return 20\n" in event["diff"]


async def test_edit_file_occurrence_errors(harness: Harness) -> None:
    harness.write({"a.txt": "x = 1\ny = 2\nx = 1\n\nx = 1\n"})
    several = await harness.call("edit_file", path="a.txt", old_string="x = 1", new_string="x")
    assert several.is_error
    assert "old_string occurs 3 times in a.txt (at lines 1, 3, 5)" in several.output
    assert "replace_all" in several.output
    missing = await harness.call("edit_file", path="a.txt", old_string="y = 3", new_string="y")
    assert missing.is_error and "old_string was not found in a.txt" in missing.output
    assert "The closest line is 2: 'y = 2'" in missing.output
    spaced = await harness.call("edit_file", path="a.txt", old_string="y = 2  ", new_string="z")
    assert "It matches lines 2-2 ignoring trailing whitespace" in spaced.output
    same = await harness.call("edit_file", path="a.txt", old_string="y = 2", new_string="y = 2")
    assert same.is_error and "identical" in same.output
    assert harness.tree() == {"a.txt": b"x = 1\ny = 2\nx = 1\n\nx = 1\n"}
    assert harness.events == []
    every = await harness.call(
        "edit_file", path="a.txt", old_string="x = 1", new_string="x = 9", replace_all=True
    )
    assert every.output.startswith("Edited a.txt: replaced 3 occurrences (+3 -3).")
    assert (harness.root / "a.txt").read_text() == "x = 9\ny = 2\nx = 9\n\nx = 9\n"


async def test_edit_file_keeps_crlf_and_bom(harness: Harness) -> None:
    harness.write({"w.txt": b"\xef\xbb\xbfone\r\ntwo\r\nthree\r\n"})
    result = await harness.call(
        "edit_file", path="w.txt", old_string="one\ntwo\n", new_string="one\n2\n2.5\n"
    )
    assert not result.is_error, result.output
    assert (harness.root / "w.txt").read_bytes() == b"\xef\xbb\xbfone\r\n2\r\n2.5\r\nthree\r\n"


async def test_edit_file_creates_with_empty_old_string(harness: Harness) -> None:
    created = await harness.call("edit_file", path="new.txt", old_string="", new_string="hi\n")
    assert not created.is_error and created.output.startswith("Created new.txt")
    assert harness.events[-1]["action"] == "create"
    refused = await harness.call("edit_file", path="new.txt", old_string="", new_string="x")
    assert refused.is_error and "old_string is empty but new.txt is not" in refused.output
    missing = await harness.call("edit_file", path="nope.txt", old_string="a", new_string="b")
    assert missing.is_error and "does not exist; create it with write_file" in missing.output


async def test_edit_file_refuses_binary(harness: Harness) -> None:
    harness.write({"b.bin": b"ab\x00cd"})
    result = await harness.call("edit_file", path="b.bin", old_string="ab", new_string="x")
    assert result.is_error and "binary" in result.output
    assert (harness.root / "b.bin").read_bytes() == b"ab\x00cd"


async def test_edit_diff_replays(harness: Harness, tmp_path: Path) -> None:
    original = "".join(f"line {i}\n" for i in range(40))
    harness.write({"f.txt": original})
    await harness.call("edit_file", path="f.txt", old_string="line 20\n", new_string="twenty\n")
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "f.txt").write_text(original)
    apply_patch_text(harness.events[-1]["diff"], Workspace(replay))
    assert (replay / "f.txt").read_text() == (harness.root / "f.txt").read_text()


# ---------------------------------------------------------------------------------------------
# list_dir and glob


def make_project(root: Path) -> None:
    files = {
        "README.md": "# readme\n",
        "setup.py": "setup()\n",
        "src/app.py": "import os\nprint('hello')\n",
        "src/util.ts": "export const hello = 1;\n",
        "src/pkg/deep.py": "HELLO = 'Hello'\n",
        "src/pkg/more/deeper.tsx": "hello()\n",
        ".env": "hello=secret-ish\n",
        "docs/guide.md": "Say hello.\nSay HELLO.\n",
        "data.bin": b"hello\x00world\n",
        ".git/config": "hello from git\n",
        ".git/objects/ab": "hello\n",
        "a.txt": "hello a.txt\n",
        "a/z.txt": "hello a/z.txt\n",
        "win.txt": b"hello\r\nbye\r\n",
        "bom.txt": b"\xef\xbb\xbfhello bom\n",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


async def test_list_dir_tree(harness: Harness, tmp_path: Path) -> None:
    make_project(harness.root)
    (harness.root / "outside_link").symlink_to(tmp_path)
    result = await harness.call("list_dir")
    assert result.output.splitlines() == [
        "./",
        "  .env",
        "  .git/ (not expanded)",
        "  README.md",
        "  a/",
        "    z.txt",
        "  a.txt",
        "  bom.txt",
        "  data.bin",
        "  docs/",
        "    guide.md",
        f"  outside_link -> {tmp_path}",
        "  setup.py",
        "  src/",
        "    app.py",
        "    pkg/",
        "    util.ts",
        "  win.txt",
    ]
    deep = await harness.call("list_dir", path="src", depth=3)
    assert deep.output.splitlines() == [
        "src/",
        "  app.py",
        "  pkg/",
        "    deep.py",
        "    more/",
        "      deeper.tsx",
        "  util.ts",
    ]
    not_dir = await harness.call("list_dir", path="setup.py")
    assert not_dir.is_error and "use read_file" in not_dir.output


async def test_list_dir_caps_entries(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tools.files, "MAX_LIST_ENTRIES", 5)
    harness.write({f"f{i:02d}.txt": "" for i in range(12)})
    result = await harness.call("list_dir")
    assert result.output.splitlines()[-1].startswith("[7 more entries not shown")
    assert result.data["truncated"]


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.py", None, ["setup.py", "src/app.py", "src/pkg/deep.py"]),
        ("*.py", None, ["setup.py"]),
        ("src/**/*.{ts,tsx}", None, ["src/util.ts", "src/pkg/more/deeper.tsx"]),
        ("*.py", "src", ["src/app.py"]),
        ("**", "src/pkg", ["src/pkg/deep.py", "src/pkg/more/deeper.tsx"]),
        ("a?txt", None, ["a.txt"]),
        ("[ab]*/*.txt", None, ["a/z.txt"]),
        ("**/config", None, []),
    ],
)
async def test_glob(harness: Harness, pattern: str, path: str | None, expected: list[str]) -> None:
    make_project(harness.root)
    args: dict[str, Any] = {"pattern": pattern}
    if path:
        args["path"] = path
    result = await harness.box.call("glob", args)
    assert not result.is_error
    assert result.data["paths"] == sorted(expected, key=lambda p: p.split("/"))
    if expected:
        assert result.output.splitlines() == result.data["paths"]
    else:
        assert result.output.startswith("No files match")


# ---------------------------------------------------------------------------------------------
# grep: both engines


@pytest.fixture(params=["python", "ripgrep"])
def engine(request: pytest.FixtureRequest, harness: Harness) -> str:
    if request.param == "ripgrep":
        need_program("rg")
    harness.box.settings.use_ripgrep = request.param == "ripgrep"
    return str(request.param)


async def test_grep_output_format_and_order(harness: Harness, engine: str) -> None:
    make_project(harness.root)
    result = await harness.call("grep", pattern="hello")
    assert result.data["engine"] == engine
    assert result.output.splitlines() == [
        ".env:1:hello=secret-ish",
        "a/z.txt:1:hello a/z.txt",
        "a.txt:1:hello a.txt",
        "bom.txt:1:hello bom",
        "docs/guide.md:1:Say hello.",
        "src/app.py:2:print('hello')",
        "src/pkg/more/deeper.tsx:1:hello()",
        "src/util.ts:1:export const hello = 1;",
        "win.txt:1:hello",
    ]


GREP_QUERIES: list[dict[str, Any]] = [
    {"pattern": "hello"},
    {"pattern": "hello", "case_insensitive": True},
    {"pattern": "HELLO"},
    {"pattern": "hello", "glob": "*.py", "case_insensitive": True},
    {"pattern": "hello", "glob": "src/*.py", "case_insensitive": True},
    {"pattern": "hello", "glob": "src/**/*.tsx"},
    {"pattern": "hello", "glob": "!*.txt"},
    {"pattern": "hello", "path": "src", "case_insensitive": True},
    {"pattern": "hello", "path": "docs/guide.md", "case_insensitive": True},
    {"pattern": r"^\w+$"},
    {"pattern": "hello$"},
    {"pattern": "hel+o", "max_results": 3},
    {"pattern": "(?<=say )hello", "case_insensitive": True},
    {"pattern": "nothing-matches-this"},
]


@pytest.mark.parametrize("query", GREP_QUERIES, ids=lambda q: " ".join(map(str, q.values())))
async def test_grep_engines_agree(harness: Harness, query: dict[str, Any]) -> None:
    need_program("rg")  # else there is nothing to compare the fallback with
    make_project(harness.root)
    harness.box.settings.use_ripgrep = True
    with_rg = await harness.box.call("grep", query)
    harness.box.settings.use_ripgrep = False
    fallback = await harness.box.call("grep", query)
    assert fallback.data["engine"] == "python"
    assert not with_rg.is_error and not fallback.is_error
    assert with_rg.output == fallback.output
    assert with_rg.data["matches"] == fallback.data["matches"]


async def test_grep_options(harness: Harness, engine: str) -> None:
    make_project(harness.root)
    insensitive = await harness.call("grep", pattern="say hello", case_insensitive=True)
    assert insensitive.output.splitlines() == [
        "docs/guide.md:1:Say hello.",
        "docs/guide.md:2:Say HELLO.",
    ]
    filtered = await harness.call("grep", pattern="hello", glob="*.py", case_insensitive=True)
    assert filtered.output.splitlines() == [
        "src/app.py:2:print('hello')",
        "src/pkg/deep.py:1:HELLO = 'Hello'",
    ]
    capped = await harness.call("grep", pattern="hello", max_results=2)
    assert capped.output.splitlines()[:2] == [".env:1:hello=secret-ish", "a/z.txt:1:hello a/z.txt"]
    assert "[Showing the first 2 matches; there are more." in capped.output
    assert capped.data["truncated"]
    one_file = await harness.call("grep", pattern="HELLO", path="docs/guide.md")
    assert one_file.output == "docs/guide.md:2:Say HELLO."
    none = await harness.call("grep", pattern="zzz", path="src")
    assert not none.is_error and none.output == "No matches for 'zzz' in src."
    bad = await harness.call("grep", pattern="(unclosed")
    assert bad.is_error and "invalid regular expression" in bad.output


async def test_grep_skips_binary_vcs_and_symlinks(
    harness: Harness, engine: str, tmp_path: Path
) -> None:
    make_project(harness.root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("hello from outside\n")
    (harness.root / "linkdir").symlink_to(outside)
    (harness.root / "linkfile.txt").symlink_to(outside / "secret.txt")
    result = await harness.call("grep", pattern="hello|world")
    paths = {line.split(":")[0] for line in result.output.splitlines()}
    assert "data.bin" not in paths
    assert not any(p.startswith((".git", "linkdir", "linkfile")) for p in paths)
    assert "outside" not in result.output


# ---------------------------------------------------------------------------------------------
# Confinement: every tool refuses paths outside the workspace, including through symlinks.

ESCAPES = ["../outside/secret.txt", "{outside}/secret.txt", "link/secret.txt", "filelink.txt"]
DIR_ESCAPES = ["..", "../outside", "{outside}", "link"]


def confinement_calls() -> list[tuple[str, dict[str, Any]]]:
    calls: list[tuple[str, dict[str, Any]]] = []
    for path in ESCAPES:
        calls += [
            ("read_file", {"path": path}),
            ("write_file", {"path": path, "content": "pwned\n"}),
            ("edit_file", {"path": path, "old_string": "secret", "new_string": "pwned"}),
            ("grep", {"pattern": "secret", "path": path}),
        ]
    calls.append(("write_file", {"path": "link/new.txt", "content": "pwned\n"}))
    calls.append(("edit_file", {"path": "link/new.txt", "old_string": "", "new_string": "x"}))
    for path in DIR_ESCAPES:
        calls += [
            ("list_dir", {"path": path}),
            ("glob", {"pattern": "**", "path": path}),
            ("grep", {"pattern": "secret", "path": path}),
        ]
    return calls


@pytest.mark.parametrize(
    ("tool", "args"), confinement_calls(), ids=lambda v: v if isinstance(v, str) else v["path"]
)
async def test_confinement(
    harness: Harness, tmp_path: Path, tool: str, args: dict[str, Any]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (harness.root / "link").symlink_to(outside)
    (harness.root / "filelink.txt").symlink_to(outside / "secret.txt")
    args = {k: v.format(outside=outside) if k == "path" else v for k, v in args.items()}
    before = read_tree(tmp_path)
    result = await harness.box.call(tool, args)
    assert result.is_error, result.output
    assert result.data["code"] == "outside_workspace"
    assert "secret" not in result.output.replace("secret.txt", "")
    assert read_tree(tmp_path) == before
    assert harness.events == []


async def test_root_listing_does_not_follow_symlinks_out(harness: Harness, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (harness.root / "link").symlink_to(outside)
    globbed = await harness.call("glob", pattern="**")
    assert globbed.data["paths"] == []
    listed = await harness.call("list_dir", depth=5)
    assert "secret.txt" not in listed.output
    assert os.path.islink(harness.root / "link")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read_file", {}),
        ("write_file", {"content": "x\n"}),
        ("edit_file", {"old_string": "a", "new_string": "b"}),
    ],
)
async def test_a_fifo_is_refused_at_once_not_waited_on(
    harness: Harness, tool: str, args: dict[str, Any]
) -> None:
    """Reading a FIFO waits for a writer: the file tools refuse one rather than hang."""
    fifo = harness.root / "pipe.txt"
    os.mkfifo(fifo)
    try:
        with anyio.fail_after(20):
            result = await harness.call(tool, path="pipe.txt", **args)
    finally:
        # a reader stuck in open() gets a writer, and then the end of the pipe
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert result.is_error
    assert "pipe.txt is not a regular file" in result.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@contextlib.asynccontextmanager
async def fifo_released_after(fifo: Path, seconds: float) -> AsyncIterator[anyio.Event]:
    """After `seconds`, gives a reader stuck in open(fifo) a writer, and so the end of the
    pipe, and sets the event it yields: a worker thread blocked there cannot be cancelled, so
    without this a tool that waits on the FIFO would hang its test instead of failing it."""
    released = anyio.Event()

    async def release() -> None:
        await anyio.sleep(seconds)
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        released.set()

    async with anyio.create_task_group() as group:
        group.start_soon(release)
        yield released
        group.cancel_scope.cancel()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
async def test_grep_refuses_a_fifo_it_is_given_and_skips_one_it_walks_past(
    harness: Harness, engine: str
) -> None:
    """ripgrep, like open(), waits for a writer on a FIFO named on its command line (it skips
    special files only in a directory it walks)."""
    harness.write({"a.txt": "x marks\n", "sub/b.txt": "x too\n"})
    fifo = harness.root / "pipe.txt"
    os.mkfifo(fifo)
    os.mkfifo(harness.root / "sub" / "pipe.txt")
    async with fifo_released_after(fifo, 10) as released:
        with anyio.fail_after(20):
            named = await harness.call("grep", pattern="x", path="pipe.txt")
            walked = await harness.call("grep", pattern="x")
            globbed = await harness.call("grep", pattern="x", glob="*.txt")
    assert not released.is_set(), "grep waited on the FIFO"
    assert named.is_error and named.data["code"] == "not_regular_file", named.output
    assert "pipe.txt is not a regular file (a FIFO, socket or device)" in named.output
    assert walked.output.splitlines() == ["a.txt:1:x marks", "sub/b.txt:1:x too"]
    assert globbed.output == walked.output
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
async def test_grep_never_opens_a_fifo_that_replaced_a_listed_file(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk lists regular files, but a file may become a FIFO before it is read: the
    Python engine opens without waiting and skips what is not a regular file."""
    harness.box.settings.use_ripgrep = False
    harness.write({"a.txt": "x\n", "c.txt": "x\n"})
    fifo = harness.root / "b.txt"
    os.mkfifo(fifo)
    listed = tools.files.walk_files

    def walk_as_before_b_was_replaced(base: Path) -> list[tuple[str, str]]:
        return sorted([*listed(base), ("b.txt", os.fspath(base / "b.txt"))])

    monkeypatch.setattr(tools.files, "walk_files", walk_as_before_b_was_replaced)
    async with fifo_released_after(fifo, 10) as released:
        with anyio.fail_after(20):
            result = await harness.call("grep", pattern="x")
    assert not released.is_set(), "grep waited on the FIFO"
    assert result.output.splitlines() == ["a.txt:1:x", "c.txt:1:x"]


async def test_grep_gives_up_on_a_pattern_that_backtracks_catastrophically(
    harness: Harness, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a|a)+ tries 2^n ways to match n a's before it fails on the '!': the Python engine
    stops at GREP_TIME_LIMIT and says so, with what it found before (not as a complete
    answer). The look-behind, which ripgrep rejects, sends both engines to the Python one."""
    monkeypatch.setattr(tools.files, "GREP_TIME_LIMIT", 0.5)
    harness.write({"a.txt": "aaaa\n", "b.txt": "a" * 25 + "!\n", "c.txt": "aa\n"})
    with anyio.fail_after(30):
        result = await harness.call("grep", pattern="(?<!x)(a|a)+$")
    assert result.is_error and result.data["code"] == "timeout", result.output
    assert result.output.startswith(
        "grep gave up on '(?<!x)(a|a)+$' after 0.5 s (its time limit), at b.txt:1."
    )
    assert "nested or overlapping quantifiers" in result.output
    assert "[1 match found before it gave up; the search is incomplete" in result.output
    assert result.output.endswith("\na.txt:1:aaaa")  # found before b.txt; c.txt not searched
    assert result.data["truncated"] and result.data["matches"] == 1
    assert result.data["engine"] == "python"


async def test_grep_answers_the_probes_slow_pattern_in_bounded_time(
    harness: Harness, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pattern of the report: Python's re took 2^n steps on a line of n a's. Whatever
    regex makes of it (it answers at once today), grep answers in bounded time."""
    monkeypatch.setattr(tools.files, "GREP_TIME_LIMIT", 0.5)
    harness.write({"a.txt": "a" * 26 + "\n"})
    with anyio.fail_after(3):
        result = await harness.call("grep", pattern="(a+)+b(?=x)")
    if result.is_error:
        assert result.data["code"] == "timeout", result.output
    else:
        assert result.output == "No matches for '(a+)+b(?=x)' in .."


async def test_glob_returns_regular_files_only_in_path_order(
    harness: Harness, tmp_path: Path
) -> None:
    """The walk takes each entry's kind from the directory listing: links (to files or
    directories, inside the workspace or out), FIFOs and VCS directories are never returned."""
    for rel in ["b/z.txt", "b/a.txt", "a.txt", "c/d/e.txt", ".git/HEAD", "B.txt"]:
        (harness.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (harness.root / rel).write_text("x\n")
    (harness.root / "link.txt").symlink_to(harness.root / "a.txt")
    (harness.root / "linkdir").symlink_to(harness.root / "c")
    (harness.root / "dangling.txt").symlink_to(tmp_path / "missing")
    if hasattr(os, "mkfifo"):
        os.mkfifo(harness.root / "pipe.txt")
    globbed = await harness.call("glob", pattern="**")
    assert globbed.data["paths"] == ["B.txt", "a.txt", "b/a.txt", "b/z.txt", "c/d/e.txt"]
    assert (await harness.call("glob", pattern="*.txt")).data["paths"] == ["B.txt", "a.txt"]


@pytest.mark.parametrize(
    ("pattern", "files", "expected"),
    [
        ("{a,{b,c}}.py", ["a.py", "b.py", "c.py", "d.py"], ["a.py", "b.py", "c.py"]),
        ("[]]x", ["]x", "x"], ["]x"]),
        ("[z-a]", ["a", "m", "z"], []),  # an empty range matches nothing, as in bash
        ("[a/b]*", ["a/bx", "b"], []),  # a class never matches '/' (literal, as in bash)
        ("[!a]*.py", ["a.py", "b.py"], ["b.py"]),
        (".*", [".env", "x"], [".env"]),
    ],
    ids=["nested-braces", "bracket-first", "empty-range", "slash-in-class", "negated", "dotfile"],
)
async def test_glob_edge_patterns(
    harness: Harness, pattern: str, files: list[str], expected: list[str]
) -> None:
    harness.write({name: "hello\n" for name in files})
    result = await harness.call("glob", pattern=pattern)
    assert not result.is_error, result.output
    assert result.data["paths"] == expected
    grep = await harness.call("grep", pattern="hello", glob=pattern)
    assert not grep.is_error, grep.output
    assert sorted({line.split(":")[0] for line in grep.output.splitlines() if ":" in line}) == (
        sorted({name for name in expected})
    )


async def test_a_glob_expanding_to_too_many_patterns_is_a_tool_error(harness: Harness) -> None:
    harness.write({"a.py": "hello\n"})
    bomb = "{a,b}" * 12  # 4096 alternatives
    for result in (
        await harness.call("glob", pattern=bomb),
        await harness.call("grep", pattern="hello", glob=bomb),
    ):
        assert result.is_error and result.data.get("code") != "internal", result.output
        assert "invalid glob pattern" in result.output


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read_file", {"path": "a\0b"}),
        ("write_file", {"path": "a\0b", "content": "x"}),
        ("edit_file", {"path": "a\0b", "old_string": "x", "new_string": "y"}),
        ("list_dir", {"path": "\0"}),
        ("glob", {"pattern": "*", "path": "src\0"}),
        ("grep", {"pattern": "x", "path": "a\0"}),
    ],
)
async def test_a_nul_byte_in_a_path_is_a_tool_error(
    harness: Harness, tool: str, args: dict[str, Any]
) -> None:
    result = await harness.box.call(tool, args)
    assert result.is_error and result.data["code"] == "invalid_path", result.output
    assert "NUL byte" in result.output


@pytest.mark.parametrize(
    ("tool", "args", "where"),
    [
        ("write_file", {"path": "a.txt", "content": "x\ud800y"}, "content"),
        ("write_file", {"path": "\udcff.txt", "content": "x"}, "path"),
        ("edit_file", {"path": "a.txt", "old_string": "x", "new_string": "\udfff"}, "new_string"),
        ("grep", {"pattern": "\ud800"}, "pattern"),
    ],
)
async def test_lone_surrogates_in_arguments_are_a_tool_error(
    harness: Harness, tool: str, args: dict[str, Any], where: str
) -> None:
    result = await harness.box.call(tool, args)
    assert result.is_error and result.data["code"] == "invalid_arguments", result.output
    assert f"{where} contains a lone UTF-16 surrogate" in result.output
    assert read_tree(harness.root) == {}


# ---------------------------------------------------------------------------------------------
# File-system errors in write_file and edit_file: tool errors that say what is wrong, never
# `internal` (with a traceback in the log).

WRITE_ARGS: dict[str, dict[str, Any]] = {
    "write_file": {"content": "y\n"},
    "edit_file": {"old_string": "x", "new_string": "y"},
}
DEEP = "/".join(["deep"] * 1000)  # 5,000 bytes: past PATH_MAX (4,096 on Linux)


@pytest.mark.parametrize("tool", list(WRITE_ARGS))
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("file/x", "file/x: file is not a directory"),
        ("file/sub/x", "file/sub/x: file is not a directory"),
        ("n" * 300, "name too long (a file name in it has 300 bytes"),
        (DEEP, "name too long (the whole path has"),
        ("loop", "loop: too many levels of symbolic links (loop is a symlink"),
        ("loop/x", "loop/x: too many levels of symbolic links (loop is a symlink"),
    ],
    ids=["under-a-file", "deeper-under-a-file", "long-name", "deep-path", "loop", "under-loop"],
)
async def test_a_path_no_file_can_have_is_a_tool_error(
    harness: Harness, caplog: pytest.LogCaptureFixture, tool: str, path: str, message: str
) -> None:
    harness.write({"file": "x\n"})
    (harness.root / "loop").symlink_to("loop2")
    (harness.root / "loop2").symlink_to("loop")
    before = read_tree(harness.root)
    with caplog.at_level(logging.ERROR, logger="agentd.tools"):
        result = await harness.box.call(tool, {"path": path, **WRITE_ARGS[tool]})
    assert result.is_error and result.data["code"] == "invalid_path", result.output
    assert message in result.output
    assert len(result.output) < 400  # a 5,000-byte path is shown cut in the middle
    assert caplog.records == []  # not "failed unexpectedly", with a traceback
    assert read_tree(harness.root) == before
    assert harness.events == []


def bypasses_file_modes() -> bool:
    """Whether this process reads and writes files whatever their mode: root, unless it has
    dropped CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    effective = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(effective, 16) & (1 << 1 | 1 << 2))


async def rerun_without_file_mode_bypass(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Run this one test again in a child pytest that is still root but without the
    capabilities that bypass file modes (setpriv drops them for the child alone)."""
    setpriv = shutil.which("setpriv")
    drop = [setpriv or "setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
    if setpriv is None or (await anyio.run_process([*drop, "true"], check=False)).returncode:
        pytest.skip("root ignores file modes, and setpriv cannot drop that here")
    root = Path(__file__).resolve().parents[2]
    command = [*drop, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += [f"--basetemp={tmp_path / 'unprivileged'}", request.node.nodeid]
    with anyio.fail_after(120):
        child = await anyio.run_process(command, cwd=root, check=False, stderr=subprocess.STDOUT)
    output = child.stdout.decode(errors="replace")
    assert child.returncode == 0 and "1 passed" in output, output


async def test_permission_denied_is_a_tool_error(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    if bypasses_file_modes():
        await rerun_without_file_mode_bypass(request, tmp_path)
        return
    harness.write({"locked.txt": "x\n", "ro/f.txt": "x\n"})
    (harness.root / "locked.txt").chmod(0)
    (harness.root / "ro").chmod(0o555)
    calls = [
        ("write_file", {"path": "locked.txt", **WRITE_ARGS["write_file"]}),
        ("edit_file", {"path": "locked.txt", **WRITE_ARGS["edit_file"]}),
        ("read_file", {"path": "locked.txt"}),
        ("write_file", {"path": "ro/f.txt", **WRITE_ARGS["write_file"]}),
        ("write_file", {"path": "ro/new.txt", **WRITE_ARGS["write_file"]}),
        ("edit_file", {"path": "ro/f.txt", **WRITE_ARGS["edit_file"]}),
    ]
    try:
        with caplog.at_level(logging.ERROR, logger="agentd.tools"):
            results = [await harness.box.call(tool, args) for tool, args in calls]
    finally:
        (harness.root / "ro").chmod(0o755)
        (harness.root / "locked.txt").chmod(0o644)
    for (tool, args), result in zip(calls, results, strict=True):
        assert result.is_error and result.data["code"] == "permission_denied", (tool, result)
        assert result.output.startswith(f"{args['path']}: permission denied"), result.output
    assert caplog.records == []
    assert harness.tree() == {"locked.txt": b"x\n", "ro/f.txt": b"x\n"}
    assert harness.events == []


@pytest.mark.parametrize("tool", list(WRITE_ARGS))
async def test_a_full_disk_is_still_disk_full(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    harness.write({"a.txt": "x\n"})
    fail_swaps(monkeypatch, lambda source, target: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    result = await harness.box.call(tool, {"path": "a.txt", **WRITE_ARGS[tool]})
    assert result.is_error and result.data["code"] == "disk_full", result.output
    assert result.output.startswith("a.txt: No space left on device: the disk is full.")
    assert harness.tree() == {"a.txt": b"x\n"}


LINES_FOR_PATTERNS = [
    "alpha beta",
    "a",
    "",
    "  indented tail  ",
    "x = 1  # end$",
    "beta\r",
    "tab\there",
    "ends with a",
]


@pytest.mark.parametrize(
    "pattern",
    [
        "beta",
        "^a$",
        "^$",
        "a$",
        "[^a]$",
        r"\s$",
        r"\s+\S",
        r"\bbeta\b",
        r"^\B",
        r"\r$",
        "a\nb",
        r"(?i)ALPHA",
        r"(?P<w>e)(?P=w)?",
        r"\Aa",
        r"a\Z",
        r"(?<!\s)a",
        r"(?<=\n)a",
        r"a(?!.)",
        r"(?-i:beta)",
    ],
)
def test_the_python_engine_finds_the_lines_a_line_by_line_search_finds(
    tmp_path: Path, pattern: str
) -> None:
    """grep_python rules files out with one search of the whole text where that cannot miss a
    line (tools.files._whole_text_pattern); the lines it reports are exactly those its
    engine finds line by line, for patterns whose meaning in a whole text differs."""
    files = {"f.txt": LINES_FOR_PATTERNS, "g.txt": ["nothing", "to see"]}
    for name, lines in files.items():
        (tmp_path / name).write_bytes("\n".join(lines).encode() + b"\n")
    expected = [
        (name, number)
        for name, lines in files.items()
        for number, line in enumerate(lines, 1)
        if regex.search(pattern, line)
    ]
    outcome = grep_python(tmp_path, None, regex.compile(pattern), None, 100)
    assert [(m.path, m.line) for m in outcome.matches] == expected
