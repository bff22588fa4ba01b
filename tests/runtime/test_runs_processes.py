"""Runs whose tools start real processes (exec_command on real PTYs): what a pause, a cancel,
a timeout and a run's end do to them."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import anyio
import pytest

from runtime.agents import AgentRecord, AgentSpec, CustomToolSpec
from runtime.messages import Message
from runtime.providers.base import ModelError
from runtime.runs import RunManager
from runtime.runs.run import Run, RunConfig
from runtime.runs.toolbox_pool import process_owner_for
from runtime.store import Store
from tests.fakes.scripted_provider import (
    Gate,
    ScriptedFactory,
    Step,
    call,
    text_turn,
    tool_turn,
)
from tests.runtime.crash_daemon import crash_mid_run
from tests.runtime.processes import alive, wait_dead
from tests.tools.leave_processes import ESCAPES
from tools.base import Tool, ToolArgs, ToolContext, ToolResult
from tools.proctable import kill_tagged


async def shell_agent(store: Store) -> AgentRecord:
    record, _ = await store.upsert_agent(
        AgentSpec(slug="shell", model="scripted-1", tools=["exec_command", "write_stdin"])
    )
    return record


async def output_until(manager: RunManager, run_id: str, pattern: str) -> re.Match[str]:
    """Follow the run's live tool output until `pattern` matches it."""
    seen = ""
    with anyio.fail_after(15):
        async for event in manager.subscribe(run_id):
            if event.type in ("tool_output", "tool_result"):
                seen += event.payload.get("chunk") or event.payload.get("output") or ""
                match = re.search(pattern, seen)
                if match:
                    return match
    raise AssertionError(f"the run ended before its output matched {pattern!r}: {seen!r}")


LONG_COMMAND = "echo pid=$$; sleep 300 & echo child=$!; wait"
# SIG_IGN is inherited: neither the shell nor its child dies of SIGTERM/SIGHUP.
STUBBORN_COMMAND = "trap '' TERM HUP; " + LONG_COMMAND


@pytest.mark.parametrize("how", ["cancel", "timeout", "cancel-stubborn"])
async def test_a_run_stopped_during_a_long_command_leaves_no_processes(
    manager: RunManager, store: Store, factory: ScriptedFactory, how: str
) -> None:
    agent = await shell_agent(store)
    cmd = STUBBORN_COMMAND if how == "cancel-stubborn" else LONG_COMMAND
    # No login shell: its profile alone can take most of the 1 s timeout on a loaded machine.
    args = {"cmd": cmd, "login": False, "yield_time_ms": 30000}
    factory.add(tool_turn(call("c1", "exec_command", args)))
    config = RunConfig(timeout=1.0) if how == "timeout" else None
    run = await manager.start(agent, prompt="run it", config=config)
    match = await output_until(manager, run.run_id, r"pid=(\d+)\s+child=(\d+)")
    pids = [int(match.group(1)), int(match.group(2))]
    assert all(alive(pid) for pid in pids)
    if how.startswith("cancel"):
        record = await manager.cancel(run.run_id)
        assert record.status == "cancelled"
    else:
        record = await manager.wait(run.run_id)
        assert record.status == "failed" and record.error is not None
        assert record.error["code"] == "timeout"
    await wait_dead(*pids)
    assert manager.active_sessions() == 0


async def test_pause_during_a_long_command_lets_it_finish_then_stops(
    manager: RunManager, store: Store, factory: ScriptedFactory, workspace: Path
) -> None:
    agent = await shell_agent(store)
    cmd = "while [ ! -f go ]; do sleep 0.02; done; echo finished"
    provider = factory.add(
        tool_turn(call("c1", "exec_command", {"cmd": cmd, "yield_time_ms": 30000})),
        text_turn("done"),
    )
    run = await manager.start(agent, prompt="wait for go")
    async for event in manager.subscribe(run.run_id):
        if event.type == "tool_call":
            break
    await manager.pause(run.run_id)
    (workspace / "go").touch()  # the command under way is not interrupted by the pause
    with anyio.fail_after(15):
        await run.controls.wait_parked()
    assert len(provider.calls) == 1
    result = [e for e in run.events.events if e.type == "tool_result"]
    assert len(result) == 1 and "finished" in result[0].payload["output"]
    await manager.resume(run.run_id)
    assert (await manager.wait(run.run_id)).status == "completed"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def http_status(port: int, path: str) -> int:
    """GET http://127.0.0.1:port/path; retried (bounded) while the server is not listening yet."""
    import aiohttp

    with anyio.fail_after(15):
        while True:
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        return response.status
            except aiohttp.ClientConnectionError:
                await anyio.sleep(0.02)


