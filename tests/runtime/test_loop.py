"""The agent loop against a scripted provider and real Toolboxes: turns, tools, stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.events import EventLog, Redactor
from runtime.loop import CONTINUE_AFTER_MAX_TOKENS, AgentLoop, LoopOutcome, RunControls
from runtime.messages import Message, TextPart, ToolCallPart
from runtime.providers.base import (
    AssistantTurn,
    ModelError,
    ModelSettings,
    StreamRestarted,
    TextDelta,
    Usage,
)
from runtime.store import StoreFull
from tests.fakes.scripted_provider import Gate, ScriptedProvider, call, text_turn, tool_turn
from tools.base import Tool, ToolArgs, Toolbox, ToolContext, ToolResult


class RecordingEvents:
    """The loop's event sink, recording `(type, payload)`; deltas kept as they came."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.changed = anyio.Event()

    async def emit(self, type: str, **payload: Any) -> None:
        self.events.append((type, payload))
        self.changed.set()
        self.changed = anyio.Event()

    async def emit_delta(self, type: str, content: str) -> None:
        await self.emit(type, content=content)

    @property
    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    def of(self, type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == type]

    async def wait_for(self, type: str, count: int = 1) -> None:
        with anyio.fail_after(5):
            while len(self.of(type)) < count:
                await self.changed.wait()


class EchoArgs(ToolArgs):
    text: str


class Echo(Tool):
    name = "echo"
    description = "Echo text back, streaming it as output."
    Args = EchoArgs
    read_only = True

    async def run(self, args: EchoArgs, ctx: ToolContext) -> ToolResult:
        await ctx.emit("tool_output", chunk=args.text)
        return ToolResult(output=f"echo: {args.text}")


class WaitArgs(ToolArgs):
    key: str


class Rendezvous(Tool):
    """Read-only; every call waits until `expected` calls have started (proves concurrency)."""

    name = "rendezvous"
    description = "Wait for the others."
    Args = WaitArgs
    read_only = True

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started: list[str] = []
        self.all_started = anyio.Event()

    async def run(self, args: WaitArgs, ctx: ToolContext) -> ToolResult:
        self.started.append(args.key)
        if len(self.started) == self.expected:
            self.all_started.set()
        await self.all_started.wait()
        return ToolResult(output=f"met {args.key}")


class NoteArgs(ToolArgs):
    path: str
    text: str


class WriteNote(Tool):
    """A writing tool: records the order of calls, writes a file and emits file_edit."""

    name = "write_note"
    description = "Write a note."
    Args = NoteArgs

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def run(self, args: NoteArgs, ctx: ToolContext) -> ToolResult:
        self.log.append(f"start {args.path}")
        await anyio.sleep(0)
        target = ctx.resolve(args.path)
        action = "modify" if target.exists() else "create"
        target.write_text(args.text)
        await ctx.emit("file_edit", path=args.path, action=action, diff=f"+{args.text}")
        self.log.append(f"end {args.path}")
        return ToolResult(output=f"wrote {args.path}")


class Blocker(Tool):
    """Blocks until `release` is set; `entered` says the call is under way."""

    name = "block"
    description = "Block."
    Args = WaitArgs

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.finished = False

    async def run(self, args: WaitArgs, ctx: ToolContext) -> ToolResult:
        self.entered.set()
        await self.release.wait()
        self.finished = True
        return ToolResult(output=f"unblocked {args.key}")


SETTINGS = ModelSettings(model="scripted-1", max_tokens=256)


def make_loop(
    provider: ScriptedProvider,
    box: Toolbox,
    events: RecordingEvents,
    **kwargs: Any,
) -> AgentLoop:
    kwargs.setdefault("max_iterations", 10)
    return AgentLoop(provider, box, events, system="be brief", settings=SETTINGS, **kwargs)


