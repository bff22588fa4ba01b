"""Writes to a store as fast as it can until killed, for the SIGKILL durability test.

`python -m tests.runtime.store_writer STATE_DIR` appends events to run `run_crash` and one
message per event to thread `thr_crash`, in separate transactions, updating the run record
every 10 events; after 200 events it prints `ready` and keeps going until it is killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from runtime.events import EventLog
from runtime.messages import Message
from runtime.store import RunRecord, Store


async def main(state_dir: Path) -> None:
    store = await Store.open(state_dir)
    await store.insert_run(RunRecord(run_id="run_crash", agent="a", status="running"))
    thread = await store.create_thread("a", thread_id="thr_crash")
    log = EventLog("run_crash", thread.id, store)
    i = 0
    while True:
        i += 1
        await log.emit("tool_output", callId="c", chunk=f"{i}:" + "x" * 200)
        await store.append_thread_messages(thread.id, [Message.user(str(i))])
        if i % 10 == 0:
            await store.update_run("run_crash", iterations=i)
        if i == 200:
            print("ready", flush=True)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