async def read_pid(path: Path) -> int:
    """The pid a command wrote to `path` (it may not have got there yet when its run ends)."""
    with anyio.fail_after(15):
        while not path.exists() or not path.read_text().strip():
            await anyio.sleep(0.01)
    return int(path.read_text())


def session_id_in(messages: list) -> int:  # type: ignore[type-arg]
    """The session id exec_command reported earlier in the conversation."""
    outputs = [r.output for m in messages for r in m.tool_results if r.name == "exec_command"]
    match = re.search(r"Process running with session ID (\d+)", outputs[-1])
    assert match, outputs[-1]
    return int(match.group(1))


def poll_session(messages: list) -> list:  # type: ignore[type-arg]
    """A model turn that polls the session an earlier run of the thread started."""
    return tool_turn(call("p1", "write_stdin", {"session_id": session_id_in(messages)}))


def tool_results(events: list, tool: str) -> list[dict]:  # type: ignore[type-arg]
    return [e.payload for e in events if e.type == "tool_result" and e.payload["tool"] == tool]


SLEEPER = {"cmd": "echo $$ > sleeper.pid; exec sleep 300", "yield_time_ms": 250}


async def start_sleeper(
    manager: RunManager, factory: ScriptedFactory, agent: AgentRecord, workspace: Path
) -> tuple[Run, int]:
    """A completed run that left `sleep` running in a session, and the sleeper's pid."""
    (workspace / "sleeper.pid").unlink(missing_ok=True)
    factory.add(tool_turn(call("s1", "exec_command", SLEEPER)), text_turn("sleeping"))
    run = await manager.start(agent, prompt="start a sleeper")
    assert (await manager.wait(run.run_id)).status == "completed"
    pid = await read_pid(workspace / "sleeper.pid")
    assert alive(pid)
    return run, pid


async def test_the_threads_next_run_takes_over_its_running_dev_server(
    manager: RunManager, store: Store, factory: ScriptedFactory, workspace: Path
) -> None:
    agent = await shell_agent(store)
    port = free_port()
    serve = f"echo $$ > server.pid; exec python3 -m http.server {port} --bind 127.0.0.1"
    factory.add(
        tool_turn(call("c1", "exec_command", {"cmd": serve, "yield_time_ms": 250})),
        text_turn("the server is up"),
    )
    first = await manager.start(agent, prompt="start the dev server")
    assert (await manager.wait(first.run_id)).status == "completed"
    pid = await read_pid(workspace / "server.pid")
    # Between the runs the server answers; it logs the request to its terminal.
    assert await http_status(port, "/between-runs") == 404
    assert manager.active_sessions() == 1

    second_provider = factory.add(poll_session, text_turn("still serving"))
    second = await manager.start(agent, prompt="now add a delete button", thread_id=first.thread_id)
    assert (await manager.wait(second.run_id)).status == "completed"
    [polled] = tool_results(await run_events(manager, second.run_id), "write_stdin")
    # The same session, under the id run 1 was given, with what it printed between runs.
    assert not polled["isError"], polled["output"]
    session_id = session_id_in(second_provider.calls[0].messages)
    assert f"Process running with session ID {session_id}" in polled["output"]
    assert "GET /between-runs" in polled["output"]
    # After the run the server still answers: the same process, not a restart.
    assert await http_status(port, "/after-runs") == 404
    assert alive(pid) and manager.active_sessions() == 1


@pytest.mark.parametrize("how", ["cancel", "fail", "interrupt"])
async def test_a_run_that_took_over_processes_and_does_not_complete_kills_them(
    manager: RunManager, store: Store, factory: ScriptedFactory, workspace: Path, how: str
) -> None:
    agent = await shell_agent(store)
    first, pid = await start_sleeper(manager, factory, agent, workspace)
    thread_id = first.thread_id
    gate = Gate()
    ending: Step = ModelError("overloaded", "the model is down") if how == "fail" else [gate]
    factory.add(poll_session, ending)
    run = await manager.start(agent, prompt="carry on", thread_id=thread_id)
    if how != "fail":
        with anyio.fail_after(15):
            await gate.wait_reached()
        assert alive(pid), "taken over, not restarted"
    if how == "cancel":
        assert (await manager.cancel(run.run_id)).status == "cancelled"
    elif how == "interrupt":
        await manager.shutdown(grace=0)
        assert (await manager.get(run.run_id)).status == "interrupted"
    else:
        assert (await manager.wait(run.run_id)).status == "failed"
    [polled] = tool_results(await run_events(manager, run.run_id), "write_stdin")
    assert not polled["isError"], polled["output"]
    await wait_dead(pid)
    assert manager.active_sessions() == 0


