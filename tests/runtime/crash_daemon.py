"""A RunManager in its own process whose model stream never finishes, for the SIGKILL test.

`python -m tests.runtime.crash_daemon STATE_DIR WORKSPACE [escapes|turns]` opens the store,
starts one run whose scripted model streams some text and then blocks forever, waits until
that text is stored, prints `{"runId": …, "threadId": …}` on one line and waits to be killed.

With `escapes`, the model's first turn runs every command of tests/tools/leave_processes.py's
`ESCAPES` (processes that outlive their command: nohup, setsid, double forks ignoring
SIGTERM/SIGHUP) and the printed line adds their `pids` (read from the pid files they write).

With `turns`, the thread first gets a whole run (`first` answered `one`), and the run that
blocks continues it after `TOOL_TURNS` turns that each call a tool the agent does not have
(so each leaves an assistant and a tool message); the printed line adds `firstRunId`.

Tests drive it with `crash_mid_run`: start it, read that line, SIGKILL it.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

from runtime.agents import AgentSpec
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes.scripted_provider import Gate, ScriptedFactory, call, text_turn, tool_turn
from tests.tools.leave_processes import ESCAPES

PARTIAL = "partial answer"
TOOL_TURNS = 3
ROOT = Path(__file__).resolve().parents[2]


async def crash_mid_run(
    state: Path, workspace: Path, mode: str | None = None, *, timeout: float = 30
) -> dict[str, Any]:
    """Run this module in a process of its own on `state`, wait (up to `timeout` seconds)
    for the line it prints once its run is under way, SIGKILL it (no cleanup runs) and
    return that line's fields."""
    argv = [sys.executable, "-m", "tests.runtime.crash_daemon", str(state), str(workspace)]
    process = await anyio.open_process([*argv, *([mode] if mode else [])], cwd=ROOT)
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(timeout):
            async for chunk in process.stdout:
                line += chunk
                if b"\n" in line:
                    break
        started: dict[str, Any] = json.loads(line)
    finally:
        process.kill()  # SIGKILL: no cleanup runs in the daemon
        with anyio.fail_after(10):
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    return started


async def main(state_dir: Path, workspace: Path, mode: str | None) -> None:
    escapes = mode == "escapes"
    store = await Store.open(state_dir)
    tools = ["exec_command"] if escapes else []
    agent, _ = await store.upsert_agent(AgentSpec(slug="crashy", model="scripted-1", tools=tools))
    factory = ScriptedFactory()
    steps = [text_turn(PARTIAL, gate=Gate())]  # the gate is never opened
    if escapes:
        calls = [
            call(f"c{i}", "exec_command", {"cmd": cmd, "login": False})
            for i, cmd in enumerate(ESCAPES.values())
        ]
        steps.insert(0, tool_turn(*calls))
    if mode == "turns":
        steps[:0] = [tool_turn(call(f"t{i}", "not_a_tool", {"turn": i})) for i in range(TOOL_TURNS)]
        factory.add(text_turn("one"))
    factory.add(*steps)
    started: dict[str, object] = {}
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        thread_id = None
        if mode == "turns":
            first = await manager.start(agent, prompt="first")
            await manager.wait(first.run_id)
            started["firstRunId"], thread_id = first.run_id, first.thread_id
        run = await manager.start(agent, prompt="do something long", thread_id=thread_id)
        async for event in manager.subscribe(run.run_id):
            if event.type == "text":
                break
        started.update(runId=run.run_id, threadId=run.thread_id)
        if escapes:
            started["pids"] = {
                name: int((workspace / f"{name}.pid").read_text()) for name in ESCAPES
            }
        print(json.dumps(started), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if sys.argv[3:] else None)
