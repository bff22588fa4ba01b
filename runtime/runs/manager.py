"""The RunManager: the daemon's runs, from `start` to their end, and the controls on them.

Every run is a task in the manager's task group. A run waits `queued` until the `Scheduler`
gives it a slot (a global cap and the agent's `maxConcurrent`; a bounded FIFO queue, refused
with `QueueFull` beyond it), then `RunLifecycle` drives it with its own `Toolbox` (from the
`ToolboxPool`, which keeps what a thread's completed run left running for its next run),
`EventLog` and `RunControls`. The manager itself keeps the registry of active runs and which
thread each one holds, and answers queries and controls (pause, resume, cancel, input).

The lifecycle, the agent loop, the providers and the `Run` itself are the run machinery: the
manager reaches them through `runtime.runs.machinery`, which loads them after the daemon's
start-up (and off the event loop), so a manager answers queries and controls before they are
loaded, and its first run, fork or compaction awaits them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from runtime.ids import THREAD_ID_RULE, is_thread_id, new_id, utc_now
from runtime.runs.credentials import run_redactor
from runtime.runs.errors import Conflict, InvalidRequest, NotFound, QueueFull
from runtime.runs.machinery import RunMachinery, run_machinery
from runtime.runs.metrics import RunMetrics
from runtime.runs.recovery import recover_interrupted
from runtime.runs.scheduler import Scheduler, Slot
from runtime.runs.threads import RunThreads
from runtime.runs.toolbox_pool import ToolboxPool, process_owner_for
from runtime.runs.transcript import redact_message, tool_calls
from runtime.store import FINISHED_STATUSES, RunRecord, Store, ThreadRecord
from runtime.task_host import HostedTaskGroup
from tools.base import Toolbox, ToolResult, ToolSettings
from tools.cgroups import CgroupTree

if TYPE_CHECKING:
    # runtime.agents loads with the /v1 API, after start-up (runtime.api.v1)
    from runtime.agents import AgentRecord

    # The event log and model, the messages and the thread log load with the run machinery
    # (MODULES), used where a run starts or a finished run is replayed.
    from runtime.events import Event
    from runtime.messages import Message

    # The run machinery (runtime.runs.machinery): loaded after start-up, reached through it
    # (the Run a run is driven as, its RunConfig and forking among it).
    from runtime.runs.lifecycle import CustomToolFactory, RunLifecycle
    from runtime.runs.provider_factory import ProviderFactory
    from runtime.runs.run import Run, RunConfig
    from runtime.runs.thread_compaction import ThreadCompaction
    from runtime.thread_log import ThreadEventHub
    from runtime.tool_hub import ToolHub

log = logging.getLogger("agentd.runs")

# What holds a thread while it is being compacted or deleted, in place of a run id.
COMPACTING = "a compaction"
DELETING = "a deletion"


class RunManager:
    """Owns the runs of one daemon: their tasks, slots, toolboxes, event logs and records."""

    def __init__(
        self,
        store: Store,
        workspace: Path,
        *,
        tool_settings: ToolSettings | None = None,
        max_concurrent: int = 8,
        max_queue: int = 64,
        provider_factory: ProviderFactory | None = None,
        env: Mapping[str, str] | None = None,
        max_kept_toolboxes: int = 16,
        cancel_grace: float = 2.0,
        custom_tool_factory: CustomToolFactory | None = None,
        thread_rollouts: bool = True,
        tool_hub: ToolHub | None = None,
        use_cgroups: bool = True,
    ) -> None:
        self.store = store
        # Where agents' tool names that are not core tools are found (None: nowhere).
        self.tool_hub = tool_hub
        self.workspace = Path(workspace)
        # The processes of this state dir's runs carry its owner tag (see ToolboxPool), and
        # each toolbox's live in a cgroup of the owner's where the daemon may make them.
        owner = process_owner_for(store.state_dir)
        settings = tool_settings or ToolSettings()
        self.tool_settings = dataclasses.replace(
            settings,
            process_owner=owner,
            cgroups=settings.cgroups or (CgroupTree.open(owner) if use_cgroups else None),
        )
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.cancel_grace = cancel_grace
        self.metrics = RunMetrics()
        self.scheduler = Scheduler(max_concurrent, max_queue)
        self.toolbox_pool = ToolboxPool(
            self.workspace,
            env=self.env,
            settings=self.tool_settings,
            max_kept=max_kept_toolboxes,
            close_grace=cancel_grace,
        )
        # Threads' persisted/live events and their rollout files in the workspace.
        self.threads = RunThreads(store, self.workspace, rollouts=thread_rollouts)
        self.provider_factory = provider_factory
        self.custom_tool_factory = custom_tool_factory
        # Made with the run machinery, when the first run or compaction needs it (`_driver`).
        self._lifecycle: RunLifecycle | None = None
        self._runs: dict[str, Run] = {}
        self._thread_runs: dict[str, str] = {}
        self._start_lock = anyio.Lock()
        self._tasks = HostedTaskGroup()
        self._accepting = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> RunManager:
        await self.start_background()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown(grace=0)

    async def start_background(self) -> None:
        """Kill what a previous daemon's runs left running, mark the runs it left unfinished
        as interrupted, then accept runs.

        The runs' task group lives in a host task of its own, so `start_background` and
        `shutdown` may be called from different tasks (e.g. a web app's startup and cleanup
        hooks)."""
        if self._tasks.started:
            raise RuntimeError("the run manager is already started")
        await self.toolbox_pool.kill_leftovers()
        await self.recover_interrupted()
        await self._tasks.start()
        self._accepting = True

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting runs, give active ones `grace` seconds to finish, then interrupt the
        rest (their processes are killed and they end `interrupted`), and release every
        toolbox the manager kept."""
        self._accepting = False
        if grace > 0:
            with anyio.move_on_after(grace):
                for run in list(self._runs.values()):
                    await run.done.wait()
        for run in list(self._runs.values()):
            run.interrupted = "the daemon shut down while the run was active"
            run.controls.cancel()
        with anyio.move_on_after(self.cancel_grace * 3):
            for run in list(self._runs.values()):
                await run.done.wait()
        await self.toolbox_pool.aclose()
        await self._tasks.stop()
        if self._lifecycle is not None:
            await self._lifecycle.providers.aclose()
        await self.threads.close()

    async def recover_interrupted(self) -> list[str]:
        """Runs the store says are unfinished died with a previous daemon: end them."""
        return await recover_interrupted(self.store, self.threads, self.metrics, self._runs)

    def _driver(self, machinery: RunMachinery) -> RunLifecycle:
        """What drives runs, made from the run machinery when the first run or compaction
        needs it (the machinery loads after start-up: `runtime.runs.machinery`)."""
        if self._lifecycle is None:
            self._lifecycle = machinery.lifecycle(
                self.store,
                self.toolbox_pool,
                self.metrics,
                env=self.env,
                # Runs with the same model and environment share one provider (and SDK
                # client).
                providers=machinery.provider_pool(
                    self.provider_factory, close_grace=self.cancel_grace
                ),
                custom_tool_factory=self.custom_tool_factory,
                tool_hub=self.tool_hub,
                cancel_grace=self.cancel_grace,
                threads=self.threads,
            )
        return self._lifecycle

    # -- starting runs -----------------------------------------------------------------

    async def start(
        self,
        agent: AgentRecord | str,
        *,
        prompt: str | None = None,
        messages: list[Message] | None = None,
        thread_id: str | None = None,
        config: RunConfig | None = None,
        metadata: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        fork_step: int | None = None,
        new_thread: bool = False,
    ) -> Run:
        """Start a run (queued if no slot is free). Raises NotFound, Conflict, QueueFull or
        InvalidRequest; every later failure is an outcome of the run, not an exception.

        The run continues `thread_id` (created if the daemon has not seen it); without one,
        it starts a new thread, unless it was given `messages` (the caller's own history,
        kept by the caller: no thread) and not `new_thread`."""
        if not self._accepting or not self._tasks.running:
            raise Conflict("the run manager is not accepting runs", code="shutting_down")
        machinery = await run_machinery()
        from runtime.runs.run import RunConfig  # loaded with the machinery

        record_agent = await self._resolve_agent(agent)
        spec = record_agent.spec
        config = config or RunConfig()
        unknown = spec.unknown_tools()
        if unknown and self.tool_hub is None:
            raise InvalidRequest(f"agent {spec.slug!r} names unknown tools: {', '.join(unknown)}")
        if prompt is None and not messages:
            raise InvalidRequest("give a prompt or messages")
        if messages and thread_id is not None:
            raise InvalidRequest(
                "give either threadId (continue the thread) or messages (your own history)"
            )
        if thread_id is not None and not is_thread_id(thread_id):
            raise InvalidRequest(f"threadId must be {THREAD_ID_RULE} (got {thread_id!r})")
        from runtime.messages import Message  # loaded with the machinery

        new = [Message.user(prompt)] if prompt is not None else []
        # Checks and claims happen under one lock so concurrent starts cannot both take the
        # last queue place or the same thread. Capacity only grows while it is held.
        async with self._start_lock:
            thread = None if thread_id is None else await self.threads.ensure_thread(thread_id)
            if thread is not None:
                if thread.agent != spec.slug:
                    raise InvalidRequest(
                        f"thread {thread_id!r} belongs to agent {thread.agent!r}, not {spec.slug!r}"
                    )
                if thread_id in self._thread_runs:
                    raise Conflict(
                        f"thread {thread_id!r} already has an active run "
                        f"({self._thread_runs[thread_id]}); wait for it or cancel it"
                    )
            if not self.scheduler.has_room(spec.slug, spec.max_concurrent):
                raise QueueFull(
                    f"{self.scheduler.running} runs are active and the queue is full "
                    f"({self.scheduler.max_queue} waiting); try again later"
                )
            if thread is not None:
                history = await self.store.thread_messages(thread.id)
                seed: list[Message] = []
            else:
                history = list(messages or [])
                seed = list(history)
                if thread_id is not None or not messages or new_thread:
                    # A caller-chosen id the daemon has not seen starts that thread; a run
                    # given its own `messages` (caller-managed history) gets no thread.
                    thread_id = (await self.store.create_thread(spec.slug, thread_id)).id
            run = await self._register(
                machinery,
                record_agent,
                thread_id,
                config,
                prompt=prompt if prompt is not None else (history[-1].text if history else ""),
                metadata=metadata,
                parent_run_id=parent_run_id,
                fork_step=fork_step,
                initial=[*history, *new],
                thread_seed=[*seed, *new],
            )
        self._tasks.start_soon(self._drive, self._driver(machinery), run)
        return run

    async def _register(
        self,
        machinery: RunMachinery,
        agent: AgentRecord,
        thread_id: str | None,
        config: RunConfig,
        *,
        prompt: str,
        metadata: dict[str, Any] | None,
        parent_run_id: str | None,
        fork_step: int | None,
        initial: list[Message],
        thread_seed: list[Message],
    ) -> Run:
        spec = agent.spec
        run_id = new_id("run")
        redactor = run_redactor(spec, self.env)
        # Decided now (the caller holds the start lock, so capacity can only grow meanwhile).
        admit_now = self.scheduler.can_admit(spec.slug, spec.max_concurrent)
        record = RunRecord(
            run_id=run_id,
            agent=spec.slug,
            agent_version=agent.version,
            thread_id=thread_id,
            status="running" if admit_now else "queued",
            prompt=redactor.redact(prompt),
            metadata=dict(metadata or {}),
            config=config.model_dump(by_alias=True, exclude_none=True),
            created_at=utc_now(),
            parent_run_id=parent_run_id,
            fork_step=fork_step,
            execution_mode=spec.execution_mode,
            model=machinery.model_label(spec),
        )
        await self.store.insert_run(record)
        from runtime.events.log import EventLog  # loaded with the machinery
        from runtime.runs.run import Run

        run = Run(
            run_id=run_id,
            thread_id=thread_id,
            agent=agent,
            record=record,
            events=EventLog(run_id, thread_id, self.store, redactor=redactor),
            controls=machinery.controls(),
            redactor=redactor,
            config=config,
            initial=initial,
            thread_seed=thread_seed,
            slot=Slot(spec.slug, spec.max_concurrent),
        )
        run.controls.on_parked = lambda: self._parked(run)
        self._runs[run_id] = run
        if thread_id is not None:
            self._thread_runs[thread_id] = run_id
        self.metrics.runs_started += 1
        if admit_now:
            self.scheduler.admit(run.slot)
            self._count_slots()
        else:
            self.scheduler.enqueue(run.slot)
            self._count_slots()
            await run.events.emit("status", status="queued")
        return run

    async def fork(self, run_id: str, step: int, prompt: str | None = None) -> Run:
        """A new run (on a new thread) from the first `step` messages of another run."""
        await run_machinery()
        from runtime.runs.forking import plan_fork  # loaded with the machinery

        plan = await plan_fork(self.store, await self.get(run_id), step, prompt)
        return await self.start(
            plan.agent,
            prompt=plan.prompt,
            messages=plan.messages,
            config=plan.config,
            metadata=plan.metadata,
            parent_run_id=run_id,
            fork_step=step,
            new_thread=True,
        )

    async def _drive(self, lifecycle: RunLifecycle, run: Run) -> None:
        try:
            await lifecycle.drive(run)
        finally:
            self.scheduler.release(run.slot)
            self._count_slots()
            if self._runs.pop(run.run_id, None) is not None:
                self.metrics.events_emitted += run.events.last_id
            if run.thread_id is not None and self._thread_runs.get(run.thread_id) == run.run_id:
                del self._thread_runs[run.thread_id]
            run.done.set()

    def _count_slots(self) -> None:
        self.metrics.running = self.scheduler.running
        self.metrics.queued = self.scheduler.queued

    # -- queries -----------------------------------------------------------------------

    async def get(self, run_id: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is not None:
            return _live(run)
        record = await self.store.get_run(run_id)
        if record is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return record

    async def list_runs(
        self,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """A page of runs, newest first, and the cursor of the next page (None at the end);
        active runs as they are now."""
        records, cursor = await self.store.list_runs(
            agent=agent, status=status, limit=limit, cursor=cursor
        )
        live = [_live(self._runs[r.run_id]) if r.run_id in self._runs else r for r in records]
        return live, cursor

    async def detail(self, run_id: str) -> dict[str, Any]:
        """The record (wire shape) plus the conversation and its tool calls with results."""
        record = await self.get(run_id)
        run = self._runs.get(run_id)
        if run is not None:
            live = run.loop.messages if run.loop is not None else run.initial
            messages = [redact_message(m, run.redactor) for m in live]
        else:
            messages = await self.store.run_messages(run_id)
        data = record.model_dump(by_alias=True)
        data["output"] = record.result
        data["messages"] = [m.model_dump(mode="json") for m in messages]
        data["toolCalls"] = tool_calls(messages)
        return data

    def is_active(self, run_id: str) -> bool:
        return run_id in self._runs

    def active_run_of(self, thread_id: str) -> str | None:
        """The id of the thread's active (queued, running or paused) run, if any (a thread
        held by a compaction or a deletion has none)."""
        holder = self._thread_runs.get(thread_id)
        return holder if holder in self._runs else None

    async def run_thread(self, run_id: str) -> str | None:
        """The thread a run belongs to. NotFound if there is no such run."""
        return (await self.get(run_id)).thread_id

    async def ensure_thread(self, thread_id: str) -> ThreadRecord | None:
        """The thread, loaded from its rollout file in the workspace if only that knows it."""
        return await self.threads.ensure_thread(thread_id)

    @property
    def thread_events(self) -> ThreadEventHub:
        """The threads' event logs (persisted and live thread events)."""
        return self.threads.hub

    def active_runs(self) -> list[Run]:
        return list(self._runs.values())

    async def wait_until_idle(self) -> int:
        """Return once no run is active, at once if none is: how many runs it waited for
        (every run active at some point while it waited)."""
        waited: set[str] = set()
        while self._runs:
            waited.update(self._runs)
            await next(iter(self._runs.values())).done.wait()
        return len(waited)

    async def wait(self, run_id: str) -> RunRecord:
        """The run's record once it has finished."""
        run = self._runs.get(run_id)
        if run is not None:
            await run.done.wait()
        return await self.get(run_id)

    async def subscribe(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Events after `after`: from the live log (then live ones until the run ends), or
        replayed from the store for a finished run. Raises NotFound on first iteration."""
        async for batch in self.subscribe_batches(run_id, after):
            for event in batch:
                yield event

    async def subscribe_batches(
        self, run_id: str, after: int = 0, limit: int = 256
    ) -> AsyncIterator[list[Event]]:
        """`subscribe`, a batch at a time: each batch is the events that were ready at once
        (at most `limit`; `Subscription.next_batch`), so a reader that fell behind catches
        up in one step. Raises NotFound on first iteration."""
        run = self._runs.get(run_id)
        if run is not None:
            async with aclosing(run.events.subscribe(after=after).batches(limit)) as batches:
                async for batch in batches:
                    yield batch
            return
        if await self.store.get_run(run_id) is None:
            raise NotFound(f"run {run_id!r} does not exist")
        from runtime.events.log import EventLog  # loaded with the machinery

        async with aclosing(EventLog.replay_pages(self.store, run_id, after)) as pages:
            async for page in pages:
                for start in range(0, len(page), limit):
                    yield page[start : start + limit]

    # -- controls ----------------------------------------------------------------------

    def _active(self, run_id: str, action: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            raise Conflict(f"cannot {action} run {run_id!r}: it has finished or is finishing")
        self._still_active(run, action)
        return run

    @staticmethod
    def _still_active(run: Run, action: str) -> None:
        """Conflict unless `run` can still take a control. Checked again once a control holds
        the run's `control_lock`: the run may have begun to finish while it waited."""
        if run.finishing or run.status in FINISHED_STATUSES or run.controls.cancel_requested:
            raise Conflict(f"cannot {action} run {run.run_id!r}: it has finished or is finishing")

    async def _ensure_exists(self, run_id: str) -> None:
        if run_id not in self._runs and await self.store.get_run(run_id) is None:
            raise NotFound(f"run {run_id!r} does not exist")

    async def pause(self, run_id: str) -> RunRecord:
        """The run stops at its next safe point (before a model or tool call); work under way
        (a model stream, a running command) finishes. Idempotent for a paused run."""
        await self._ensure_exists(run_id)
        run = self._active(run_id, "pause")
        async with run.control_lock:
            self._still_active(run, "pause")
            if run.controls.pause():
                if run.loop is None or run.controls.parked:
                    await self._announce_paused(run)  # nothing under way: paused now
                else:
                    # A model turn or a tool is under way: the run stops when it is done.
                    await run.update(self.store, status="pausing")
                    await run.events.emit("status", status="pausing")
        return run.record

    async def _parked(self, run: Run) -> None:
        async with run.control_lock:
            await self._announce_paused(run)

    async def _announce_paused(self, run: Run) -> None:
        """Say once per pause that the run has stopped (the loop parked, or never started).

        Here and for every status, the record changes before the event says so: a client
        that reads the run when the event reaches it finds what the event says."""
        if run.pause_announced or not run.controls.paused:
            return
        run.pause_announced = True
        await run.update(self.store, status="paused")
        await run.events.emit("status", status="paused")

    async def resume(self, run_id: str) -> RunRecord:
        """Let a paused run continue. Idempotent for a run that is not paused."""
        await self._ensure_exists(run_id)
        run = self._active(run_id, "resume")
        async with run.control_lock:
            self._still_active(run, "resume")
            if run.controls.paused:
                # Announced before the loop may continue, so `resumed` precedes its events.
                run.pause_announced = False
                await run.update(self.store, status="running" if run.has_slot else "queued")
                await run.events.emit("status", status="resumed")
                run.controls.resume()
        return run.record

    async def cancel(self, run_id: str, *, wait: float | None = 5.0) -> RunRecord:
        """Cancel the run: its model stream stops, its processes are killed, and it ends
        `cancelled`. Waits (up to `wait` seconds) for the run to be finished."""
        await self._ensure_exists(run_id)
        run = self._active(run_id, "cancel")
        run.controls.cancel()
        if wait:
            with anyio.move_on_after(wait):
                await run.done.wait()
        return await self.get(run_id)

    async def send_input(self, run_id: str, text: str) -> RunRecord:
        """`text` reaches the model as a user message at the run's next turn boundary."""
        if not text:
            raise InvalidRequest("input text must not be empty")
        await self._ensure_exists(run_id)
        run = self._active(run_id, "send input to")
        async with run.control_lock:
            self._still_active(run, "send input to")
            if not run.controls.add_input(text):  # its last turn is over
                raise Conflict(
                    f"cannot send input to run {run_id!r}: it has finished or is finishing"
                )
            await run.events.emit("input", text=text)
        return run.record

    # -- tools -------------------------------------------------------------------------

    async def call_tool(self, name: str, args: dict[str, Any] | None) -> ToolResult:
        """Invoke a core tool directly on the workspace (control-plane exec)."""
        return await self.toolbox_pool.daemon_toolbox().call(name, args)

    def toolboxes(self) -> list[Toolbox]:
        """Every live toolbox: active runs', kept ones (dev servers) and the daemon's."""
        boxes = [run.toolbox for run in self._runs.values() if run.toolbox is not None]
        boxes.extend(self.toolbox_pool.toolboxes())
        return boxes

    def active_sessions(self) -> int:
        """Live processes (PTY sessions) across every toolbox, for metrics."""
        # No command has run in this process while tools.exec is not imported (or is being
        # imported, by another thread: its function not defined yet), so there is no session;
        # and /metrics, on the event loop, must not import the tools.
        count: Callable[[Toolbox], int] | None = getattr(
            sys.modules.get("tools.exec"), "live_session_count", None
        )
        if count is None:
            return 0
        return sum(count(box) for box in self.toolboxes())

    @contextlib.asynccontextmanager
    async def holding_thread(self, thread_id: str, holder: str) -> AsyncIterator[None]:
        """Hold the thread for `holder` (`COMPACTING`, `DELETING`: what errors name) while
        the block runs: no run starts on it and nothing else holds it meanwhile. Conflict
        (`thread_busy`) if a run or another holder has it."""
        async with self._start_lock:
            current = self._thread_runs.get(thread_id)
            if current is not None:
                raise Conflict(
                    f"thread {thread_id!r} is busy ({current}); try again when that has finished",
                    code="thread_busy",
                )
            self._thread_runs[thread_id] = holder
        try:
            yield
        finally:
            # Freed in one step, without the lock: a cancelled holder frees it too.
            if self._thread_runs.get(thread_id) == holder:
                del self._thread_runs[thread_id]

    async def compact_thread(self, thread_id: str) -> ThreadCompaction:
        """Compact a thread between runs (see `runtime.runs.thread_compaction`)."""
        machinery = await run_machinery()
        thread = await self.threads.ensure_thread(thread_id)
        if thread is None:
            raise NotFound(f"thread {thread_id!r} does not exist")
        agent = await self.store.get_agent(thread.agent)
        if agent is None:
            raise NotFound(f"agent {thread.agent!r} of thread {thread_id} no longer exists")
        async with self.holding_thread(thread_id, COMPACTING):  # no run starts on it meanwhile
            done = await machinery.compact_thread(
                self.store,
                self.threads,
                agent,
                thread_id,
                env=self.env,
                providers=self._driver(machinery).providers,
                metrics=self.metrics,
            )
        log.info(
            "thread %s compacted: %d -> %d tokens",
            thread_id,
            done.record.tokens_before,
            done.record.tokens_after,
        )
        return done

    async def release_thread(self, thread_id: str) -> None:
        """Kill what the thread's last completed run left running (e.g. on thread delete)."""
        await self.toolbox_pool.release(thread_id)

    # -- internals ---------------------------------------------------------------------

    async def _resolve_agent(self, agent: AgentRecord | str) -> AgentRecord:
        if not isinstance(agent, str):
            return agent
        record = await self.store.get_agent(agent)
        if record is None:
            raise NotFound(f"agent {agent!r} does not exist")
        return record


def _live(run: Run) -> RunRecord:
    """An active run's record with the loop's live iteration count and usage so far (the
    stored record is updated when the run ends)."""
    loop = run.loop
    if loop is None or (
        loop.iterations == run.record.iterations and loop.usage == run.record.usage
    ):
        return run.record
    return run.record.model_copy(update={"iterations": loop.iterations, "usage": loop.usage})
