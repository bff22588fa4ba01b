"""The RunManager: starts runs, schedules them under concurrency caps, and controls them.

Every run is a task in the manager's task group. A run waits `queued` until a slot is free
(a global cap and the agent's `maxConcurrent`; a bounded FIFO queue, refused with
`QueueFull` beyond it), then runs the `AgentLoop` with its own `Toolbox`, `EventLog` and
`RunControls`. Whatever happens, a run ends the same way: its processes are dealt with, its
record is updated, and the terminal `complete` event is emitted and the event log closed, so
every stream ends.

Threads: a run continues its thread's conversation (or the caller's `messages`), and every
consistent step of it is appended to the thread as it happens, so a crash loses at most the
step in progress.

Processes: when a run completes normally its Toolbox stays alive (a dev server it started
keeps serving the `devUrl` in `complete`) and is handed to the same thread's next run when
that one starts, so the agent finds its sessions under the same ids and can poll, feed or
restart them ("now add a delete button" with the server still up). From then on they belong
to the new run: if it fails, is cancelled or interrupted they are killed with its own. Kept
toolboxes are bounded (`max_kept_toolboxes`, least recently used closed first) and closed on
shutdown or thread deletion. A toolbox never crosses threads (a fork gets a new thread).
"""

from __future__ import annotations

import builtins
import copy
import json
import logging
import os
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from runtime.agents import AgentRecord, AgentSpec, CustomModel, CustomToolSpec
from runtime.events import Event, EventLog, Redactor
from runtime.ids import new_id, utc_now
from runtime.loop import AgentLoop, LoopOutcome, RunControls
from runtime.messages import Message, ToolCallPart, ToolResultPart
from runtime.providers.base import ModelError, ModelSettings, Provider, Usage
from runtime.providers.registry import unsupported_settings
from runtime.store import RunRecord, Store
from runtime.task_host import HostedTaskGroup
from tools.base import TOOL_REGISTRY, Tool, Toolbox, ToolResult, ToolSettings, core_tool_names

log = logging.getLogger("agentd.runs")

# Environment variables whose values are credentials a provider may be configured with.
_KEY_SUFFIXES = ("_API_KEY", "_AUTH_TOKEN")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})
ProviderFactory = Callable[..., tuple[Provider, str]]
"""`factory(model, *, env) -> (provider, api model id)`, like `registry.create_provider`."""


class RunError(Exception):
    """A request the manager refuses; `status` is the HTTP status the API answers with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFound(RunError):
    def __init__(self, message: str, code: str = "not_found") -> None:
        super().__init__(code, message, 404)


class Conflict(RunError):
    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(code, message, 409)


class QueueFull(RunError):
    def __init__(self, message: str, code: str = "queue_full") -> None:
        super().__init__(code, message, 429)


class InvalidRequest(RunError):
    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(code, message, 400)


class RunConfig(BaseModel):
    """Per-run overrides of the agent's settings (the `config` of `POST /v1/run`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    max_tokens: int | None = Field(None, alias="maxTokens", ge=1)
    max_turns: int | None = Field(None, alias="maxTurns", ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    timeout: float | None = Field(None, gt=0)


@dataclass
class RunMetrics:
    """Plain counters for `/metrics`."""

    runs_started: int = 0
    runs_finished: Counter[str] = field(default_factory=Counter)
    events_emitted: int = 0
    model_turns: int = 0
    model_seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)
    tool_errors: Counter[str] = field(default_factory=Counter)
    # Float seconds in a Counter (it adds any numbers), the shape /metrics renders.
    tool_seconds: Counter[str] = field(default_factory=Counter)
    running: int = 0
    queued: int = 0

    def tool_call_finished(self, tool: str, seconds: float, is_error: bool) -> None:
        self.tool_calls[tool] += 1
        self.tool_seconds[tool] += seconds  # type: ignore[assignment]
        if is_error:
            self.tool_errors[tool] += 1

    def model_turn_finished(self, usage: Usage, seconds: float) -> None:
        self.model_turns += 1
        self.model_seconds += seconds
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.reasoning_tokens += usage.reasoning_tokens