async def test_multi_turn_run_with_tools_emits_the_exact_event_sequence(workspace: Path) -> None:
    provider = ScriptedProvider(
        [
            tool_turn(call("c1", "echo", {"text": "hi"}), text="Let me echo."),
            text_turn("Echoed: hi", chunks=2),
        ]
    )
    events = RecordingEvents()
    committed: list[list[Message]] = []

    async def on_messages(new: list[Message]) -> None:
        committed.append(new)

    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()]) as box:
        loop = make_loop(provider, box, events, on_messages=on_messages)
        outcome = await loop.run([Message.user("echo hi")])

    assert events.events == [
        ("text", {"content": "Let me echo."}),
        ("usage", Usage(input_tokens=10, output_tokens=5).model_dump(by_alias=True)),
        ("tool_call", {"callId": "c1", "tool": "echo", "input": {"text": "hi"}}),
        ("tool_output", {"callId": "c1", "chunk": "hi"}),
        (
            "tool_result",
            {
                "callId": "c1",
                "tool": "echo",
                "output": "echo: hi",
                "isError": False,
                "durationMs": events.of("tool_result")[0]["durationMs"],
            },
        ),
        ("text", {"content": "Echoe"}),
        ("text", {"content": "d: hi"}),
        ("usage", Usage(input_tokens=10, output_tokens=5).model_dump(by_alias=True)),
    ]
    assert outcome.status == "completed" and outcome.error is None
    assert outcome.result == "Echoed: hi"
    assert outcome.iterations == 2
    assert outcome.usage == Usage(input_tokens=20, output_tokens=10)
    assert [m.role for m in outcome.messages] == ["user", "assistant", "tool", "assistant"]
    assert outcome.messages[2].tool_results[0].output == "echo: hi"
    # The second model call saw the tool result; both saw the system prompt and the tool.
    second = provider.calls[1]
    assert second.system == "be brief" and [t["name"] for t in second.tools] == ["echo"]
    assert second.messages[-1].tool_results[0].call_id == "c1"
    # Progress was handed over at consistent points only: assistant+tool, then the answer.
    assert [[m.role for m in batch] for batch in committed] == [
        ["assistant", "tool"],
        ["assistant"],
    ]


async def test_read_only_calls_run_concurrently_and_writes_in_order(workspace: Path) -> None:
    order: list[str] = []
    meet = Rendezvous(expected=2)
    provider = ScriptedProvider(
        [
            tool_turn(
                call("r1", "rendezvous", {"key": "a"}),
                call("r2", "rendezvous", {"key": "b"}),
                call("w1", "write_note", {"path": "one.txt", "text": "1"}),
                call("w2", "write_note", {"path": "two.txt", "text": "2"}),
                call("w3", "write_note", {"path": "one.txt", "text": "3"}),
            ),
            text_turn("done"),
        ]
    )
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[], extra_tools=[meet, WriteNote(order)]) as box:
        with anyio.fail_after(5):  # the rendezvous deadlocks if the reads ran one by one
            outcome = await make_loop(provider, box, events).run([Message.user("go")])

    assert outcome.status == "completed"
    assert sorted(meet.started) == ["a", "b"]
    assert order == [
        "start one.txt",
        "end one.txt",
        "start two.txt",
        "end two.txt",
        "start one.txt",
        "end one.txt",
    ]
    assert (workspace / "one.txt").read_text() == "3"
    # Reported in the documented form, from the workspace root.
    assert [p["path"] for p in events.of("file_edit")] == ["/one.txt", "/two.txt", "/one.txt"]
    assert outcome.files == ["/one.txt", "/two.txt"]
    # Results are in call order in the conversation, whatever order they finished in.
    results = outcome.messages[2].tool_results
    assert [r.call_id for r in results] == ["r1", "r2", "w1", "w2", "w3"]


