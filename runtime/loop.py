"""The agent loop: a model turn, the tool calls it asked for, their results, the next turn.

`AgentLoop.run(messages)` drives one run until the model answers without tool calls, a limit
is hit, the model fails for good, the run is cancelled or its timeout expires. It never
raises for any of those: the outcome is a `LoopOutcome` value, and everything observers need
to know went out as events on the run's `EventLog` first. The loop does not emit
`run_started` or the terminal `complete`; the `RunManager` owns the run's beginning and end
(it must, for example, kill the run's processes before announcing a cancelled run).

The conversation the loop keeps is valid at every commit point: an assistant message with
tool calls is always followed by a tool message with one result per call (calls that never
ran because the run was cancelled or timed out get an error result saying so), and a turn
whose stream was cut off is never appended. So a thread continued after any outcome, even a
crash between commits, can be sent to a provider as is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio

from runtime.compaction import CompactionFailed, Compactor, ContextMeter, model_view
from runtime.messages import Message, Part, ToolCallPart, ToolResultPart
from runtime.providers.base import (
    AssistantTurn,
    HostedToolCall,
    HostedToolResult,
    ModelError,
    ModelSettings,
    Provider,
    StreamRestarted,
    TextDelta,
    ThinkingDelta,
    Usage,
)
from runtime.store import StoreFull
from runtime.workspace_watch import PORT_POLL_S, WorkspaceWatch
from tools.base import Toolbox, ToolResult

log = logging.getLogger("agentd.loop")

LoopStatus = Literal["completed", "failed", "cancelled"]

CONTINUE_AFTER_MAX_TOKENS = (
    "Your previous reply was cut off because it reached the max_tokens limit. "
    "Continue exactly where it stopped, without repeating what you already wrote."
)


class EventSink(Protocol):
    """What the loop needs from the run's `EventLog`."""

    async def emit(self, type: str, **payload: Any) -> Any: ...

    async def emit_delta(self, type: Literal["text", "thinking"], content: str) -> Any: ...


class ChunkRedactor(Protocol):
    """What the loop needs from `runtime.events.StreamRedactor`."""

    def feed(self, chunk: str) -> str: ...

    def flush(self) -> str: ...


class TextRedactor(Protocol):
    """What the loop needs from `runtime.events.Redactor`."""

    def redact(self, text: str) -> str: ...

    def stream(self) -> ChunkRedactor: ...


class RunControls:
    """A user's hold on one run: pause/resume, cancel, and input for the next turn.

    The loop calls `checkpoint()` at every safe point (before each model call and before each
    tool call); while the run is paused it waits there. Work already under way (a model
    stream, a running command) is never interrupted by a pause. `cancel()` cancels every
    scope the run registered with `cancel_scope()`, wherever the run is, including a pause.
    """

    def __init__(self) -> None:
        self._paused = False
        self._resumed = anyio.Event()
        self._parked = False
        self._parked_changed = anyio.Event()
        self._inputs: list[str] = []
        self._inputs_closed = False
        self._scopes: set[anyio.CancelScope] = set()
        self.cancel_requested = False
        # Awaited once per pause, when the loop has actually stopped at a safe point (the
        # run manager announces `paused` there).
        self.on_parked: Callable[[], Awaitable[None]] | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def parked(self) -> bool:
        """True while the loop is waiting at a safe point because the run is paused."""
        return self._parked

    def pause(self) -> bool:
        """Ask the run to stop at its next safe point. Returns False if already paused."""
        if self._paused:
            return False
        self._paused = True
        self._resumed = anyio.Event()
        return True

    def resume(self) -> bool:
        """Let a paused run continue. Returns False if it was not paused."""
        if not self._paused:
            return False
        self._paused = False
        self._resumed.set()
        return True

    def cancel(self) -> None:
        self.cancel_requested = True
        for scope in list(self._scopes):
            scope.cancel()

    @contextmanager
    def cancel_scope(self) -> Iterator[anyio.CancelScope]:
        """A scope that `cancel()` cancels; already cancelled if cancel came first.

        Use as `with controls.cancel_scope() as scope:`; it unregisters itself on exit.
        """
        scope = anyio.CancelScope()
        if self.cancel_requested:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def add_input(self, text: str) -> bool:
        """Queue `text` for the next turn; False (nothing queued) once the loop has decided
        that its last turn was the last (`close_inputs`), so no accepted input goes
        unanswered."""
        if self._inputs_closed:
            return False
        self._inputs.append(text)
        return True

    @property
    def has_input(self) -> bool:
        return bool(self._inputs)

    def close_inputs(self) -> bool:
        """At the end of a final turn: stop taking input, unless some is waiting (then False,
        and the loop answers it). One step, so an input either arrives before it and is
        answered or after it and is refused."""
        if self._inputs:
            return False
        self._inputs_closed = True
        return True

    def take_inputs(self) -> list[str]:
        taken, self._inputs = self._inputs, []
        return taken

    async def checkpoint(self) -> None:
        """A safe point: returns at once unless the run is paused, then when it is resumed."""
        while self._paused:
            if self.on_parked is not None:
                with anyio.CancelScope(shield=True):
                    await self.on_parked()
            self._set_parked(True)
            try:
                await self._resumed.wait()
            finally:
                self._set_parked(False)

    async def wait_parked(self) -> None:
        """Wait until the loop has actually stopped at a safe point for a pause."""
        while not self._parked:
            await self._parked_changed.wait()

    def _set_parked(self, parked: bool) -> None:
        self._parked = parked
        changed, self._parked_changed = self._parked_changed, anyio.Event()
        changed.set()