@dataclass(eq=False)
class Run:
    """A run the manager is driving (queued, running or paused)."""

    run_id: str
    thread_id: str
    agent: AgentRecord
    record: RunRecord
    events: EventLog
    controls: RunControls
    redactor: Redactor
    config: RunConfig
    # The conversation the loop starts from, and what of it the thread does not have yet.
    initial: list[Message]
    thread_seed: list[Message]
    done: anyio.Event = field(default_factory=anyio.Event)
    admitted: anyio.Event = field(default_factory=anyio.Event)
    has_slot: bool = False
    control_lock: anyio.Lock = field(default_factory=anyio.Lock)
    toolbox: Toolbox | None = None
    loop: AgentLoop | None = None
    interrupted: str | None = None  # why the manager itself stopped the run

    @property
    def status(self) -> str:
        return self.record.status


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
        custom_tool_factory: Callable[[CustomToolSpec], Tool] | None = None,
    ) -> None:
        self.store = store
        self.workspace = Path(workspace)
        self.tool_settings = tool_settings or ToolSettings()
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._provider_factory = provider_factory
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.max_kept_toolboxes = max_kept_toolboxes
        self.cancel_grace = cancel_grace
        # Builds the tool for an agent's `{name, inputSchema, invokeUrl}` custom tool.
        self.custom_tool_factory = custom_tool_factory
        self.metrics = RunMetrics()
        self._runs: dict[str, Run] = {}
        self._thread_runs: dict[str, str] = {}
        self._queue: deque[Run] = deque()
        self._running_by_agent: Counter[str] = Counter()
        self._running_total = 0
        self._start_lock = anyio.Lock()
        self._spec_cache: dict[type, dict[str, Any]] = {}
        # Per thread: the toolbox its last completed run left, and the `_toolbox_key` it was
        # built for; least recently used first.
        self._kept: OrderedDict[str, tuple[Toolbox, str]] = OrderedDict()
        self._daemon_toolbox: Toolbox | None = None
        self._tasks = HostedTaskGroup()
        self._accepting = False

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> RunManager:
        await self.start_background()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown(grace=0)

    async def start_background(self) -> None:
        """Mark runs a previous daemon left unfinished as interrupted, then accept runs.

        The runs' task group lives in a host task of its own, so `start_background` and
        `shutdown` may be called from different tasks (e.g. a web app's startup and cleanup
        hooks)."""
        if self._tasks.started:
            raise RuntimeError("the run manager is already started")
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
        for thread_id in list(self._kept):
            await self._release_thread_toolbox(thread_id)
        if self._daemon_toolbox is not None:
            await self._daemon_toolbox.aclose()
            self._daemon_toolbox = None
        await self._tasks.stop()

    async def recover_interrupted(self) -> list[str]:
        """Runs the store says are unfinished died with a previous daemon: end them."""
        recovered = []
        for record in await self.store.unfinished_runs():
            if record.run_id in self._runs:
                continue
            events = EventLog(
                record.run_id,
                record.thread_id,
                self.store,
                start_id=await self.store.last_event_id(record.run_id),
            )
            error = {
                "code": "interrupted",
                "message": "the daemon stopped while this run was "
                f"{record.status}; it was not finished",
            }
            await events.emit("error", **error)
            await self.store.update_run(
                record.run_id, status="interrupted", error=error, finished_at=utc_now()
            )
            await events.emit(
                "complete",
                output=record.result or "",
                files=[],
                devUrl=None,
                usage=record.usage.model_dump(by_alias=True),
                iterations=record.iterations,
                status="interrupted",
            )
            await events.close()
            self.metrics.runs_finished["interrupted"] += 1
            recovered.append(record.run_id)
        if recovered:
            log.warning("marked %d unfinished run(s) interrupted: %s", len(recovered), recovered)
        return recovered

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
    ) -> Run:
        """Start a run (queued if no slot is free). Raises NotFound, Conflict, QueueFull or
        InvalidRequest; every later failure is an outcome of the run, not an exception."""
        if not self._accepting or not self._tasks.running:
            raise Conflict("the run manager is not accepting runs", code="shutting_down")
        record_agent = await self._resolve_agent(agent)
        spec = record_agent.spec
        config = config or RunConfig()
        unknown = sorted(set(spec.core_tool_names()) - set(core_tool_names()))
        if unknown:
            raise InvalidRequest(f"agent {spec.slug!r} names unknown tools: {', '.join(unknown)}")
        if prompt is None and not messages:
            raise InvalidRequest("give a prompt or messages")
        if messages and thread_id is not None:
            raise InvalidRequest(
                "give either threadId (continue the thread) or messages (your own history)"
            )
        new = [Message.user(prompt)] if prompt is not None else []
        # Checks and claims happen under one lock so concurrent starts cannot both take the
        # last queue place or the same thread. Capacity only grows while it is held.
        async with self._start_lock:
            if thread_id is not None:
                thread = await self.store.get_thread(thread_id)
                if thread is None:
                    raise NotFound(f"thread {thread_id!r} does not exist")
                if thread.agent != spec.slug:
                    raise InvalidRequest(
                        f"thread {thread_id!r} belongs to agent {thread.agent!r}, not {spec.slug!r}"
                    )
                if thread_id in self._thread_runs:
                    raise Conflict(
                        f"thread {thread_id!r} already has an active run "
                        f"({self._thread_runs[thread_id]}); wait for it or cancel it"
                    )
            if not self._can_admit(spec.slug, spec.max_concurrent) and (
                len(self._queue) >= self.max_queue
            ):
                raise QueueFull(
                    f"{self._running_total} runs are active and the queue is full "
                    f"({self.max_queue} waiting); try again later"
                )
            if thread_id is not None:
                history = await self.store.thread_messages(thread_id)
                seed: list[Message] = []
            else:
                history = list(messages or [])
                seed = list(history)
                thread_id = (await self.store.create_thread(spec.slug)).id
            run = await self._register(
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
        self._tasks.start_soon(self._drive, run)
        return run

    async def _register(
        self,
        agent: AgentRecord,
        thread_id: str,
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
        redactor = self._redactor_for(agent)
        # Decided now (the caller holds the start lock, so capacity can only grow meanwhile).
        admit_now = self._can_admit(spec.slug, spec.max_concurrent)
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
            model=spec.model if isinstance(spec.model, str) else (spec.model.model or "custom"),
        )
        await self.store.insert_run(record)
        run = Run(
            run_id=run_id,
            thread_id=thread_id,
            agent=agent,
            record=record,
            events=EventLog(run_id, thread_id, self.store, redactor=redactor),
            controls=RunControls(),
            redactor=redactor,
            config=config,
            initial=initial,
            thread_seed=thread_seed,
        )
        self._runs[run_id] = run
        self._thread_runs[thread_id] = run_id
        self.metrics.runs_started += 1
        if admit_now:
            self._admit(run)
        else:
            self._queue.append(run)
            self.metrics.queued = len(self._queue)
            await run.events.emit("status", status="queued")
        return run

    async def fork(self, run_id: str, step: int, prompt: str | None = None) -> Run:
        """A new run (on a new thread) from the first `step` messages of another run."""
        source = await self.get(run_id)
        conversation = await self.store.run_messages(run_id)
        if not 0 <= step <= len(conversation):
            raise InvalidRequest(
                f"step must be between 0 and {len(conversation)} (the run has "
                f"{len(conversation)} messages), got {step}"
            )
        cut = conversation[:step]
        if cut and cut[-1].role == "assistant" and cut[-1].tool_calls:
            raise InvalidRequest(
                f"message {step} has tool calls whose results would be cut off; "
                f"fork at step {step + 1} or {step - 1}"
            )
        if prompt is None and (not cut or cut[-1].role == "assistant"):
            raise InvalidRequest(
                "without a prompt the fork must end with a user or tool message "
                f"(message {step} is {'missing' if not cut else 'from the assistant'})"
            )
        agent = await self.store.get_agent(source.agent, source.agent_version)
        if agent is None:
            agent = await self.store.get_agent(source.agent)
        if agent is None:
            raise NotFound(f"agent {source.agent!r} of run {run_id} no longer exists")
        config = RunConfig.model_validate(source.config)
        if not cut:
            assert prompt is not None
            return await self.start(
                agent, prompt=prompt, config=config, parent_run_id=run_id, fork_step=step
            )
        return await self.start(
            agent,
            prompt=prompt,
            messages=cut,
            config=config,
            metadata=dict(source.metadata),
            parent_run_id=run_id,
            fork_step=step,
        )

    # -- queries -----------------------------------------------------------------------

    async def get(self, run_id: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is not None:
            return run.record
        record = await self.store.get_run(run_id)
        if record is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return record

    async def list(
        self,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        return await self.store.list_runs(agent=agent, status=status, limit=limit, cursor=cursor)

    async def detail(self, run_id: str) -> dict[str, Any]:
        """The record (wire shape) plus the conversation and its tool calls with results."""
        record = await self.get(run_id)
        run = self._runs.get(run_id)
        if run is not None:
            live = run.loop.messages if run.loop is not None else run.initial
            messages = [_redact_message(m, run.redactor) for m in live]
        else:
            messages = await self.store.run_messages(run_id)
        data = record.model_dump(by_alias=True)
        data["output"] = record.result
        data["messages"] = [m.model_dump(mode="json") for m in messages]
        data["toolCalls"] = _tool_calls(messages)
        return data

    def is_active(self, run_id: str) -> bool:
        return run_id in self._runs

    def active_runs(self) -> builtins.list[Run]:
        return list(self._runs.values())

    async def wait(self, run_id: str) -> RunRecord:
        """The run's record once it has finished."""
        run = self._runs.get(run_id)
        if run is not None:
            await run.done.wait()
        return await self.get(run_id)

    async def subscribe(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Events after `after`: from the live log (then live ones until the run ends), or
        replayed from the store for a finished run. Raises NotFound on first iteration."""
        run = self._runs.get(run_id)
        if run is not None:
            async for event in run.events.subscribe(after=after):
                yield event
            return
        if await self.store.get_run(run_id) is None:
            raise NotFound(f"run {run_id!r} does not exist")
        for event in await EventLog.replay(self.store, run_id, after=after):
            yield event

    # -- controls ----------------------------------------------------------------------

    def _active(self, run_id: str, action: str) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.status in TERMINAL_STATUSES or run.controls.cancel_requested:
            raise Conflict(f"cannot {action} run {run_id!r}: it has finished or is finishing")
        return run

    async def _ensure_exists(self, run_id: str) -> None:
        if run_id not in self._runs and await self.store.get_run(run_id) is None:
            raise NotFound(f"run {run_id!r} does not exist")

    async def pause(self, run_id: str) -> RunRecord:
        """The run stops at its next safe point (before a model or tool call); work under way
        (a model stream, a running command) finishes. Idempotent for a paused run."""
        await self._ensure_exists(run_id)
        run = self._active(run_id, "pause")
        async with run.control_lock:
            if run.controls.pause():
                await run.events.emit("status", status="paused")
                await self._update(run, status="paused")
        return run.record

    async def resume(self, run_id: str) -> RunRecord:
        """Let a paused run continue. Idempotent for a run that is not paused."""
        await self._ensure_exists(run_id)
        run = self._active(run_id, "resume")
        async with run.control_lock:
            if run.controls.paused:
                # Announced before the loop may continue, so `resumed` precedes its events.
                await run.events.emit("status", status="resumed")
                await self._update(run, status="running" if run.has_slot else "queued")
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
        run.controls.add_input(text)
        await run.events.emit("input", text=text)
        return run.record

    # -- tools without a model ---------------------------------------------------------

    async def call_tool(self, name: str, args: dict[str, Any] | None) -> ToolResult:
        """Invoke a core tool directly on the workspace (control-plane exec)."""
        if self._daemon_toolbox is None:
            self._daemon_toolbox = Toolbox(
                self.workspace, env=dict(self.env), settings=self.tool_settings
            )
        return await self._daemon_toolbox.call(name, args)

    def toolboxes(self) -> builtins.list[Toolbox]:
        """Every live toolbox: active runs', kept ones (dev servers) and the daemon's."""
        boxes = [run.toolbox for run in self._runs.values() if run.toolbox is not None]
        boxes.extend(box for box, _ in self._kept.values())
        if self._daemon_toolbox is not None:
            boxes.append(self._daemon_toolbox)
        return boxes

    def active_sessions(self) -> int:
        """Live processes (PTY sessions) across every toolbox, for metrics."""
        try:
            from tools.exec import live_session_count
        except ImportError:  # exec_command not installed in this build
            return 0
        return sum(live_session_count(box) for box in self.toolboxes())

    # -- internals ---------------------------------------------------------------------

    async def _resolve_agent(self, agent: AgentRecord | str) -> AgentRecord:
        if isinstance(agent, AgentRecord):
            return agent
        record = await self.store.get_agent(agent)
        if record is None:
            raise NotFound(f"agent {agent!r} does not exist")
        return record

    def _redactor_for(self, agent: AgentRecord) -> Redactor:
        spec = agent.spec
        env = {**self.env, **spec.env}
        values = [env[name] for name in spec.secrets if env.get(name)]
        values += [v for k, v in env.items() if k.upper().endswith(_KEY_SUFFIXES) and v]
        if isinstance(spec.model, CustomModel) and spec.model.api_key:
            values.append(spec.model.api_key)
        return Redactor(values)

    def _can_admit(self, agent: str, agent_max: int | None) -> bool:
        if self._running_total >= self.max_concurrent:
            return False
        return agent_max is None or self._running_by_agent[agent] < agent_max

    def _admit(self, run: Run) -> None:
        run.has_slot = True
        self._running_total += 1
        self._running_by_agent[run.agent.spec.slug] += 1
        self.metrics.running = self._running_total
        run.admitted.set()

    def _release_slot(self, run: Run) -> None:
        if run.has_slot:
            run.has_slot = False
            self._running_total -= 1
            self._running_by_agent[run.agent.spec.slug] -= 1
        elif run in self._queue:
            self._queue.remove(run)
        for waiting in list(self._queue):
            if self._can_admit(waiting.agent.spec.slug, waiting.agent.spec.max_concurrent):
                self._queue.remove(waiting)
                self._admit(waiting)
        self.metrics.running = self._running_total
        self.metrics.queued = len(self._queue)

    async def _update(self, run: Run, **fields: Any) -> None:
        run.record = await self.store.update_run(run.run_id, **fields)

    async def _drive(self, run: Run) -> None:
        outcome: LoopOutcome | None = None
        try:
            if not run.admitted.is_set():
                with run.controls.cancel_scope():
                    await run.admitted.wait()
            if run.admitted.is_set() and not run.controls.cancel_requested:
                outcome = await self._execute(run)
        except Exception as exc:
            log.exception("run %s failed unexpectedly", run.run_id)
            outcome = self._outcome(run, "failed", "internal", f"internal error: {exc!r}")
            with anyio.CancelScope(shield=True):
                try:
                    await run.events.emit("error", **(outcome.error or {}))
                except Exception:
                    log.exception("run %s: could not report its failure", run.run_id)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._finish(run, outcome)
                except Exception:
                    log.exception("finishing run %s failed", run.run_id)
                finally:
                    self._release_slot(run)
                    if self._runs.pop(run.run_id, None) is not None:
                        self.metrics.events_emitted += run.events.last_id
                    if self._thread_runs.get(run.thread_id) == run.run_id:
                        del self._thread_runs[run.thread_id]
                    run.done.set()

    def _outcome(self, run: Run, status: Any, code: str | None, message: str) -> LoopOutcome:
        loop = run.loop
        return LoopOutcome(
            status=status,
            result=loop.result if loop else "",
            usage=loop.usage if loop else Usage(),
            iterations=loop.iterations if loop else 0,
            messages=list(loop.messages) if loop else list(run.initial),
            error=None if code is None else {"code": code, "message": message},
            files=list(loop.files) if loop else [],
            dev_url=loop.dev_url if loop else None,
        )

    async def _execute(self, run: Run) -> LoopOutcome:
        spec = run.agent.spec
        started_at = utc_now()
        env = {**self.env, **spec.env}
        model: str | dict[str, Any] = (
            spec.model if isinstance(spec.model, str) else spec.model.model_dump(by_alias=True)
        )
        try:
            provider, model_id = self._create_provider(model, env)
        except (ValueError, ModelError) as exc:
            await self._update(run, status="running", started_at=started_at)
            await run.events.emit(
                "run_started",
                agent=spec.slug,
                version=run.agent.version,
                threadId=run.thread_id,
                model=run.record.model,
            )
            message = f"cannot use model {run.record.model!r}: {exc}"
            await run.events.emit("error", message=message, code="model_error")
            return self._outcome(run, "failed", "model_error", message)
        try:
            await self._update(
                run,
                status="paused" if run.controls.paused else "running",
                started_at=started_at,
                model=model_id,
            )
            temperature = (
                run.config.temperature if run.config.temperature is not None else spec.temperature
            )
            # A setting the model's route never takes is left out, and the run says so once
            # (an agent-level one is refused at upsert; a run's `config` can still bring one).
            try:
                unsupported = unsupported_settings(
                    model, temperature=temperature, thinking_budget=spec.thinking_budget
                )
            except ValueError:  # a model only the injected provider factory knows
                unsupported = []
            warnings = [problem.message() for problem in unsupported]
            for warning in warnings:
                log.warning("run %s: %s", run.run_id, warning)
            await run.events.emit(
                "run_started",
                agent=spec.slug,
                version=run.agent.version,
                threadId=run.thread_id,
                model=model_id,
                **({"warnings": warnings} if warnings else {}),
            )
            custom = spec.custom_tools()
            extra: builtins.list[Tool] = []
            if custom and self.custom_tool_factory is not None:
                extra = [self.custom_tool_factory(tool) for tool in custom]
            elif custom:
                names = ", ".join(tool.name for tool in custom)
                await run.events.emit(
                    "error",
                    message=f"custom tools are not available in this daemon: {names}; "
                    "the run continues without them",
                    code="custom_tools_unavailable",
                )
            # What the thread's previous run left running (its dev server) carries on in this
            # run, which owns it from here: its outcome decides whether it lives on.
            run.toolbox = await self._take_thread_toolbox(run.thread_id, _toolbox_key(spec))
            if run.toolbox is None:
                run.toolbox = Toolbox(
                    self.workspace,
                    env=dict(spec.env),
                    enabled=spec.core_tool_names(),
                    settings=self.tool_settings,
                    extra_tools=extra,
                )
            # A handed-over box serves this run now: tools that tell the outside which run a
            # call belongs to (custom tools) must name this one, not the previous run.
            run.toolbox.run_id = run.run_id
            await self._persist_messages(run, run.thread_seed, run.initial)
            loop = AgentLoop(
                provider,
                run.toolbox,
                run.events,
                tool_specs=self._tool_specs(run.toolbox),
                system=spec.system_prompt or None,
                settings=ModelSettings(
                    model=model_id,
                    max_tokens=run.config.max_tokens or spec.max_tokens or 8192,
                    temperature=temperature,
                    thinking_budget=spec.thinking_budget,
                ),
                max_iterations=run.config.max_turns or spec.max_iterations,
                fail_on_limit=spec.fail_on_limit,
                redactor=run.redactor,
                controls=run.controls,
                timeout=run.config.timeout or spec.timeout,
                metrics=self.metrics,
            )

            async def on_messages(new: builtins.list[Message]) -> None:
                await self._persist_messages(run, new, loop.messages)

            loop.on_messages = on_messages
            run.loop = loop
            return await loop.run(run.initial)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.cancel_grace):
                await provider.aclose()

    def _tool_specs(self, toolbox: Toolbox) -> builtins.list[dict[str, Any]]:
        """The toolbox's specs; a tool class's JSON schema is generated once per manager
        (pydantic's schema generation costs ~0.4 ms per tool, on every run otherwise)."""
        specs = []
        for name in toolbox.names:
            tool = toolbox.tool(name)
            assert tool is not None
            if TOOL_REGISTRY.get(name) is not type(tool):
                specs.append(tool.spec())  # a custom tool: its schema is per instance
                continue
            spec = self._spec_cache.get(type(tool))
            if spec is None:
                spec = self._spec_cache[type(tool)] = tool.spec()
            specs.append(copy.deepcopy(spec))
        return specs

    def _create_provider(self, model: str | dict[str, Any], env: dict[str, str]) -> Any:
        factory = self._provider_factory
        if factory is None:
            from runtime.providers.registry import create_provider

            factory = create_provider
        return factory(model, env=env)

    async def _persist_messages(
        self, run: Run, new: builtins.list[Message], conversation: builtins.list[Message]
    ) -> None:
        if new:
            await self.store.append_thread_messages(
                run.thread_id, [_redact_message(m, run.redactor) for m in new]
            )
        await self.store.set_run_messages(
            run.run_id, [_redact_message(m, run.redactor) for m in conversation]
        )

    async def _finish(self, run: Run, outcome: LoopOutcome | None) -> None:
        """End the run: processes, record, the terminal `complete` event, the log."""
        if outcome is None:  # cancelled (or stopped by the manager) before it started
            outcome = self._outcome(run, "cancelled", None, "")
        status: str = outcome.status
        error = outcome.error
        if status == "cancelled" and run.interrupted:
            status = "interrupted"
            error = {"code": "interrupted", "message": run.interrupted}
            await run.events.emit("error", **error)
        toolbox, run.toolbox = run.toolbox, None
        if toolbox is not None:
            if status == "completed":
                await self._keep_toolbox(run.thread_id, toolbox, _toolbox_key(run.agent.spec))
            else:
                with anyio.move_on_after(self.cancel_grace):
                    await toolbox.aclose()
        await self._update(
            run,
            status=status,
            result=run.redactor.redact(outcome.result),
            error=error,
            usage=outcome.usage,
            iterations=outcome.iterations,
            finished_at=utc_now(),
        )
        await run.events.emit(
            "complete",
            output=outcome.result,
            files=outcome.files,
            devUrl=outcome.dev_url,
            usage=outcome.usage.model_dump(by_alias=True),
            iterations=outcome.iterations,
            status=status,
        )
        await run.events.close()
        self.metrics.runs_finished[status] += 1

    async def _keep_toolbox(self, thread_id: str, toolbox: Toolbox, key: str) -> None:
        await self._release_thread_toolbox(thread_id)
        self._kept[thread_id] = (toolbox, key)  # the most recently used: evicted last
        while len(self._kept) > self.max_kept_toolboxes:
            oldest = next(iter(self._kept))
            await self._release_thread_toolbox(oldest)

    async def _take_thread_toolbox(self, thread_id: str, key: str) -> Toolbox | None:
        """Hand the toolbox the thread's previous run left to the thread's new run, if it was
        built for the same tools and env; None when there is none or it no longer fits."""
        kept = self._kept.pop(thread_id, None)  # no await before the run holds it
        if kept is None:
            return None
        toolbox, kept_key = kept
        if kept_key == key:
            return toolbox
        # The agent's tools or env changed since (a new version): the old box runs commands
        # with the old env and offers tools the agent no longer has, so its processes are
        # stopped and the run starts with a fresh box, as a run on a new thread would.
        log.info(
            "thread %s: the agent's tools or env changed; stopping what its previous run "
            "left running",
            thread_id,
        )
        await self._close_kept(toolbox)
        return None

    async def _release_thread_toolbox(self, thread_id: str) -> None:
        kept = self._kept.pop(thread_id, None)
        if kept is not None:
            await self._close_kept(kept[0])

    async def _close_kept(self, toolbox: Toolbox) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.cancel_grace):
            await toolbox.aclose()

    async def release_thread(self, thread_id: str) -> None:
        """Kill what the thread's last completed run left running (e.g. on thread delete)."""
        await self._release_thread_toolbox(thread_id)


def _toolbox_key(spec: AgentSpec) -> str:
    """What a run's Toolbox is built from: the agent's env and its tools (names and custom
    tool definitions, in order). A kept toolbox is handed over only when this is unchanged."""
    tools = [t if isinstance(t, str) else t.model_dump(mode="json") for t in spec.tools]
    return json.dumps({"env": spec.env, "tools": tools}, sort_keys=True)


def _redact_message(message: Message, redactor: Redactor) -> Message:
    return Message.model_validate(redactor.redact_obj(message.model_dump()))


def _tool_calls(messages: list[Message]) -> list[dict[str, Any]]:
    results: dict[str, ToolResultPart] = {
        part.call_id: part for m in messages for part in m.tool_results
    }
    calls: list[ToolCallPart] = [part for m in messages for part in m.tool_calls]
    return [
        {
            "callId": c.id,
            "tool": c.name,
            "input": c.arguments if c.raw_arguments is None else {"rawArguments": c.raw_arguments},
            "output": results[c.id].output if c.id in results else None,
            "isError": results[c.id].is_error if c.id in results else None,
        }
        for c in calls
    ]