async def test_tool_errors_and_malformed_arguments_go_back_to_the_model(workspace: Path) -> None:
    bad = ToolCallPart(id="c1", name="echo", raw_arguments='{"text": "unterminated')
    provider = ScriptedProvider(
        [
            tool_turn(bad, call("c2", "nope", {})),
            tool_turn(call("c3", "echo", {"text": 5})),
            tool_turn(call("c4", "echo", {"text": "fixed"})),
            text_turn("ok"),
        ]
    )
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()]) as box:
        outcome = await make_loop(provider, box, events).run([Message.user("go")])

    assert outcome.status == "completed" and outcome.result == "ok"
    first_results = provider.calls[1].messages[-1].tool_results
    assert first_results[0].is_error and "not a valid JSON object" in first_results[0].output
    assert '{"text": "unterminated' in first_results[0].output
    assert first_results[1].is_error and "Unknown tool 'nope'" in first_results[1].output
    second_results = provider.calls[2].messages[-1].tool_results
    assert second_results[0].is_error and "text" in second_results[0].output
    assert events.of("tool_call")[0]["input"] == {"rawArguments": '{"text": "unterminated'}
    assert [r["isError"] for r in events.of("tool_result")] == [True, True, True, False]
    assert "error" not in events.types


@pytest.mark.parametrize("fail_on_limit", [False, True])
async def test_iteration_limit_stops_the_run(workspace: Path, fail_on_limit: bool) -> None:
    provider = ScriptedProvider(
        [tool_turn(call(f"c{i}", "echo", {"text": str(i)})) for i in range(5)]
    )
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()]) as box:
        loop = make_loop(provider, box, events, max_iterations=2, fail_on_limit=fail_on_limit)
        outcome = await loop.run([Message.user("loop forever")])

    assert len(provider.calls) == 2 and outcome.iterations == 2
    assert outcome.status == ("failed" if fail_on_limit else "completed")
    assert outcome.error is not None and outcome.error["code"] == "max_iterations"
    assert events.events[-1] == ("error", outcome.error)
    assert "iteration limit (2)" in outcome.error["message"]
    # The conversation ends consistently: the last tool calls have their results.
    assert outcome.messages[-1].role == "tool"


async def test_max_tokens_continues_once_then_reports(workspace: Path) -> None:
    provider = ScriptedProvider(
        [
            text_turn("part one", stop_reason="max_tokens"),
            text_turn("part two", stop_reason="max_tokens"),
        ]
    )
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[]) as box:
        outcome = await make_loop(provider, box, events).run([Message.user("write a lot")])

    assert len(provider.calls) == 2
    assert provider.calls[1].messages[-1] == Message.user(CONTINUE_AFTER_MAX_TOKENS)
    assert outcome.status == "completed" and outcome.result == "part two"
    assert outcome.error is not None and outcome.error["code"] == "max_tokens"
    assert events.of("error") == [outcome.error]


async def test_max_tokens_continuation_that_finishes_completes_cleanly(workspace: Path) -> None:
    provider = ScriptedProvider(
        [text_turn("part one", stop_reason="max_tokens"), text_turn("the end")]
    )
    async with Toolbox(workspace, enabled=[]) as box:
        outcome = await make_loop(provider, box, RecordingEvents()).run([Message.user("go")])
    assert (outcome.status, outcome.result, outcome.error) == ("completed", "the end", None)


async def test_model_error_fails_the_run(workspace: Path) -> None:
    provider = ScriptedProvider(
        [
            tool_turn(call("c1", "echo", {"text": "x"})),
            ModelError("overloaded", "try later", status=529),
        ]
    )
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()]) as box:
        outcome = await make_loop(provider, box, events).run([Message.user("go")])

    assert outcome.status == "failed" and outcome.iterations == 1
    assert outcome.error is not None and outcome.error["code"] == "model_error"
    assert "overloaded" in outcome.error["message"] and "529" in outcome.error["message"]
    assert events.events[-1] == ("error", outcome.error)
    assert provider.abandoned == 1


