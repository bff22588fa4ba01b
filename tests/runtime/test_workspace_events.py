"""What a run sees happen in its workspace by itself: files commands change (`file_edit`),
servers its processes start and stop (`dev_url`, `port_closed`). Real PTYs, real servers."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.loop import AgentLoop, LoopOutcome
from runtime.messages import Message
from runtime.providers.base import ModelSettings
from tests.fakes.scripted_provider import Gate, ScriptedProvider, call, text_turn, tool_turn
from tests.fresh_interpreter import json_printed
from tests.runtime.test_loop import RecordingEvents
from tools.base import Toolbox, ToolSettings

PY = shlex.quote(sys.executable)
SETTINGS = ModelSettings(model="scripted-1", max_tokens=256)
linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


def exec_call(call_id: str, cmd: str, **args: Any) -> Any:
    return call(call_id, "exec_command", {"cmd": cmd, "login": False, **args})


async def run_script(
    workspace: Path, *turns: Any, settings: ToolSettings | None = None
) -> tuple[RecordingEvents, LoopOutcome]:
    provider = ScriptedProvider([*turns, text_turn("done")])
    events = RecordingEvents()
    async with Toolbox(workspace, settings=settings) as box:
        loop = AgentLoop(provider, box, events, system=None, settings=SETTINGS, max_iterations=20)
        outcome = await loop.run([Message.user("go")])
    assert outcome.status == "completed", outcome.error
    return events, outcome


async def test_a_command_creating_files_is_reported_but_not_the_git_directory(
    workspace: Path,
) -> None:
    cmd = "mkdir -p src && echo x > src/a.txt && git init -q"
    events, outcome = await run_script(workspace, tool_turn(exec_call("c1", cmd)))
    edits = events.of("file_edit")
    assert [(e["path"], e["action"], e["callId"]) for e in edits] == [
        ("/src/a.txt", "create", "c1")
    ]
    assert "+x" in edits[0]["diff"]
    assert outcome.files == ["/src/a.txt"]
    # The edit is reported during its call: before the call's result.
    types = events.types
    assert types.index("file_edit") < types.index("tool_result")


async def test_modified_deleted_and_moved_files_each_get_their_action(workspace: Path) -> None:
    (workspace / "keep.txt").write_text("one\ntwo\n")
    (workspace / "old.txt").write_text("gone\n")
    (workspace / "from.txt").write_text("moving\n")
    cmd = "echo three >> keep.txt && rm old.txt && mv from.txt to.txt"
    events, outcome = await run_script(workspace, tool_turn(exec_call("c1", cmd)))
    by_path = {e["path"]: e for e in events.of("file_edit")}
    assert set(by_path) == {"/keep.txt", "/old.txt", "/to.txt"}
    assert by_path["/keep.txt"]["action"] == "modify"
    assert "+three" in by_path["/keep.txt"]["diff"] and "-two" not in by_path["/keep.txt"]["diff"]
    assert by_path["/old.txt"]["action"] == "delete"
    assert by_path["/to.txt"]["action"] == "move"
    assert by_path["/to.txt"]["movedFrom"] == "/from.txt"
    assert sorted(outcome.files) == ["/keep.txt", "/to.txt"]


async def test_a_binary_file_gets_no_diff_but_a_note(workspace: Path) -> None:
    cmd = f"{PY} -c \"open('blob.bin', 'wb').write(bytes(range(256)))\""
    events, _ = await run_script(workspace, tool_turn(exec_call("c1", cmd)))
    [edit] = events.of("file_edit")
    assert edit["path"] == "/blob.bin" and edit["diff"] == ""
    assert "binary" in edit["note"]


async def test_gitignored_and_default_skipped_paths_are_not_reported(workspace: Path) -> None:
    (workspace / ".gitignore").write_text("*.log\nbuild/\n")
    cmd = (
        "mkdir -p build node_modules/x .venv && touch .venv/pyvenv.cfg && "
        "echo a > app.log && echo b > build/out.js && echo c > node_modules/x/i.js && "
        "echo d > .venv/lib.py && echo e > kept.txt"
    )
    events, _ = await run_script(workspace, tool_turn(exec_call("c1", cmd)))
    assert [e["path"] for e in events.of("file_edit")] == ["/kept.txt"]


async def test_a_generator_writing_5000_files_yields_a_bounded_number_of_events(
    workspace: Path,
) -> None:
    script = (
        "import os\n"
        "for d in range(5):\n"
        "    os.makedirs(f'gen/d{d}', exist_ok=True)\n"
        "    for i in range(1000):\n"
        "        open(f'gen/d{d}/f{i}.txt', 'w').write(str(i))\n"
    )
    (workspace / "gen.py").write_text(script)
    events, outcome = await run_script(
        workspace, tool_turn(exec_call("c1", f"{PY} gen.py", yield_time_ms=30_000))
    )
    edits = events.of("file_edit")
    assert 1 <= len(edits) <= 100
    assert sum(e.get("count", 1) for e in edits) == 5000
    assert all(e["action"] == "create" for e in edits)
    assert len(outcome.files) == 5000  # the run's file list still names every one


async def test_edits_a_tool_reports_itself_are_not_reported_twice(workspace: Path) -> None:
    events, outcome = await run_script(
        workspace,
        tool_turn(call("c1", "write_file", {"path": "notes.md", "content": "hi\n"})),
    )
    assert len(events.of("file_edit")) == 1
    assert len(outcome.files) == 1


async def test_the_scan_can_be_turned_off(workspace: Path) -> None:
    events, _ = await run_script(
        workspace,
        tool_turn(exec_call("c1", "echo x > a.txt")),
        settings=ToolSettings(workspace_skip_dirs=None),
    )
    assert events.of("file_edit") == []


async def wait_for(events: RecordingEvents, type: str) -> None:
    """Until an event of `type` was emitted (the caller bounds the wait)."""
    while not events.of(type):
        await events.changed.wait()


@linux_only
async def test_a_server_is_announced_as_it_starts_and_its_port_closed_when_killed(
    workspace: Path,
) -> None:
    events = RecordingEvents()
    serving = Gate()
    stopped = Gate()
    serve = f"{PY} -m http.server 0 --bind 127.0.0.1"
    provider = ScriptedProvider(
        [
            tool_turn(exec_call("c1", serve, yield_time_ms=250)),
            [serving, *tool_turn(call("c2", "write_stdin", {"session_id": 1, "chars": "\x03"}))],
            [stopped, *text_turn("done")],
        ]
    )
    async with Toolbox(workspace, enabled=["exec_command", "write_stdin"]) as box:
        loop = AgentLoop(provider, box, events, system=None, settings=SETTINGS, max_iterations=10)
        async with anyio.create_task_group() as tg:
            outcome: list[LoopOutcome] = []

            async def drive() -> None:
                outcome.append(await loop.run([Message.user("serve")]))

            tg.start_soon(drive)
            with anyio.fail_after(60):
                await serving.wait_reached()
                await wait_for(events, "dev_url")
                serving.open()
                await stopped.wait_reached()
                await wait_for(events, "port_closed")
                stopped.open()
    [opened] = events.of("dev_url")
    [closed] = events.of("port_closed")
    assert opened["port"] == closed["port"] > 0
    assert opened["url"] == f"http://localhost:{opened['port']}/"
    assert opened["pid"] > 0 and opened["command"].startswith("python")
    assert closed["pid"] == opened["pid"]
    assert "get_dev_url" not in [t for t, p in events.events if t == "tool_call"]
    assert outcome[0].status == "completed"
    # The server is gone: its port no longer is the run's dev URL.
    assert outcome[0].dev_url is None


# In a fresh interpreter: the watch's modules are not imported yet, as in a fresh daemon
# whose warm-up has not reached them when its first run starts.
OPEN_A_WATCH = """
import asyncio, json, sys
from tests.import_spy import ImportSpy
from runtime.workspace_watch import WorkspaceWatch
from tools.base import Toolbox

