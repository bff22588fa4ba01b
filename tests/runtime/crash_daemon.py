"""A RunManager in its own process whose model stream never finishes, for the SIGKILL test.

`python -m tests.runtime.crash_daemon STATE_DIR WORKSPACE` opens the store, starts one run
whose scripted model streams some text and then blocks forever, waits until that text is
stored, prints `{"runId": …, "threadId": …}` on one line and waits to be killed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from runtime.agents import AgentSpec
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes.scripted_provider import Gate, ScriptedFactory, text_turn

PARTIAL = "partial answer"


async def main(state_dir: Path, workspace: Path) -> None:
    store = await Store.open(state_dir)
    agent, _ = await store.upsert_agent(AgentSpec(slug="crashy", model="scripted-1", tools=[]))
    factory = ScriptedFactory()
    factory.add(text_turn(PARTIAL, gate=Gate()))  # the gate is never opened
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        run = await manager.start(agent, prompt="do something long")
        async for event in manager.subscribe(run.run_id):
            if event.type == "text":
                break
        print(json.dumps({"runId": run.run_id, "threadId": run.thread_id}), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]))