async def test_stream_restart_discards_the_partial_turn(workspace: Path) -> None:
    final = AssistantTurn(content=[TextPart(text="whole answer")], usage=Usage(output_tokens=3))
    provider = ScriptedProvider(
        [
            [
                TextDelta(text="whole ans"),
                StreamRestarted(attempt=1, reason="connection reset"),
                TextDelta(text="whole answer"),
                final,
            ]
        ]
    )
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[]) as box:
        outcome = await make_loop(provider, box, events).run([Message.user("go")])

    assert events.types == ["text", "error", "text", "usage"]
    assert events.of("error")[0]["code"] == "stream_restarted"
    assert outcome.status == "completed" and outcome.error is None
    assert outcome.messages[-1].content == [TextPart(text="whole answer")]


async def test_turn_without_deltas_still_shows_its_text(workspace: Path) -> None:
    provider = ScriptedProvider([[AssistantTurn(content=[TextPart(text="no stream")])]])
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[]) as box:
        await make_loop(provider, box, events).run([Message.user("go")])
    assert events.of("text") == [{"content": "no stream"}]


async def test_cancel_during_model_stream(workspace: Path) -> None:
    gate = Gate()
    provider = ScriptedProvider([text_turn("never finished", chunks=3, gate=gate)])
    events = RecordingEvents()
    controls = RunControls()
    outcome: LoopOutcome | None = None
    async with Toolbox(workspace, enabled=[]) as box:
        loop = make_loop(provider, box, events, controls=controls)

        async def drive() -> None:
            nonlocal outcome
            outcome = await loop.run([Message.user("go")])

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await gate.wait_reached()
            controls.cancel()

    assert outcome is not None and outcome.status == "cancelled" and outcome.error is None
    assert provider.abandoned == 1
    assert outcome.messages == [Message.user("go")]  # the partial turn is not kept
    assert events.types == ["text"]


async def test_cancel_during_tool_call_keeps_the_conversation_valid(workspace: Path) -> None:
    blocker = Blocker()
    provider = ScriptedProvider(
        [tool_turn(call("c1", "echo", {"text": "a"}), call("c2", "block", {"key": "k"}))]
    )
    events = RecordingEvents()
    controls = RunControls()
    outcome: LoopOutcome | None = None
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo(), blocker]) as box:
        loop = make_loop(provider, box, events, controls=controls)

        async def drive() -> None:
            nonlocal outcome
            outcome = await loop.run([Message.user("go")])

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await blocker.entered.wait()
            controls.cancel()

    assert outcome is not None and outcome.status == "cancelled"
    assert not blocker.finished
    results = outcome.messages[-1].tool_results
    assert [(r.call_id, r.is_error) for r in results] == [("c1", False), ("c2", True)]
    assert "cancelled" in results[1].output
    # the events say how both calls they announced ended, as the conversation does
    assert [(p["callId"], p["isError"]) for p in events.of("tool_result")] == [
        ("c1", False),
        ("c2", True),
    ]
    assert events.of("tool_result")[1]["output"] == results[1].output


class FullStoreEvents(RecordingEvents):
    """A sink whose store is full from the first tool_output on."""

    async def emit(self, type: str, **payload: Any) -> None:
        if type == "tool_output":
            raise StoreFull("database or disk is full")
        await super().emit(type, **payload)


@pytest.mark.parametrize("calls", [1, 2])  # alone, and two read-only calls at once
async def test_a_full_store_while_a_tool_reports_ends_the_run_storage_full(
    workspace: Path, calls: int
) -> None:
    """The tool sees its event callback fail and may call that its own error; the run must
    not go on as if it were one (its events are being lost): it fails, storage_full."""
    turn = tool_turn(*(call(f"c{n}", "echo", {"text": "out"}) for n in range(calls)))
    provider = ScriptedProvider([turn, text_turn("done")])
    events = FullStoreEvents()
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()]) as box:
        loop = make_loop(provider, box, events)
        with anyio.fail_after(10):
            outcome = await loop.run([Message.user("go")])
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["code"] == "storage_full"
    assert len(provider.calls) == 1  # the model was not asked again


