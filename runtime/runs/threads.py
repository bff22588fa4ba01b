"""Runs and their threads' event logs: recording a run, importing a thread from its rollout,
ending the thread events of a run a dead daemon left behind.

`RunThreads` is what the run manager uses; it owns the daemon's `ThreadEventHub`.

- `record(run)`: a `ThreadRecorder` for a run that starts, on its thread's log.
- `ensure_thread(thread_id)`: the store's thread, or, when the store has never seen the id
  but the workspace holds its rollout file (a new daemon on a new sandbox with the same
  workspace mounted and an empty state dir), the thread imported from the rollout: its
  record, its conversation (what the persisted message events say the model saw) and its
  events, in one transaction. A run the rollout shows started but never completed (its
  daemon died) gets its `run_completed {status: interrupted}` then.
- `interrupted(record, error)`: the `run_completed {status: interrupted}` of a run the store
  says was unfinished when this daemon started.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from runtime.ids import new_id
from runtime.store import RunRecord, Store, ThreadRecord
from runtime.usage import Usage

if TYPE_CHECKING:
    from runtime.messages import CompactionPart
    from runtime.thread_events import PersistedThreadEvent, RunCompletedStatus
    from runtime.thread_log import ThreadEventHub
    from runtime.thread_recorder import ThreadRecorder

log = logging.getLogger("agentd.threads")


class RunThreads:
    """The thread side of runs, for one daemon (see the module docstring)."""

    def __init__(self, store: Store, workspace: Path, *, rollouts: bool = True) -> None:
        self.store = store
        self._workspace = workspace
        self._rollouts = rollouts
        self._hub: ThreadEventHub | None = None
        self._import_lock = anyio.Lock()

    @property
    def hub(self) -> ThreadEventHub:
        """The daemon's thread event logs, made on first use: the thread log, the thread
        events and the messages they hold (some thirty pydantic classes) load with the run
        machinery, after the daemon listens, unless a dead daemon's run needs ending first."""
        if self._hub is None:
            from runtime.thread_log import ThreadEventHub

            self._hub = ThreadEventHub(self.store, self._workspace, rollouts=self._rollouts)
        return self._hub

    async def record(self, run_id: str, thread_id: str) -> ThreadRecorder:
        from runtime.thread_recorder import ThreadRecorder

        return ThreadRecorder(await self.hub.log(thread_id), run_id)

    async def record_compaction(self, thread_id: str, record: CompactionPart) -> None:
        """The thread events of a compaction made between runs: a compaction is then its own
        attempt, so a new id names both its `runId` and its `rolloutId`."""
        from runtime.thread_events import compaction_events

        attempt = new_id("cmp")
        thread_log = await self.hub.log(thread_id)
        await thread_log.append(attempt, attempt, compaction_events(record))
        await thread_log.sync()

    async def ensure_thread(self, thread_id: str) -> ThreadRecord | None:
        thread = await self.store.get_thread(thread_id)
        if thread is not None:
            return thread
        async with self._import_lock:
            thread = await self.store.get_thread(thread_id)
            if thread is not None:
                return thread
            events = await self.hub.read_rollout(thread_id)
            if not events:
                return None
            return await self._import(thread_id, events)

    async def _import(
        self, thread_id: str, events: list[PersistedThreadEvent]
    ) -> ThreadRecord | None:
        started = [e for e in events if e.type == "run_started"]
        if not started:
            log.warning(
                "thread %s: its rollout names no run (no run_started); not loaded", thread_id
            )
            return None
        record = ThreadRecord(
            id=thread_id,
            agent=str(started[0].payload["agent"]),
            created_at=events[0].created_at,
            updated_at=events[-1].created_at,
            metadata={},
        )
        from runtime.thread_events import conversation_from_events

        messages = conversation_from_events(events)
        thread = await self.store.import_thread(record, messages, events)
        log.info(
            "thread %s: loaded from its rollout (%d events, %d messages)",
            thread_id,
            len(events),
            len(messages),
        )
        completed = {e.run_id for e in events if e.type == "run_completed"}
        unfinished = [e for e in started if e.run_id not in completed]
        for event in unfinished:
            await self._complete(
                thread_id,
                event.run_id,
                event.rollout_id,
                status="interrupted",
                usage=Usage(),
                iterations=0,
                result=None,
                error={
                    "code": "interrupted",
                    "message": "the daemon that ran this run stopped before it finished",
                },
            )
        return thread

    async def interrupted(self, record: RunRecord, error: Mapping[str, Any]) -> None:
        """End the thread events of a run a previous daemon left unfinished."""
        await self.ended(record, "interrupted", error)

    async def ended(
        self, record: RunRecord, status: RunCompletedStatus, error: Mapping[str, Any] | None
    ) -> None:
        """End the thread events of a run a previous daemon did not finish recording, with
        `status` (unless they already end)."""
        if record.thread_id is None:
            return
        thread_log = await self.hub.log(record.thread_id)  # reconciles rollout and store
        events = await self.store.run_thread_events(record.run_id)
        if not events or any(e.type == "run_completed" for e in events):
            return  # it never started (no thread events), or it did end
        await self._complete(
            thread_log.thread_id,
            record.run_id,
            events[0].rollout_id,
            status=status,
            usage=record.usage,
            iterations=record.iterations,
            result=record.result,
            error=error,
        )

    async def _complete(
        self,
        thread_id: str,
        run_id: str,
        rollout_id: str,
        *,
        status: RunCompletedStatus,
        usage: Usage,
        iterations: int,
        result: str | None,
        error: Mapping[str, Any] | None,
    ) -> None:
        from runtime.thread_recorder import ThreadRecorder

        recorder = ThreadRecorder(await self.hub.log(thread_id), run_id, rollout_id=rollout_id)
        await recorder.run_completed(
            status=status, usage=usage, iterations=iterations, result=result, error=error
        )

    async def delete(self, thread_id: str) -> None:
        """The thread was deleted: end its streams and remove its rollout file, so it does not
        come back from the workspace."""
        await self.hub.delete(thread_id)

    async def close(self) -> None:
        if self._hub is not None:
            await self._hub.close()


__all__ = ["RunThreads"]
