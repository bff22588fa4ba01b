"""A RunManager in its own process whose model stream never finishes, for the SIGKILL test.

`python -m tests.runtime.crash_daemon STATE_DIR WORKSPACE [escapes]` opens the store, starts
one run whose scripted model streams some text and then blocks forever, waits until that text
is stored, prints `{"runId": …, "threadId": …}` on one line and waits to be killed.

With `escapes`, the model's first turn runs every command of tests/tools/leave_processes.py's
`ESCAPES` (processes that outlive their command: nohup, setsid, double forks ignoring
SIGTERM/SIGHUP) and the printed line adds their `pids` (read from the pid files they write).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from runtime.agents import AgentSpec
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes.scripted_provider import Gate, ScriptedFactory, call, text_turn, tool_turn
from tests.tools.leave_processes import ESCAPES

PARTIAL = "partial answer"


async def main(state_dir: Path, workspace: Path, escapes: bool) -> None:
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
    factory.add(*steps)
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        run = await manager.start(agent, prompt="do something long")
        async for event in manager.subscribe(run.run_id):
            if event.type == "text":
                break
        started: dict[str, object] = {"runId": run.run_id, "threadId": run.thread_id}
        if escapes:
            started["pids"] = {
                name: int((workspace / f"{name}.pid").read_text()) for name in ESCAPES
            }
        print(json.dumps(started), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] == ["escapes"])