async def test_other_threads_and_forks_never_see_a_threads_sessions(
    manager: RunManager, store: Store, factory: ScriptedFactory, workspace: Path
) -> None:
    agent = await shell_agent(store)
    source, pid = await start_sleeper(manager, factory, agent, workspace)
    thread_id = source.thread_id

    factory.add(tool_turn(call("x1", "write_stdin", {"session_id": 1})), text_turn("no"))
    other = await manager.start(agent, prompt="poll session 1")
    factory.add(poll_session, text_turn("no"))
    conversation = await store.run_messages(source.run_id)
    fork = await manager.fork(source.run_id, len(conversation), prompt="poll it")
    for run in (other, fork):
        assert run.thread_id != thread_id
        assert (await manager.wait(run.run_id)).status == "completed"
        [polled] = tool_results(await run_events(manager, run.run_id), "write_stdin")
        assert polled["isError"] and "Unknown session_id 1" in polled["output"]
    assert alive(pid), "the thread's processes are untouched"

    factory.add(poll_session, text_turn("found"))
    own = await manager.start(agent, prompt="poll it", thread_id=thread_id)
    assert (await manager.wait(own.run_id)).status == "completed"
    [polled] = tool_results(await run_events(manager, own.run_id), "write_stdin")
    assert not polled["isError"], polled["output"]


@pytest.mark.parametrize(
    ("change", "handed_over"),
    [("tools", False), ("env", False), ("systemPrompt", True)],
)
async def test_a_new_agent_version_gets_the_threads_processes_only_if_tools_and_env_match(
    manager: RunManager,
    store: Store,
    factory: ScriptedFactory,
    workspace: Path,
    change: str,
    handed_over: bool,
) -> None:
    agent = await shell_agent(store)
    first, pid = await start_sleeper(manager, factory, agent, workspace)
    thread_id = first.thread_id
    changed = {
        "tools": {"tools": ["exec_command", "write_stdin", "read_file"]},
        "env": {"env": {"MODE": "dev"}},
        "systemPrompt": {"system_prompt": "Be brief."},
    }[change]
    updated, _ = await store.upsert_agent(agent.spec.model_copy(update=changed))
    assert updated.version == agent.version + 1

    factory.add(poll_session, text_turn("next"))
    run = await manager.start(updated, prompt="carry on", thread_id=thread_id)
    assert (await manager.wait(run.run_id)).status == "completed"
    [polled] = tool_results(await run_events(manager, run.run_id), "write_stdin")
    if handed_over:
        assert not polled["isError"], polled["output"]
        assert alive(pid)
    else:
        # A fresh toolbox: the old one was closed and its processes killed.
        assert polled["isError"] and "Unknown session_id" in polled["output"]
        await wait_dead(pid)
        assert manager.active_sessions() == 0


class _WhichRunArgs(ToolArgs):
    pass


