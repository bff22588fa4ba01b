"""The Toolbox contract: validation errors and confinement come back as tool results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.base import Tool, ToolArgs, Toolbox, ToolContext, ToolResult, UnknownToolError
from tools.workspace import PathOutsideWorkspace, Workspace


class EchoArgs(ToolArgs):
    text: str
    times: int = 1


class Echo(Tool):
    name = "echo_test"
    description = "Echo text back."
    Args = EchoArgs
    read_only = True

    async def run(self, args: EchoArgs, ctx: ToolContext) -> ToolResult:
        await ctx.emit("tool_output", chunk=args.text)
        return ToolResult(output=args.text * args.times, data={"times": args.times})


async def test_call_validates_arguments(workspace: Path) -> None:
    events: list[dict] = []
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()], on_event=events.append) as box:
        assert [s["name"] for s in box.specs()] == ["echo_test"]
        assert box.specs()[0]["input_schema"]["required"] == ["text"]

        ok = await box.call("echo_test", {"text": "ab", "times": 2}, call_id="c1")
        assert (ok.output, ok.is_error, ok.data["times"]) == ("abab", False, 2)
        assert events == [{"type": "tool_output", "chunk": "ab", "callId": "c1"}]

        missing = await box.call("echo_test", {})
        assert missing.is_error and "missing required field 'text'" in missing.output
        assert "text (string, required)" in missing.output

        extra = await box.call("echo_test", {"text": "x", "colour": "red"})
        assert extra.is_error and "unexpected field 'colour'" in extra.output

        wrong = await box.call("echo_test", {"text": "x", "times": "many"})
        assert wrong.is_error and "times" in wrong.output

        not_object = await box.call("echo_test", ["x"])  # type: ignore[arg-type]
        assert not_object.is_error and "JSON object" in not_object.output

        unknown = await box.call("nope", {})
        assert unknown.is_error and "Unknown tool 'nope'" in unknown.output


def test_unknown_enabled_tool_is_refused(workspace: Path) -> None:
    with pytest.raises(UnknownToolError, match="no_such_tool"):
        Toolbox(workspace, enabled=["no_such_tool"])


def test_workspace_confinement(tmp_path: Path, workspace: Path) -> None:
    ws = Workspace(workspace)
    (workspace / "a").mkdir()
    assert ws.resolve("a/new.txt") == Path(os.path.realpath(workspace)) / "a" / "new.txt"
    assert ws.resolve(str(workspace / "a")) == Path(os.path.realpath(workspace / "a"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    for bad in ("../outside", "/etc/passwd", "link/file.txt", "a/../../outside"):
        with pytest.raises(PathOutsideWorkspace):
            ws.resolve(bad)


def test_workspace_open_checks_the_file_it_opened(tmp_path: Path, workspace: Path) -> None:
    """`Workspace.open` gives the descriptor and the real path `resolve` would give, and
    refuses (without leaking the descriptor) what `resolve` refuses."""
    ws = Workspace(workspace)
    (workspace / "a").mkdir()
    (workspace / "a" / "f.txt").write_text("inside\n")
    (workspace / "alias").symlink_to(workspace / "a")
    (workspace / "f-link.txt").symlink_to(workspace / "a" / "f.txt")
    for spelling in (
        "a/f.txt",
        "alias/f.txt",
        "f-link.txt",
        "a/../a/f.txt",
        str(workspace / "a/f.txt"),
    ):
        fd, real = ws.open(spelling, os.O_RDONLY)
        try:
            assert real == ws.resolve(spelling) == Path(os.path.realpath(workspace / "a/f.txt"))
            assert os.read(fd, 100) == b"inside\n"
        finally:
            os.close(fd)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (workspace / "link").symlink_to(outside)
    (workspace / "secret-link.txt").symlink_to(outside / "secret.txt")
    open_fds = set(os.listdir("/proc/self/fd"))
    for bad in ("link/secret.txt", "secret-link.txt", "../outside/secret.txt", "../missing.txt"):
        with pytest.raises(PathOutsideWorkspace, match="outside the workspace"):
            ws.open(bad, os.O_RDONLY)
    assert set(os.listdir("/proc/self/fd")) == open_fds
    with pytest.raises(FileNotFoundError):
        ws.open("a/missing.txt", os.O_RDONLY)