spy = ImportSpy(lambda name: name in ("tools.port_watch", "tools.workspace_changes"))
sys.meta_path.insert(0, spy)

class Events:
    async def emit(self, type, **payload):
        pass

class Artifacts:
    def take_reported(self):
        return set()
    def note_file(self, path, action, moved_from):
        pass
    def note_port(self, opened, url):
        pass

async def main():
    async with Toolbox(sys.argv[1]) as box:
        await WorkspaceWatch.open(box, Events(), Artifacts())
    print(json.dumps([spy.on_loop, sorted(spy.off_loop)]))

asyncio.run(main())
"""


def test_a_watch_s_modules_are_imported_off_the_event_loop(tmp_path: Path) -> None:
    """`WorkspaceWatch.open` imports what the watch needs (~35 ms, pathspec's among them) in
    a worker thread, not on the event loop, when a run starts before the warm-up did."""
    on_loop, off_loop = json_printed("-c", OPEN_A_WATCH, str(tmp_path), timeout=60)
    assert on_loop == []
    assert off_loop == ["tools.port_watch", "tools.workspace_changes"]


async def test_a_file_another_runs_tool_writes_is_not_claimed_by_this_run(
    workspace: Path,
) -> None:
    """Two runs on one workspace: B's write_file lands while A's command runs. The file is
    B's edit (its own file_edit); A's scan after its command does not report it as A's."""
    gate = Gate()
    # A's command waits (bounded) for B's file.
    cmd = "for i in $(seq 600); do [ -e hello.txt ] && break; sleep 0.05; done"
    a_provider = ScriptedProvider([tool_turn(exec_call("a1", cmd)), text_turn("A done")])
    write = call("b1", "write_file", {"path": "hello.txt", "content": "hi\n"})
    b_provider = ScriptedProvider([tool_turn(write, gate=gate), text_turn("B done")])
    a_events, b_events = RecordingEvents(), RecordingEvents()
    outcomes: dict[str, LoopOutcome] = {}

    async def run(name: str, provider: ScriptedProvider, events: RecordingEvents) -> None:
        async with Toolbox(workspace) as box:
            loop = AgentLoop(
                provider, box, events, system=None, settings=SETTINGS, max_iterations=5
            )
            outcomes[name] = await loop.run([Message.user("go")])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run, "A", a_provider, a_events)
            tasks.start_soon(run, "B", b_provider, b_events)
            await gate.reached.wait()
            while "tool_call" not in a_events.types:  # A's command is under way
                await anyio.sleep(0.02)
            gate.open()

    assert outcomes["A"].status == outcomes["B"].status == "completed"
    assert [e["path"] for e in b_events.of("file_edit")] == ["/hello.txt"]
    assert a_events.of("file_edit") == [] and outcomes["A"].files == []
    assert outcomes["B"].files == ["/hello.txt"]