@dataclass
class LoopOutcome:
    """How a run ended. `error` is `{code, message}`: the failure, or the note explaining why
    a completed run stopped early (an iteration or max_tokens limit)."""

    status: LoopStatus
    result: str
    usage: Usage
    iterations: int
    messages: list[Message]
    error: dict[str, str] | None = None
    files: list[str] = field(default_factory=list)
    dev_url: str | None = None


class LoopMetrics(Protocol):
    """Counters the loop reports to (the RunManager's metrics object)."""

    def tool_call_finished(self, tool: str, seconds: float, is_error: bool) -> None: ...

    def model_turn_finished(self, usage: Usage, seconds: float) -> None: ...


MessagesCallback = Callable[[list[Message]], Awaitable[None]]


class _Stop(Exception):
    """Internal: ends the turn loop with an outcome."""

    def __init__(self, status: LoopStatus, code: str | None = None, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class AgentLoop:
    """Runs one conversation against a provider and a toolbox, emitting events as it goes.

    `on_messages` is awaited with the messages appended since the previous call whenever the
    conversation is in a consistent state (after a final answer, after a turn's tool
    results, after user input), so a caller can persist progress that survives a crash.
    """

    def __init__(
        self,
        provider: Provider,
        toolbox: Toolbox,
        events: EventSink,
        *,
        system: str | None,
        settings: ModelSettings,
        max_iterations: int,
        fail_on_limit: bool = False,
        redactor: TextRedactor | None = None,
        controls: RunControls | None = None,
        timeout: float | None = None,
        on_messages: MessagesCallback | None = None,
        metrics: LoopMetrics | None = None,
        tool_specs: list[dict[str, Any]] | None = None,
        context_window: int | None = None,
        compact_at: float | None = None,
        port_poll_s: float | None = PORT_POLL_S,
    ) -> None:
        self.provider = provider
        self.toolbox = toolbox
        self.events = events
        self.system = system
        self.settings = settings
        self.max_iterations = max_iterations
        self.fail_on_limit = fail_on_limit
        self.redactor = redactor
        self.controls = controls or RunControls()
        self.timeout = timeout
        self.on_messages = on_messages
        self.metrics = metrics
        self.tool_specs = toolbox.specs() if tool_specs is None else tool_specs
        # With a context window the conversation is compacted before it would overflow it.
        self.compactor: Compactor | None = None
        if context_window is not None:
            self.compactor = Compactor(
                provider,
                system,
                self.tool_specs,
                settings,
                context_window,
                compact_at or 0.8,
                on_summary=self._summary_answered,
            )
        self.meter = ContextMeter()
        self.messages: list[Message] = []
        self.usage = Usage()
        self.iterations = 0
        self.result = ""
        self.artifacts = ToolArtifacts()
        # Files commands change and ports the run's processes open (None: ports not watched).
        self.port_poll_s = port_poll_s
        self._watch: WorkspaceWatch | None = None
        self._committed = 0
        # The turn whose tool calls are executing: (calls, results by position).
        self._inflight: tuple[list[ToolCallPart], list[ToolResultPart | None]] | None = None
        # The in-flight calls whose tool_call event was emitted, and when
        self._announced: dict[str, float] = {}

    @property
    def files(self) -> list[str]:
        """The workspace files the run's tools changed so far (see `ToolArtifacts`)."""
        return list(self.artifacts.files)

    @property
    def dev_url(self) -> str | None:
        """The last dev URL a tool of the run reported."""
        return self.artifacts.dev_url

    async def run(self, messages: list[Message]) -> LoopOutcome:
        """Drive the conversation to an outcome. Never raises for model, tool or limit
        failures, cancellation or timeout; those become the outcome and events."""
        self.messages = list(messages)
        self._committed = len(self.messages)
        stop: _Stop | None = None
        timed_out = False
        cancelled = False
        with self.controls.cancel_scope() as cancel_scope:
            deadline = math.inf if self.timeout is None else anyio.current_time() + self.timeout
            with anyio.CancelScope(deadline=deadline) as timeout_scope:
                async with anyio.create_task_group() as watching:
                    watch = self._watch = await WorkspaceWatch.open(
                        self.toolbox, self.events, self.artifacts, port_poll_s=self.port_poll_s
                    )
                    watching.start_soon(watch.run)
                    try:
                        stop = await self._turns()
                        await watch.finish()
                    except _Stop as raised:  # from deep inside a turn (a failed compaction)
                        stop = raised
                    except ModelError as exc:
                        stop = _Stop("failed", "model_error", _describe_model_error(exc))
                    except StoreFull as exc:  # the run's state cannot be written
                        log.error("run stopped: %s", exc)
                        stop = _Stop("failed", StoreFull.code, str(exc))
                    except Exception as exc:
                        log.exception("agent loop failed unexpectedly")
                        stop = _Stop("failed", "internal", f"internal error: {type(exc).__name__}")
                    finally:
                        watching.cancel_scope.cancel()
            timed_out = timeout_scope.cancelled_caught
        cancelled = cancel_scope.cancel_called and stop is None

        if cancelled:
            # (the daemon shutting down cancels its runs too: they end `interrupted`)
            await self._close_inflight(
                "the run was stopped (cancelled, or the daemon shut down) before this tool "
                "call finished"
            )
            stop = _Stop("cancelled")
        elif timed_out and stop is None:
            await self._close_inflight("the run's timeout expired before this tool call finished")
            stop = _Stop("failed", "timeout", f"the run exceeded its timeout of {self.timeout:g} s")
        assert stop is not None
        with anyio.CancelScope(shield=True):
            if stop.code is not None:
                await self.events.emit("error", message=stop.message, code=stop.code)
            await self._commit()
        error = None if stop.code is None else {"code": stop.code, "message": stop.message}
        return LoopOutcome(
            status=stop.status,
            result=self.result,
            usage=self.usage,
            iterations=self.iterations,
            messages=list(self.messages),
            error=error,
            files=self.files,
            dev_url=self.dev_url,
        )

    async def _turns(self) -> _Stop:
        continued_after_truncation = False
        while True:
            await self.controls.checkpoint()
            await self._take_inputs()
            if self.iterations >= self.max_iterations:
                turns = "1 model turn" if self.iterations == 1 else f"{self.iterations} model turns"
                return self._limit(
                    "max_iterations",
                    f"stopped after {turns}: the iteration limit ({self.max_iterations}) was "
                    "reached",
                )
            compacted = await self._compact_if_needed()
            try:
                turn = await self._model_turn()
            except ModelError as exc:
                # The estimate was short of the provider's own count: compact, try once more.
                if self.compactor is None or compacted or not _is_context_overflow(exc):
                    raise
                await self.compact(reason="overflow")
                turn = await self._model_turn()
            self.iterations += 1
            await self._spent(turn.usage)
            if turn.content:
                self.messages.append(Message(role="assistant", content=turn.content))
            if turn.text:
                self.result = turn.text
            truncated = turn.stop_reason == "max_tokens"
            if turn.tool_calls:
                await self._run_tools(turn.tool_calls)
                await self._commit()
                continue
            await self._commit()
            if truncated:
                if continued_after_truncation:
                    return self._limit(
                        "max_tokens",
                        "the model's reply was cut off at the max_tokens limit again after "
                        "being asked to continue; stopping with the partial reply",
                    )
                continued_after_truncation = True
                self.messages.append(Message.user(CONTINUE_AFTER_MAX_TOKENS))
                await self._commit()
                continue
            continued_after_truncation = False
            if self.controls.paused:
                # A pause asked for during the final turn stops the run here, before it ends,
                # as it would before a next turn: input given meanwhile is answered, and a
                # resume without any ends the run.
                await self.controls.checkpoint()
            if not self.controls.close_inputs():
                # Input that arrived during the final turn is answered, not dropped.
                continue
            return _Stop("completed")

    def _limit(self, code: str, message: str) -> _Stop:
        return _Stop("failed" if self.fail_on_limit else "completed", code, message)

    async def _take_inputs(self) -> None:
        texts = self.controls.take_inputs()
        if not texts:
            return
        for text in texts:
            self.messages.append(Message.user(text))
        await self._commit()

    async def _compact_if_needed(self) -> bool:
        """Compact once before this turn if its request would pass the threshold."""
        compactor = self.compactor
        if compactor is None or not compactor.needs_compaction(self.meter, self.messages):
            return False
        await self.compact(reason="auto")
        return True

    async def compact(self, *, reason: Literal["auto", "overflow"]) -> None:
        """Compact the conversation now (see `runtime.compaction`); `_Stop` with
        `context_overflow` when it cannot be brought under the threshold."""
        compactor = self.compactor
        assert compactor is not None
        before = compactor.tokens(self.meter, model_view(self.messages))
        await self.events.emit(
            "compaction_started",
            reason=reason,
            tokensBefore=before,
            contextWindow=compactor.context_window,
            threshold=compactor.threshold,
        )
        try:
            record = await compactor.compact(self.meter, self.messages, reason=reason)
        except CompactionFailed as exc:
            await self._compaction_failed(reason, before, "context_overflow", str(exc))
            raise _Stop("failed", "context_overflow", str(exc)) from exc
        except ModelError as exc:
            await self._compaction_failed(reason, before, "model_error", _describe_model_error(exc))
            raise
        except anyio.get_cancelled_exc_class():
            await self._compaction_failed(
                reason, before, "cancelled", "the run stopped before the compaction finished"
            )
            raise
        except StoreFull:
            raise
        except Exception as exc:
            await self._compaction_failed(
                reason, before, "internal", f"internal error: {type(exc).__name__}"
            )
            raise
        self.messages.append(record)
        await self._commit()
        part = record.compaction
        assert part is not None
        await self.events.emit(
            "compaction_completed",
            reason=reason,
            tokensBefore=part.tokens_before,
            tokensAfter=part.tokens_after,
            messagesReplaced=part.messages_replaced,
            summarized=part.summarized,
            stubbedOutputs=len(part.stubbed),
        )

    async def _spent(self, usage: Usage, **marks: Any) -> None:
        """A model request's tokens: added to the run's usage, and its `usage` event."""
        self.usage = self.usage + usage
        await self.events.emit("usage", **usage.model_dump(by_alias=True), **marks)

    async def _summary_answered(self, usage: Usage, seconds: float) -> None:
        """A compaction's summary request was answered: its tokens are the run's as every
        model turn's are (usage, its `usage` event, the metrics), but it is no iteration."""
        if self.metrics is not None:
            self.metrics.model_turn_finished(usage, seconds)
        await self._spent(usage, compaction=True)

    async def _compaction_failed(
        self, reason: str, tokens_before: int, code: str, message: str
    ) -> None:
        """Close the `compaction_started` of a compaction that ended without a record, so the
        run's events say how every compaction they announced ended (the run's own `error`
        follows). Shielded: a cancelled run still says it."""
        with anyio.CancelScope(shield=True):
            await self.events.emit(
                "compaction_failed",
                reason=reason,
                tokensBefore=tokens_before,
                code=code,
                message=message,
            )

    async def _model_turn(self) -> AssistantTurn:
        started = time.perf_counter()
        conversation = model_view(self.messages)
        # Only a compacting loop measures its requests (O(what is new) per turn, see
        # MessageSizes); the size feeds the meter with the provider's reported usage.
        chars = 0 if self.compactor is None else self.compactor.request_chars(conversation)
        stream = self.provider.stream(self.system, conversation, self.tool_specs, self.settings)
        streamed = {"text": False, "thinking": False}
        hosted_started: dict[str, float] = {}
        try:
            async for item in stream:
                if isinstance(item, TextDelta):
                    if item.text:
                        streamed["text"] = True
                        await self.events.emit_delta("text", item.text)
                elif isinstance(item, ThinkingDelta):
                    if item.text:
                        streamed["thinking"] = True
                        await self.events.emit_delta("thinking", item.text)
                elif isinstance(item, HostedToolCall):
                    # The provider runs it (web search): reported like any tool call.
                    hosted_started[item.id] = time.perf_counter()
                    await self.events.emit(
                        "tool_call", callId=item.id, tool=item.name, input=item.input
                    )
                elif isinstance(item, HostedToolResult):
                    await self._hosted_result(item, hosted_started.pop(item.id, started))
                elif isinstance(item, StreamRestarted):
                    # Nothing partial is kept: the turn is taken from the final AssistantTurn.
                    # Observers already saw the partial deltas; tell them they restart.
                    await self.events.emit(
                        "error",
                        message=f"the model stream was interrupted ({item.reason}); "
                        f"retrying the turn (attempt {item.attempt})",
                        code="stream_restarted",
                    )
                elif isinstance(item, AssistantTurn):
                    # A provider that did not stream a part still has it shown once.
                    if item.thinking and not streamed["thinking"]:
                        await self.events.emit_delta("thinking", item.thinking)
                    if item.text and not streamed["text"]:
                        await self.events.emit_delta("text", item.text)
                    if self.metrics is not None:
                        self.metrics.model_turn_finished(item.usage, time.perf_counter() - started)
                    self.meter.observe(chars, item.usage.input_tokens)
                    return item
        finally:
            # Bounded, so a provider stuck closing its connection cannot delay a cancel.
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await _aclose(stream)
        raise ModelError("bad_response", "the model stream ended without a complete turn")

    async def _hosted_result(self, result: HostedToolResult, started: float) -> None:
        seconds = time.perf_counter() - started
        output = self.redactor.redact(result.output) if self.redactor else result.output
        if self.metrics is not None:
            self.metrics.tool_call_finished(result.name, seconds, result.is_error)
        await self.events.emit(
            "tool_result",
            callId=result.id,
            tool=result.name,
            output=output,
            isError=result.is_error,
            durationMs=round(seconds * 1000, 3),
        )

    async def _run_tools(self, calls: list[ToolCallPart]) -> None:
        results: list[ToolResultPart | None] = [None] * len(calls)
        self._inflight = (calls, results)
        self._announced.clear()
        if self._watch is not None:
            await self._watch.ready()  # changes are found against the state before the calls
        for batch in self._batches(calls):
            await self.controls.checkpoint()
            for index in batch:
                call = calls[index]
                tool_input: dict[str, Any] = call.arguments
                if call.raw_arguments is not None:
                    tool_input = {"rawArguments": call.raw_arguments}
                await self.events.emit(
                    "tool_call", callId=call.id, tool=call.name, input=tool_input
                )
                self._announced[call.id] = time.perf_counter()
            if len(batch) == 1:
                await self._call_tool(calls[batch[0]], batch[0], results, alone=True)
            else:
                try:
                    async with anyio.create_task_group() as tg:
                        for index in batch:
                            tg.start_soon(self._call_tool, calls[index], index, results)
                except ExceptionGroup as group:
                    # a full store ends the run as it does from a call that ran alone
                    full = group.subgroup(StoreFull)
                    if full is None:
                        raise
                    raise _first_leaf(full) from None
                if self._watch is not None:
                    # Concurrent calls are read-only: what changed meanwhile (a background
                    # process) is no one call's doing.
                    await self._watch.report_files(None)
        self._inflight = None
        content: list[Part] = [r for r in results if r is not None]
        self.messages.append(Message(role="tool", content=content))

    def _batches(self, calls: list[ToolCallPart]) -> list[list[int]]:
        """Consecutive read-only calls form one concurrent batch; any other call runs alone."""
        batches: list[list[int]] = []
        previous_read_only = False
        for index, call in enumerate(calls):
            read_only = call.raw_arguments is None and self.toolbox.is_read_only(call.name)
            if read_only and previous_read_only:
                batches[-1].append(index)
            else:
                batches.append([index])
            previous_read_only = read_only
        return batches

    async def _call_tool(
        self,
        call: ToolCallPart,
        index: int,
        results: list[ToolResultPart | None],
        *,
        alone: bool = False,
    ) -> None:
        """Run one call and emit its result; a call running `alone` first reports the file
        changes made while it ran, as its own (`callId`), before its result."""
        started = time.perf_counter()
        if call.raw_arguments is not None:
            result = ToolResult.error(_malformed_arguments(call), code="invalid_json")
        else:
            forward = _ToolEventForwarder(
                self.events, self.artifacts, self.redactor, call.id, self._watch
            )
            try:
                result = await self.toolbox.call(
                    call.name, call.arguments, call_id=call.id, on_event=forward
                )
            finally:
                with anyio.CancelScope(shield=True):
                    await forward.flush()
            if forward.store_full is not None:
                raise forward.store_full  # not the tool's failure: the run's (storage_full)
        seconds = time.perf_counter() - started
        if alone and self._watch is not None:
            await self._watch.report_files(call.id)
        output = self.redactor.redact(result.output) if self.redactor else result.output
        results[index] = ToolResultPart(
            call_id=call.id, output=output, is_error=result.is_error, name=call.name
        )
        if self.metrics is not None:
            self.metrics.tool_call_finished(call.name, seconds, result.is_error)
        # A command that stopped at a prompt says so (exec_command, write_stdin), so a
        # client can show that it waits for an answer; the field is absent otherwise.
        waiting = {"waitingForInput": True} if result.data.get("waiting_for_input") else {}
        await self.events.emit(
            "tool_result",
            callId=call.id,
            tool=call.name,
            output=output,
            isError=result.is_error,
            durationMs=round(seconds * 1000, 3),
            **waiting,
        )

    async def _close_inflight(self, reason: str) -> None:
        """Give every call of an interrupted turn a result, so the conversation stays valid,
        and a `tool_result` event to each whose `tool_call` was emitted, so that the run's
        events say how every call they announced ended, as its record and thread do."""
        if self._inflight is None:
            return
        calls, results = self._inflight
        self._inflight = None
        content: list[Part] = []
        for call, result in zip(calls, results, strict=True):
            if result is None:
                result = ToolResultPart(
                    call_id=call.id, output=reason, is_error=True, name=call.name
                )
                started = self._announced.get(call.id)
                if started is not None:
                    with anyio.CancelScope(shield=True):
                        await self.events.emit(
                            "tool_result",
                            callId=call.id,
                            tool=call.name,
                            output=reason,
                            isError=True,
                            durationMs=round((time.perf_counter() - started) * 1000, 3),
                        )
            content.append(result)
        self.messages.append(Message(role="tool", content=content))

    async def _commit(self) -> None:
        if self.on_messages is None or self._committed >= len(self.messages):
            self._committed = len(self.messages)
            return
        new = self.messages[self._committed :]
        self._committed = len(self.messages)
        # Shielded: a cancel landing mid-write must not leave the step half persisted.
        with anyio.CancelScope(shield=True):
            await self.on_messages(new)


class ToolArtifacts:
    """What a run's tools left that its `complete` event reports: the files they changed (in
    order of first change; a deleted or moved-away file is dropped) and the dev URL.

    Files come from the tools' own `file_edit` events and from the workspace watch (files
    commands changed); the dev URL is get_dev_url's last answer (with the path the model
    chose), or else the last port the watch saw open, until it closes."""

    def __init__(self) -> None:
        self.files: dict[str, None] = {}
        self.dev_url: str | None = None
        self._dev_url_watched = False
        self._reported: set[str] = set()  # paths tools reported since the watch last looked

    def note(self, event_type: str, payload: dict[str, Any]) -> None:
        """Take in one tool event (`file_edit` and `dev_url` matter; others are ignored)."""
        if event_type == "file_edit":
            path = payload.get("path")
            moved_from = payload.get("movedFrom")
            moved_from = moved_from if isinstance(moved_from, str) else None
            if isinstance(path, str):
                self._reported.update(p for p in (path, moved_from) if p is not None)
                self.note_file(path, str(payload.get("action")), moved_from)
        elif event_type == "dev_url" and isinstance(payload.get("url"), str):
            self.dev_url, self._dev_url_watched = payload["url"], False

    def note_file(self, path: str, action: str, moved_from: str | None) -> None:
        if moved_from is not None:
            self.files.pop(moved_from, None)
        if action == "delete":
            self.files.pop(path, None)
        else:
            self.files[path] = None

    def note_port(self, opened: bool, url: str) -> None:
        if opened and (self.dev_url is None or self._dev_url_watched):
            self.dev_url, self._dev_url_watched = url, True
        elif not opened and self._dev_url_watched and self.dev_url == url:
            self.dev_url = None

    def take_reported(self) -> set[str]:
        """The paths tools reported themselves since the last call (not to report again)."""
        reported, self._reported = self._reported, set()
        return reported


class _ToolEventForwarder:
    """Forwards one tool call's events to the run's log; live output goes through a streaming
    redactor so a secret split across two chunks is still caught."""

    def __init__(
        self,
        events: EventSink,
        artifacts: ToolArtifacts,
        redactor: TextRedactor | None,
        call_id: str,
        watch: WorkspaceWatch | None = None,
    ) -> None:
        self._events = events
        self._artifacts = artifacts
        self._watch = watch
        self._call_id = call_id
        self._stream = redactor.stream() if redactor is not None else None
        # The run's store was full when an event of the call was written: the tool sees a
        # failed callback (and may report it as its own error), the run must end on it.
        self.store_full: StoreFull | None = None

    async def __call__(self, event: dict[str, Any]) -> None:
        payload = dict(event)
        event_type = str(payload.pop("type"))
        if event_type == "tool_output":
            payload.setdefault("callId", self._call_id)
            if self._stream is not None:
                payload["chunk"] = self._stream.feed(str(payload.get("chunk", "")))
                if not payload["chunk"]:
                    return
        elif event_type == "file_edit":
            # The call that made it, as for the changes a command made (the workspace watch).
            payload.setdefault("callId", self._call_id)
            # Paths are reported in the documented form: `/src/App.tsx`, from the workspace
            # root (the file APIs take and give the same form).
            for key in ("path", "movedFrom"):
                if isinstance(payload.get(key), str):
                    payload[key] = "/" + payload[key].lstrip("/")
            if self._watch is not None:  # not for other runs on the workspace to claim
                self._watch.tool_wrote(
                    p for p in (payload.get("path"), payload.get("movedFrom")) if isinstance(p, str)
                )
        self._artifacts.note(event_type, payload)
        await self._emit(event_type, payload)

    async def flush(self) -> None:
        if self._stream is None:
            return
        rest = self._stream.flush()
        if rest:
            await self._emit("tool_output", {"callId": self._call_id, "chunk": rest})

    async def _emit(self, event_type: str, payload: dict[str, Any]) -> None:
        try:
            await self._events.emit(event_type, **payload)
        except StoreFull as exc:
            self.store_full = self.store_full or exc
            raise


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _malformed_arguments(call: ToolCallPart) -> str:
    raw = call.raw_arguments or ""
    shown = raw if len(raw) <= 500 else raw[:500] + f"… ({len(raw)} characters)"
    return (
        f"The arguments of this {call.name} call are not a valid JSON object, so the tool was "
        f"not run. You sent: {shown!r}. Call {call.name} again with the arguments as one JSON "
        "object that matches the tool's schema (check quoting and escaping, and do not cut "
        "the object short)."
    )


_CONTEXT_OVERFLOW_PHRASES = (
    "prompt is too long",  # Anthropic
    "context_length_exceeded",  # OpenAI's error code
    "maximum context length",  # OpenAI Chat, most compatible servers
    "exceeds the context window",  # OpenAI Responses
    "input token count",  # Gemini ("...exceeds the maximum number of tokens allowed")
)


def _is_context_overflow(exc: ModelError) -> bool:
    """A refusal because the request is larger than the model's context window."""
    text = f"{exc.code} {exc.message}".lower()
    return exc.code == "invalid_request" and any(p in text for p in _CONTEXT_OVERFLOW_PHRASES)


def _describe_model_error(exc: ModelError) -> str:
    status = f" (HTTP {exc.status})" if exc.status else ""
    return f"the model call failed{status}: {exc.code}: {exc.message}"


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