class _WhichRun(Tool):
    """A custom tool that reports the run its toolbox says the call belongs to."""

    name = "which_run"
    description = "which run is this"
    Args = _WhichRunArgs

    def __init__(self, spec: CustomToolSpec) -> None:
        assert spec.name == self.name

    async def run(self, args: _WhichRunArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(output=f"run={ctx.run_id}")


async def test_a_handed_over_toolbox_tells_its_tools_the_new_run(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    which = CustomToolSpec(name="which_run", invoke_url="https://tools.example/which")
    record, _ = await store.upsert_agent(
        AgentSpec(slug="shell", model="scripted-1", tools=["exec_command", "write_stdin", which])
    )
    async with RunManager(
        store, workspace, provider_factory=factory, env={}, custom_tool_factory=_WhichRun
    ) as manager:
        first, pid = await start_sleeper(manager, factory, record, workspace)
        factory.add(poll_session, tool_turn(call("w1", "which_run")), text_turn("that is the one"))
        second = await manager.start(record, prompt="which run?", thread_id=first.thread_id)
        assert (await manager.wait(second.run_id)).status == "completed"
        events = await run_events(manager, second.run_id)
        [polled] = tool_results(events, "write_stdin")
        assert not polled["isError"], polled["output"]  # the box was handed over
        [reported] = tool_results(events, "which_run")
        assert reported["output"] == f"run={second.run_id}"
    await wait_dead(pid)


async def test_kept_toolboxes_are_bounded_least_recently_used_first(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await shell_agent(store)
    async with RunManager(
        store, workspace, provider_factory=factory, env={}, max_kept_toolboxes=2
    ) as manager:
        run_a, pid_a = await start_sleeper(manager, factory, agent, workspace)
        _, pid_b = await start_sleeper(manager, factory, agent, workspace)
        # Thread A runs again: its toolbox becomes the most recently used.
        factory.add(text_turn("touch a"))
        again = await manager.start(agent, prompt="again", thread_id=run_a.thread_id)
        assert (await manager.wait(again.run_id)).status == "completed"
        _, pid_c = await start_sleeper(manager, factory, agent, workspace)
        await wait_dead(pid_b)
        assert alive(pid_a) and alive(pid_c)
        assert manager.active_sessions() == 2
    await wait_dead(pid_a, pid_c)


async def test_shutdown_kills_what_completed_runs_left_running(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await shell_agent(store)
    # No login shell: its profile can take longer than the yield on a loaded machine.
    server = {"cmd": "echo pid=$$; exec sleep 300", "login": False, "yield_time_ms": 2000}
    factory.add(tool_turn(call("c1", "exec_command", server)), text_turn("up"))
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        run = await manager.start(agent, prompt="serve")
        await manager.wait(run.run_id)
        output = next(
            e.payload["output"]
            for e in await run_events(manager, run.run_id)
            if e.type == "tool_result"
        )
        pid = int(re.search(r"pid=(\d+)", output).group(1))  # type: ignore[union-attr]
        assert alive(pid)
    await wait_dead(pid)


async def test_secret_env_values_never_leave_through_command_output(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    secret = "tok-" + os.urandom(8).hex()
    record, _ = await store.upsert_agent(
        AgentSpec(
            slug="shell",
            model="scripted-1",
            tools=["exec_command"],
            env={"DEPLOY_TOKEN": secret},
            secrets=["DEPLOY_TOKEN"],
        )
    )
    # printf splits the value over two writes, so it may arrive in two chunks.
    cmd = 'printf "%s" "${DEPLOY_TOKEN:0:6}"; sleep 0.05; printf "%s\\n" "${DEPLOY_TOKEN:6}"'
    factory.add(tool_turn(call("c1", "exec_command", {"cmd": cmd})), text_turn("ok"))
    run = await manager.start(record, prompt="print it")
    await manager.wait(run.run_id)
    events = await run_events(manager, run.run_id)
    wire = "".join(e.to_json() for e in events)
    assert secret not in wire and "[REDACTED]" in wire
    stored = await store.run_messages(run.run_id)
    assert secret not in "".join(m.model_dump_json() for m in stored)


async def run_events(manager: RunManager, run_id: str) -> list:  # type: ignore[type-arg]
    with anyio.fail_after(10):
        return [event async for event in manager.subscribe(run_id)]


def merged_types(events: list) -> list[str]:  # type: ignore[type-arg]
    """Event types with consecutive deltas and output chunks merged (they may be split)."""
    out: list[str] = []
    for event in events:
        if event.type in ("text", "thinking", "tool_output") and out and out[-1] == event.type:
            continue
        out.append(event.type)
    return out


async def test_a_run_with_real_tools_emits_the_exact_sequence_and_its_dev_url_keeps_working(
    manager: RunManager, store: Store, factory: ScriptedFactory, workspace: Path
) -> None:
    import aiohttp

    record, _ = await store.upsert_agent(
        AgentSpec(
            slug="builder",
            model="scripted-1",
            tools=["write_file", "exec_command", "get_dev_url"],
        )
    )
    serve = "python3 -m http.server 0 --bind 127.0.0.1"

    def ask_for_the_url(messages: list) -> list:  # type: ignore[type-arg]
        output = messages[-1].tool_results[0].output
        port = int(re.search(r"port (\d+)", output).group(1))  # type: ignore[union-attr]
        return tool_turn(call("c3", "get_dev_url", {"port": port, "path": "/index.html"}))

    factory.add(
        tool_turn(
            call("c1", "write_file", {"path": "index.html", "content": "<h1>hi</h1>\n"}),
            text="Writing the page.",
        ),
        tool_turn(
            call("c2", "exec_command", {"cmd": serve, "login": False, "yield_time_ms": 1500})
        ),
        ask_for_the_url,
        text_turn("Your page is up."),
    )
    run = await manager.start(record, prompt="make a page and serve it")
    finished = await manager.wait(run.run_id)
    assert finished.status == "completed", finished.error
    events = await run_events(manager, run.run_id)
    # The port watcher announces the server by itself (its dev_url names the process), at
    # a moment that depends on the machine's speed: it is checked apart from the sequence.
    watched = [e for e in events if e.type == "dev_url" and "pid" in e.payload]
    events = [e for e in events if e not in watched]

    assert merged_types(events) == [
        "run_started",
        "text",
        "usage",
        "tool_call",
        "file_edit",
        "tool_result",
        "usage",
        "tool_call",
        "tool_output",
        "tool_result",
        "usage",
        "tool_call",
        "dev_url",
        "tool_result",
        "text",
        "usage",
        "complete",
    ]
    complete = events[-1].payload
    assert complete["files"] == ["/index.html"] and complete["iterations"] == 4
    assert complete["output"] == "Your page is up."
    assert complete["devUrl"] == next(e.payload["url"] for e in events if e.type == "dev_url")
    assert complete["devUrl"].endswith("/index.html")
    [seen] = watched
    assert seen.payload["port"] == next(e.payload["port"] for e in events if e.type == "dev_url")
    assert seen.payload["command"].startswith("python") and seen.payload["pid"] > 0
    # The server the run started still answers after `complete`.
    async with aiohttp.ClientSession() as http:
        port = next(e.payload["port"] for e in events if e.type == "dev_url")
        async with http.get(f"http://127.0.0.1:{port}/index.html") as response:
            assert response.status == 200 and "<h1>hi</h1>" in await response.text()


async def test_input_during_a_long_command_reaches_the_model_after_its_result(
    manager: RunManager, store: Store, factory: ScriptedFactory, workspace: Path
) -> None:
    agent = await shell_agent(store)
    cmd = "while [ ! -f go ]; do sleep 0.02; done; echo built"
    provider = factory.add(
        tool_turn(call("c1", "exec_command", {"cmd": cmd, "yield_time_ms": 30000})),
        lambda messages: text_turn(f"ack: {messages[-1].text}"),
    )
    run = await manager.start(agent, prompt="build")
    async for event in manager.subscribe(run.run_id):
        if event.type == "tool_call":
            break
    await manager.send_input(run.run_id, "then deploy")
    (workspace / "go").touch()
    record = await manager.wait(run.run_id)
    assert record.result == "ack: then deploy"
    roles = [m.role for m in provider.calls[1].messages]
    assert roles == ["user", "assistant", "tool", "user"]
    assert "built" in provider.calls[1].messages[2].tool_results[0].output


async def test_a_restarted_manager_kills_what_a_killed_one_left_and_the_thread_keeps_its_turns(
    tmp_path: Path, workspace: Path, factory: ScriptedFactory
) -> None:
    """kill -9 mid-run, after the model's first turn started processes that detached from
    their commands (nohup, setsid, double forks ignoring SIGTERM/SIGHUP): the next manager on
    the state dir kills them before it takes runs, and the thread keeps the completed turn."""
    state = tmp_path / "crash-state"
    started = await crash_mid_run(state, workspace, "escapes", timeout=60)
    pids = list(started["pids"].values())
    try:
        assert len(pids) == len(ESCAPES) and all(alive(pid) for pid in pids)
        store = await Store.open(state)
        try:
            async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
                assert not [pid for pid in pids if alive(pid)]  # gone before it took runs
                assert (await manager.get(started["runId"])).status == "interrupted"
                kept = await store.thread_messages(started["threadId"])
                assert [m.role for m in kept] == ["user", "assistant", "tool"]
                assert len(kept[1].tool_calls) == len(kept[2].tool_results) == len(ESCAPES)
                assert not any(result.is_error for result in kept[2].tool_results)
                follow_up = factory.add(text_turn("picking up"))
                run = await manager.start(
                    "crashy", prompt="continue", thread_id=started["threadId"]
                )
                assert (await manager.wait(run.run_id)).status == "completed"
                assert follow_up.calls[0].messages == [*kept, Message.user("continue")]
        finally:
            await store.close()
    finally:
        owner = process_owner_for(state) + "/"
        kill_tagged(lambda tag: tag.startswith(owner))