async def test_timeout_fails_the_run_with_code_timeout(workspace: Path) -> None:
    gate = Gate()  # never opened: the model "hangs"
    provider = ScriptedProvider([text_turn("hang", gate=gate)])
    events = RecordingEvents()
    async with Toolbox(workspace, enabled=[]) as box:
        loop = make_loop(provider, box, events, timeout=0.05)
        with anyio.fail_after(5):
            outcome = await loop.run([Message.user("go")])

    assert outcome.status == "failed"
    assert outcome.error == {"code": "timeout", "message": "the run exceeded its timeout of 0.05 s"}
    assert events.events[-1] == ("error", outcome.error)


async def test_pause_during_stream_stops_before_the_tool_call(workspace: Path) -> None:
    gate = Gate()
    provider = ScriptedProvider(
        [tool_turn(call("c1", "echo", {"text": "x"}), text="thinking", gate=gate), text_turn("ok")]
    )
    events = RecordingEvents()
    controls = RunControls()
    outcome: LoopOutcome | None = None
    async with Toolbox(workspace, enabled=[], extra_tools=[Echo()]) as box:
        loop = make_loop(provider, box, events, controls=controls)

        async def drive() -> None:
            nonlocal outcome
            outcome = await loop.run([Message.user("go")])

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await gate.wait_reached()
            assert controls.pause()
            gate.open()
            with anyio.fail_after(5):
                await controls.wait_parked()
            # The stream finished; the tool call waits for the resume.
            assert events.types == ["text", "usage"]
            assert controls.resume()

    assert outcome is not None and outcome.status == "completed"
    after_resume = ["tool_call", "tool_output", "tool_result", "text", "usage"]
    assert events.types == ["text", "usage", *after_resume]


@pytest.mark.parametrize("then", ["resume", "input"])
async def test_pause_during_the_final_turn_stops_the_run_before_it_ends(
    workspace: Path, then: str
) -> None:
    """A pause asked for while the model writes its last answer is honoured there: the run
    parks before it completes; a resume ends it, input makes it go on."""
    gate = Gate()
    provider = ScriptedProvider([text_turn("final answer", gate=gate), text_turn("and more")])
    events = RecordingEvents()
    controls = RunControls()
    outcome: LoopOutcome | None = None
    async with Toolbox(workspace, enabled=[]) as box:
        loop = make_loop(provider, box, events, controls=controls)

        async def drive() -> None:
            nonlocal outcome
            outcome = await loop.run([Message.user("go")])

        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await gate.wait_reached()
            assert controls.pause()
            gate.open()
            with anyio.fail_after(5):
                await controls.wait_parked()
            assert outcome is None  # parked, not completed
            if then == "input":
                controls.add_input("one more thing")
            assert controls.resume()

    assert outcome is not None and outcome.status == "completed"
    if then == "resume":
        assert outcome.result == "final answer" and len(provider.calls) == 1
    else:
        assert outcome.result == "and more" and len(provider.calls) == 2
        assert provider.calls[1].messages[-1] == Message.user("one more thing")


async def test_pause_during_tool_call_stops_before_the_next_model_call(workspace: Path) -> None:
    blocker = Blocker()
    provider = ScriptedProvider([tool_turn(call("c1", "block", {"key": "k"})), text_turn("ok")])
    events = RecordingEvents()
    controls = RunControls()
    async with Toolbox(workspace, enabled=[], extra_tools=[blocker]) as box:
        loop = make_loop(provider, box, events, controls=controls)
        async with anyio.create_task_group() as tg:
            tg.start_soon(loop.run, [Message.user("go")])
            await blocker.entered.wait()
            controls.pause()
            blocker.release.set()  # the running call is not interrupted by the pause
            with anyio.fail_after(5):
                await controls.wait_parked()
            assert blocker.finished and len(provider.calls) == 1
            assert events.types[-1] == "tool_result"
            controls.resume()
    assert len(provider.calls) == 2


