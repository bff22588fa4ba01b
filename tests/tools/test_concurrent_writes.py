"""The writing tools (edit_file, write_file, apply_patch) called at once on one workspace, and
a file changed by something else while a tool works on it: every change lands or the call
says it did not, never a success whose change is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import tools.textfile
from tests.tools.harness import envelope, hidden_leftovers, open_harness
from tools.base import Toolbox, ToolResult
from tools.spares import SparePool
from tools.textfile import FileWrite

# Big enough that reading, editing and writing it takes a while, so two calls started
# together overlap (without the workspace's write lock each lost a change every time).
BODY = "".join(f"line {i}\n" for i in range(200_000))
ROUNDS = 4


async def both(
    first: tuple[Toolbox, str, dict[str, object]], second: tuple[Toolbox, str, dict[str, object]]
) -> list[ToolResult]:
    """Two tool calls started together, each through its own toolbox."""
    results: list[ToolResult] = []

    async def call(box: Toolbox, name: str, args: dict[str, object]) -> None:
        results.append(await box.call(name, args))

    async with anyio.create_task_group() as group:
        group.start_soon(call, *first)
        group.start_soon(call, *second)
    return results


async def test_two_edits_of_one_file_from_two_toolboxes_both_land(workspace: Path) -> None:
    """Two runs on one workspace (a toolbox each) edit the same file at the same moment."""
    target = workspace / "f.txt"
    async with Toolbox(workspace) as one, Toolbox(workspace) as two:
        for _ in range(ROUNDS):
            target.write_text("ALPHA\n" + BODY + "OMEGA\n")
            results = await both(
                (one, "edit_file", {"path": "f.txt", "old_string": "ALPHA", "new_string": "a!"}),
                (two, "edit_file", {"path": "f.txt", "old_string": "OMEGA", "new_string": "o!"}),
            )
            assert not any(r.is_error for r in results), [r.output for r in results]
            assert target.read_text() == "a!\n" + BODY + "o!\n"


async def test_apply_patch_and_edit_file_at_once_both_land(workspace: Path) -> None:
    target = workspace / "f.txt"
    patch = envelope("*** Update File: f.txt", "@@", "-ALPHA", "+patched", " line 0")
    async with Toolbox(workspace) as one, Toolbox(workspace) as two:
        for _ in range(ROUNDS):
            target.write_text("ALPHA\n" + BODY + "OMEGA\n")
            results = await both(
                (one, "apply_patch", {"input": patch}),
                (two, "edit_file", {"path": "f.txt", "old_string": "OMEGA", "new_string": "o!"}),
            )
            assert not any(r.is_error for r in results), [r.output for r in results]
            assert target.read_text() == "patched\n" + BODY + "o!\n"


async def test_write_file_and_edit_file_at_once_land_in_one_order_or_the_other(
    workspace: Path,
) -> None:
    """write_file replaces the file while edit_file works on it: either the edit comes
    first and the new content replaces its result, or it edits the new content. (Without
    the lock the edit, slower, often wrote its result over the new content, both calls
    reporting success; the race is not certain in one round, hence several.)"""
    target = workspace / "f.txt"
    edit = {"path": "f.txt", "old_string": "line", "new_string": "LINE", "replace_all": True}
    async with Toolbox(workspace) as one, Toolbox(workspace) as two:
        for _ in range(5 * ROUNDS):
            target.write_text(BODY)
            results = await both(
                (one, "edit_file", edit),
                (two, "write_file", {"path": "f.txt", "content": "written: line 1\n"}),
            )
            assert not any(r.is_error for r in results), [r.output for r in results]
            assert target.read_text() in ("written: line 1\n", "written: LINE 1\n")


def write_meanwhile(
    monkeypatch: pytest.MonkeyPatch, path: Path, change: Callable[[Path], object]
) -> list[str]:
    """Make `change(path)` happen to the file, as another program's write would, after the
    tool has read it and while its commit writes the new contents (before any swap). Returns
    the list of the commit's temporary files, which grows as they are written."""
    written: list[str] = []
    real_write_temp = tools.textfile._write_temp

    def write_temp(write: FileWrite, tag: str, spares: SparePool | None = None) -> str:
        if not written:
            change(path)
        temp = real_write_temp(write, tag, spares)
        written.append(temp)
        return temp

    monkeypatch.setattr(tools.textfile, "_write_temp", write_temp)
    return written


def append_line(path: Path) -> None:
    with path.open("a") as handle:
        handle.write("written by another program\n")


async def test_edit_file_refuses_a_file_changed_after_it_was_read(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """A command (or an editor) writes the file while edit_file works on it: the edit is
    not committed over that write; the model is told to read the file again."""
    target = workspace / "f.txt"
    target.write_text("one\ntwo\n")
    written = write_meanwhile(monkeypatch, target, append_line)
    async with open_harness(workspace) as h:
        result = await h.call("edit_file", path="f.txt", old_string="two", new_string="TWO")
        assert written, "the commit never started"
        assert result.is_error and result.data["code"] == "file_changed"
        assert "f.txt changed on disk" in result.output and "Read the file again" in result.output
        assert target.read_text() == "one\ntwo\nwritten by another program\n"
        assert h.events == [] and hidden_leftovers(workspace) == []
        monkeypatch.undo()
        again = await h.call("edit_file", path="f.txt", old_string="two", new_string="TWO")
        assert not again.is_error, again.output
        assert target.read_text() == "one\nTWO\nwritten by another program\n"


async def test_edit_file_refuses_a_file_created_after_it_found_none(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    target = workspace / "new.txt"
    write_meanwhile(monkeypatch, target, lambda path: path.write_text("theirs\n"))
    async with open_harness(workspace) as h:
        result = await h.call("edit_file", path="new.txt", old_string="", new_string="mine\n")
    assert result.is_error and result.data["code"] == "file_changed"
    assert target.read_text() == "theirs\n"


@pytest.mark.parametrize("changed", ["b.txt", "gone.txt", "moved.txt"])
async def test_apply_patch_refuses_when_one_of_its_files_changed_after_it_was_read(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, swap: str, changed: str
) -> None:
    """An updated, a deleted or a moved file changed meanwhile: the files already swapped
    are put back, by exchange and by replace (`swap`)."""
    (workspace / "a.txt").write_text("a\n")
    (workspace / "b.txt").write_text("b\n")
    (workspace / "gone.txt").write_text("bye\n")
    (workspace / "moved.txt").write_text("m\n")
    written = write_meanwhile(monkeypatch, workspace / changed, append_line)
    patch = envelope(
        "*** Update File: a.txt",
        "@@",
        "-a",
        "+A",
        "*** Update File: b.txt",
        "@@",
        "-b",
        "+B",
        "*** Delete File: gone.txt",
        "*** Update File: moved.txt",
        "*** Move to: there.txt",
        "@@",
        "-m",
        "+M",
        "*** Add File: new.txt",
        "+new",
    )
    async with open_harness(workspace) as h:
        result = await h.call("apply_patch", input=patch)
        assert len(written) >= 4  # every new content was written before any swap
        assert result.is_error and result.data["code"] == "file_changed"
        assert f"{changed} changed on disk" in result.output
        assert "no file was changed" in result.output
        before = {"a.txt": b"a\n", "b.txt": b"b\n", "gone.txt": b"bye\n", "moved.txt": b"m\n"}
        assert h.tree() == {**before, changed: before[changed] + b"written by another program\n"}
        assert h.events == [] and hidden_leftovers(workspace) == []
