"""A run's life from admission to its terminal event.

An admitted run gets its provider, announces `run_started`, takes its thread's kept toolbox
(or a new one) and runs the `AgentLoop`. Whatever happens, it ends the same way: its
processes are dealt with (kept for the thread's next run if it completed, killed otherwise),
its record is updated, the terminal `complete` event is emitted and the event log closed, so
every stream ends.

Threads: a run continues its thread's conversation (or the caller's `messages`), and every
consistent step of it is appended to the thread as it happens, so a crash loses at most the
step in progress.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

import anyio

from runtime.agents import AgentSpec, CustomToolSpec
from runtime.ids import utc_now
from runtime.loop import AgentLoop, LoopOutcome, LoopStatus
from runtime.messages import Message
from runtime.providers.base import ModelError, ModelSettings, Provider, hosted_tool_spec
from runtime.providers.registry import default_context_window, unsupported_settings
from runtime.runs.metrics import RunMetrics
from runtime.runs.provider_factory import ProviderPool, model_reference
from runtime.runs.run import Run
from runtime.runs.threads import RunThreads
from runtime.runs.tool_specs import toolbox_specs
from runtime.runs.toolbox_pool import ToolboxPool, toolbox_key
from runtime.runs.transcript import redact_message
from runtime.store import Store, StoreFull
from runtime.tool_hub import ToolHub, ToolHubError
from runtime.usage import Usage
from tools.base import Tool

log = logging.getLogger("agentd.runs")

CustomToolFactory = Callable[[CustomToolSpec], Tool]
"""Builds the tool for an agent's `{name, inputSchema, invokeUrl}` custom tool."""


