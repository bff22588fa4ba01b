"""Start-up recovery: ending the runs a previous daemon left unfinished.

A daemon that died (or was killed) mid-run leaves runs the store calls `queued`, `running`
or `paused`: they become `interrupted`, with an `error` and a `complete` event, and their
threads record the end. A run it killed while finishing (its record's terminal status
written, its `complete` not yet) gets the thread's `run_completed` and its `complete` with
the record's own status. Only the store, the event log and the threads are needed: none of
the run machinery, so the daemon does this before it listens without loading the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import TYPE_CHECKING

from runtime.ids import utc_now
from runtime.runs.metrics import RunMetrics
from runtime.runs.threads import RunThreads
from runtime.store import RunRecord, Store
from runtime.usage import Usage

if TYPE_CHECKING:
    from runtime.events.log import EventLog

log = logging.getLogger("agentd.runs")


async def recover_interrupted(
    store: Store, threads: RunThreads, metrics: RunMetrics, active: Container[str]
) -> list[str]:
    """Runs the store says are unfinished (and are not in `active`) died with a previous
    daemon: end them `interrupted`. Returns their ids."""
    recovered = []
    for record in await store.unfinished_runs():
        if record.run_id in active:
            continue
        events = await _reopened_log(store, record)
        error = {
            "code": "interrupted",
            "message": "the daemon stopped while this run was "
            f"{record.status}; it was not finished",
        }
        await events.emit("error", **error)
        # The record's totals are written when a run finishes, which this one never did:
        # its `usage` events say what its model requests cost.
        spent = await store.usage_events(record.run_id)
        record = await store.update_run(
            record.run_id,
            status="interrupted",
            error=error,
            finished_at=utc_now(),
            usage=sum((Usage.model_validate(u) for u in spent), Usage()),
            iterations=sum(not u.get("compaction") for u in spent),  # turns, not summaries
        )
        await threads.interrupted(record, error)
        await _complete(events, record, "interrupted")
        metrics.runs_finished["interrupted"] += 1
        recovered.append(record.run_id)
    if recovered:
        log.warning("marked %d unfinished run(s) interrupted: %s", len(recovered), recovered)
    # Killed while finishing: the record has its end, the events (thread, run) not yet.
    for record in await store.runs_missing_complete():
        if record.run_id in active:
            continue
        await threads.ended(record, record.status, record.error)  # type: ignore[arg-type]
        events = await _reopened_log(store, record)
        await _complete(events, record, record.status)
        log.warning("run %s: wrote the complete event its daemon did not", record.run_id)
    return recovered


async def _reopened_log(store: Store, record: RunRecord) -> EventLog:
    """The run's event log, continuing after the last event its daemon stored."""
    # A starting daemon loads the event log (and its model) only if a run needs ending.
    from runtime.events.log import EventLog

    last = await store.last_event_id(record.run_id)
    return EventLog(record.run_id, record.thread_id, store, start_id=last)


async def _complete(events: EventLog, record: RunRecord, status: str) -> None:
    """The run's last event, from what its record holds, and the end of its log."""
    await events.emit(
        "complete",
        output=record.result or "",
        files=[],
        devUrl=None,
        usage=record.usage.model_dump(by_alias=True),
        iterations=record.iterations,
        status=status,
    )
    await events.close()