async def test_cancel_while_paused(workspace: Path) -> None:
    provider = ScriptedProvider([text_turn("never")])
    controls = RunControls()
    controls.pause()
    async with Toolbox(workspace, enabled=[]) as box:
        loop = make_loop(provider, box, RecordingEvents(), controls=controls)
        async with anyio.create_task_group() as tg:
            result: list[LoopOutcome] = []

            async def drive() -> None:
                result.append(await loop.run([Message.user("go")]))

            tg.start_soon(drive)
            with anyio.fail_after(5):
                await controls.wait_parked()
            controls.cancel()
    assert result[0].status == "cancelled" and provider.calls == []


async def test_input_during_final_turn_is_answered(workspace: Path) -> None:
    gate = Gate()
    provider = ScriptedProvider(
        [
            text_turn("first answer", gate=gate),
            lambda messages: text_turn(f"you said: {messages[-1].text}"),
        ]
    )
    controls = RunControls()
    committed: list[str] = []

    async def on_messages(new: list[Message]) -> None:
        committed.extend(m.role for m in new)

    async with Toolbox(workspace, enabled=[]) as box:
        loop = make_loop(provider, box, RecordingEvents(), controls=controls)
        loop.on_messages = on_messages
        async with anyio.create_task_group() as tg:
            result: list[LoopOutcome] = []

            async def drive() -> None:
                result.append(await loop.run([Message.user("go")]))

            tg.start_soon(drive)
            await gate.wait_reached()
            controls.add_input("also this")
            gate.open()

    outcome = result[0]
    assert outcome.result == "you said: also this" and outcome.iterations == 2
    assert [m.role for m in outcome.messages] == ["user", "assistant", "user", "assistant"]
    assert committed == ["assistant", "user", "assistant"]
    # The loop has ended: input now is refused, not queued for a turn that will never come.
    assert controls.add_input("too late") is False and not controls.has_input


def test_input_is_refused_once_the_final_turn_closed_it_and_kept_before() -> None:
    controls = RunControls()
    assert controls.add_input("early") is True
    assert controls.close_inputs() is False  # waiting input: the loop goes on to answer it
    assert controls.take_inputs() == ["early"]
    assert controls.close_inputs() is True
    assert controls.add_input("late") is False and controls.take_inputs() == []


class LeakArgs(ToolArgs):
    pieces: list[str]


class Leak(Tool):
    """Streams its pieces as live output and returns them joined (a secret may be split)."""

    name = "leak"
    description = "Print pieces."
    Args = LeakArgs
    read_only = True

    async def run(self, args: LeakArgs, ctx: ToolContext) -> ToolResult:
        for piece in args.pieces:
            await ctx.emit("tool_output", chunk=piece)
        return ToolResult(output="".join(args.pieces))


async def test_secrets_split_across_output_chunks_are_redacted(workspace: Path) -> None:
    secret = "hunter2-very-secret"
    redactor = Redactor([secret])
    pieces = ["token=hunt", "er2-very-", "secret; token=hunter2-very-secret", " end"]
    leak = call("c1", "leak", {"pieces": pieces})
    provider = ScriptedProvider([tool_turn(leak), text_turn("ok")])
    log = EventLog("run_x", None, None, redactor=redactor)
    async with Toolbox(workspace, enabled=[], extra_tools=[Leak()]) as box:
        loop = make_loop(provider, box, log, redactor=redactor)  # type: ignore[arg-type]
        outcome = await loop.run([Message.user("go")])
    await log.close()

    output = "".join(e.payload["chunk"] for e in log.events if e.type == "tool_output")
    assert output == "token=[REDACTED]; token=[REDACTED] end"
    [result] = [e.payload for e in log.events if e.type == "tool_result"]
    assert result["output"] == output
    # The model never sees the value either: the tool result in the conversation is redacted.
    assert provider.calls[1].messages[-1].tool_results[0].output == output
    assert secret not in outcome.messages[-2].model_dump_json()