class RunLifecycle:
    """Drives runs from admission to `complete`; their outcome is never an exception."""

    def __init__(
        self,
        store: Store,
        toolboxes: ToolboxPool,
        metrics: RunMetrics,
        *,
        env: Mapping[str, str],
        providers: ProviderPool,
        custom_tool_factory: CustomToolFactory | None = None,
        tool_hub: ToolHub | None = None,
        cancel_grace: float = 2.0,
        threads: RunThreads,
    ) -> None:
        self.store = store
        self.threads = threads
        self.toolboxes = toolboxes
        self.metrics = metrics
        self.env = env
        self.providers = providers
        self.custom_tool_factory = custom_tool_factory
        self.tool_hub = tool_hub
        self.cancel_grace = cancel_grace

    async def drive(self, run: Run) -> None:
        """Wait for the run's slot, execute it, and finish it (also when it is cancelled
        while queued or fails unexpectedly)."""
        outcome: LoopOutcome | None = None
        try:
            if not run.slot.admitted.is_set():
                with run.controls.cancel_scope():
                    await run.slot.admitted.wait()
            if run.slot.admitted.is_set() and not run.controls.cancel_requested:
                outcome = await self.execute(run)
        except Exception as exc:
            if isinstance(exc, StoreFull):
                log.error("run %s failed: %s", run.run_id, exc)
                outcome = outcome_so_far(run, "failed", StoreFull.code, str(exc))
            else:
                log.exception("run %s failed unexpectedly", run.run_id)
                outcome = outcome_so_far(run, "failed", "internal", f"internal error: {exc!r}")
            with anyio.CancelScope(shield=True):
                try:
                    await run.events.emit("error", **(outcome.error or {}))
                except Exception:
                    log.exception("run %s: could not report its failure", run.run_id)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.finish(run, outcome)
                except Exception:
                    log.exception("finishing run %s failed", run.run_id)

    async def execute(self, run: Run) -> LoopOutcome:
        """Run the agent loop for an admitted run."""
        spec = run.agent.spec
        started_at = utc_now()
        env = {**self.env, **spec.env}
        async with contextlib.AsyncExitStack() as stack:
            try:
                provider, model_id = await stack.enter_async_context(
                    self.providers.provider(spec, env)
                )
            except (ValueError, ModelError) as exc:
                await run.update(self.store, status="running", started_at=started_at)
                await self._announce(run, run.record.model, [])
                message = f"cannot use model {run.record.model!r}: {exc}"
                await run.events.emit("error", message=message, code="model_error")
                return outcome_so_far(run, "failed", "model_error", message)
            return await self._execute_with(run, spec, provider, model_id, started_at)

    async def _execute_with(
        self, run: Run, spec: AgentSpec, provider: Provider, model_id: str, started_at: str
    ) -> LoopOutcome:
        await run.update(
            self.store,
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
                model_reference(spec),
                temperature=temperature,
                thinking_budget=spec.thinking_budget,
            )
        except ValueError:  # a model only the injected provider factory knows
            unsupported = []
        warnings = [problem.message() for problem in unsupported]
        for warning in warnings:
            log.warning("run %s: %s", run.run_id, warning)
        await self._announce(run, model_id, warnings)
        extra = await self._custom_tools(run)
        # What the thread's previous run left running (its dev server) carries on in this
        # run, which owns it from here: its outcome decides whether it lives on.
        run.toolbox = await self.toolboxes.checkout(run.pool_key, spec, extra)
        # A handed-over box serves this run now: tools that tell the outside which run a
        # call belongs to (custom tools) must name this one, not the previous run.
        run.toolbox.run_id = run.run_id
        await self.persist_messages(run, run.thread_seed, run.initial)
        run.loop = self._agent_loop(run, provider, model_id, temperature)
        return await run.loop.run(run.initial)

    async def finish(self, run: Run, outcome: LoopOutcome | None) -> None:
        """End the run: processes, record, the terminal `complete` event, the log."""
        async with run.control_lock:  # a control under way ends first; later ones are refused
            run.finishing = True
        if outcome is None:  # cancelled (or stopped by the manager) before it started
            outcome = outcome_so_far(run, "cancelled", None, "")
        status: str = outcome.status
        error = outcome.error
        if status == "cancelled" and run.interrupted:
            status = "interrupted"
            error = {"code": "interrupted", "message": run.interrupted}
            await run.events.emit("error", **error)
        toolbox, run.toolbox = run.toolbox, None
        if toolbox is not None:
            if status == "completed":
                await self.toolboxes.keep(run.pool_key, toolbox, toolbox_key(run.agent.spec))
            else:
                await self.toolboxes.discard(toolbox)
        await run.update(
            self.store,
            status=status,
            result=run.redactor.redact(outcome.result),
            error=error,
            usage=outcome.usage,
            iterations=outcome.iterations,
            finished_at=utc_now(),
        )
        recorder = run.thread_recorder
        if recorder is not None:
            run.events.observer = None
            try:
                await recorder.run_completed(
                    status=status,  # type: ignore[arg-type]  # a terminal status by now
                    usage=outcome.usage,
                    iterations=outcome.iterations,
                    result=run.redactor.redact(outcome.result),
                    error=None if error is None else run.redactor.redact_obj(error),
                )
            except Exception:
                # The run's own events must still end (its `complete` below).
                log.exception("run %s: recording run_completed on its thread failed", run.run_id)
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

    async def persist_messages(
        self, run: Run, new: list[Message], conversation: list[Message]
    ) -> None:
        """Append `new`, redacted, to the run's stored conversation (`conversation` is all of
        it, `new` its last messages): to its thread, if it has one, whose first messages the
        run's conversation then is. Only the new messages are written, so a turn costs what
        it adds, not what the thread holds."""
        redacted = [redact_message(m, run.redactor) for m in new]
        if redacted and run.thread_recorder is not None:
            # The thread's persisted events first: its rollout must never lack a message
            # the store has (a crash in between leaves at most the events ahead).
            await run.thread_recorder.messages_appended(redacted)
        if await self.store.append_run_messages(
            run.run_id, redacted, thread_id=run.thread_id, length=len(conversation)
        ):
            return
        # The stored log and the conversation went apart (the thread got messages from
        # elsewhere during the run): the run keeps a whole copy of its own from here on.
        log.warning(
            "run %s: its thread's stored messages are not its conversation; "
            "storing the run's conversation whole",
            run.run_id,
        )
        await self.store.set_run_messages(
            run.run_id, [redact_message(m, run.redactor) for m in conversation]
        )

    async def _announce(self, run: Run, model: str | None, warnings: list[str]) -> None:
        """`run_started` on the run's events and its thread's; from here on the run's events
        also feed the thread's live events."""
        spec = run.agent.spec
        await run.events.emit(
            "run_started",
            agent=spec.slug,
            version=run.agent.version,
            threadId=run.thread_id,
            model=model,
            **({"warnings": warnings} if warnings else {}),
        )
        if run.thread_id is None:
            return  # the caller keeps the history (`messages`): no thread to feed
        recorder = await self.threads.record(run.run_id, run.thread_id)
        await recorder.run_started(agent=spec.slug, version=run.agent.version, model=model)
        run.thread_recorder = recorder
        run.events.observer = lambda event: recorder.run_event(event.type, event.payload)

    async def _custom_tools(self, run: Run) -> list[Tool]:
        """The agent's custom tools, or none (said in an `error` event) when this daemon
        cannot make them."""
        custom = run.agent.spec.custom_tools()
        tools: list[Tool] = []
        if custom and self.custom_tool_factory is not None:
            tools = [self.custom_tool_factory(tool) for tool in custom]
        elif custom:
            names = ", ".join(tool.name for tool in custom)
            await run.events.emit(
                "error",
                message=f"custom tools are not available in this daemon: {names}; "
                "the run continues without them",
                code="custom_tools_unavailable",
            )
        return tools + await self._hub_tools(run)

    async def _hub_tools(self, run: Run) -> list[Tool]:
        """The agent's Tool Hub tools, described by the hub as the run starts; one the hub no
        longer has (or cannot describe now) is left out, said in an `error` event."""
        slugs = run.agent.spec.unknown_tools()
        if not slugs or self.tool_hub is None:
            return []
        tools: list[Tool] = []
        for slug in slugs:
            try:
                described = await self.tool_hub.describe(slug)
            except ToolHubError as exc:
                problem = str(exc)
            else:
                if described is not None:
                    tools.append(self.tool_hub.tool(slug, described))
                    continue
                problem = f"the Tool Hub has no tool {slug!r} any more"
            await run.events.emit(
                "error",
                message=f"{problem}; the run continues without {slug}",
                code="tool_hub_unavailable",
            )
        return tools

    def _agent_loop(
        self, run: Run, provider: Provider, model_id: str, temperature: float | None
    ) -> AgentLoop:
        spec = run.agent.spec
        assert run.toolbox is not None
        loop = AgentLoop(
            provider,
            run.toolbox,
            run.events,
            tool_specs=[
                *toolbox_specs(run.toolbox),
                *(hosted_tool_spec(name) for name in spec.hosted_tools()),
            ],
            system=spec.system_prompt or None,
            settings=ModelSettings(
                model=model_id,
                max_tokens=run.config.max_tokens or spec.max_tokens or 8192,
                temperature=temperature,
                thinking_budget=spec.thinking_budget,
            ),
            max_iterations=run.config.max_turns or spec.max_iterations,
            context_window=(
                run.config.context_window
                or spec.context_window
                or default_context_window(model_reference(spec))
            ),
            compact_at=run.config.compact_at or spec.compact_at,
            fail_on_limit=spec.fail_on_limit,
            redactor=run.redactor,
            controls=run.controls,
            timeout=run.config.timeout or spec.timeout,
            metrics=self.metrics,
        )

        async def on_messages(new: list[Message]) -> None:
            await self.persist_messages(run, new, loop.messages)

        loop.on_messages = on_messages
        return loop


def outcome_so_far(run: Run, status: LoopStatus, code: str | None, message: str) -> LoopOutcome:
    """The outcome of a run its loop did not end (or never started): what the loop has so
    far, with `status` and, if `code` is given, the error."""
    loop = run.loop
    return LoopOutcome(
        status=status,
        result=loop.result if loop else "",
        usage=loop.usage if loop else Usage(),
        iterations=loop.iterations if loop else 0,
        messages=list(loop.messages) if loop else list(run.initial),
        error=None if code is None else {"code": code, "message": message},
        files=loop.files if loop else [],
        dev_url=loop.dev_url if loop else None,
    )


__all__ = ["CustomToolFactory", "RunLifecycle", "outcome_so_far"]
