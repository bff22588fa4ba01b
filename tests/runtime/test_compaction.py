"""The pieces of compaction on their own: the window table, the meter, the view, the compactor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.compaction import (
    SUMMARY_PREFIX,
    CompactionFailed,
    Compactor,
    ContextMeter,
    model_view,
)
from runtime.messages import CompactionPart, Message, ToolCallPart, ToolResultPart
from runtime.providers.base import AssistantTurn, ModelSettings, StreamItem, Usage
from runtime.providers.capabilities import DEFAULT_CONTEXT_WINDOW, context_window
from runtime.providers.registry import default_context_window


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("claude-sonnet-4-6", 200_000),
        ("claude-opus-4-6-20260101", 200_000),
        ("gpt-5.5", 400_000),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-4o", 128_000),
        ("o3-mini", 200_000),
        ("gemini-2.5-pro", 1_048_576),
        ("my-local-llama", DEFAULT_CONTEXT_WINDOW),
    ],
)
def test_the_context_window_table(model: str, window: int) -> None:
    assert context_window(model) == window


def test_default_windows_by_route() -> None:
    assert default_context_window("anthropic:claude-sonnet-4-6") == 200_000
    assert default_context_window("replay:/tmp/c.jsonl") is None  # answers what was recorded
    custom = {"provider": "custom", "endpoint": "http://127.0.0.1:1/v1", "format": "openai"}
    assert default_context_window(custom) == DEFAULT_CONTEXT_WINDOW


def test_the_meter_counts_reported_usage_plus_an_estimate_of_what_was_added() -> None:
    meter = ContextMeter()
    assert meter.estimate(4_000) == 1_000  # 4 chars a token before any usage is known
    meter.observe(9_000, 3_000)  # this conversation runs at 3 chars a token
    assert meter.estimate(9_000) == 3_000
    assert meter.estimate(12_000) == 3_000 + 1_000
    assert meter.estimate(6_000) == 2_000  # shrunk (compacted): the ratio alone


def call(i: int, output: str = "ok") -> list[Message]:
    return [
        Message(role="assistant", content=[ToolCallPart(id=f"c{i}", name="read_file")]),
        Message(role="tool", content=[ToolResultPart(call_id=f"c{i}", output=output)]),
    ]


def record(**fields: Any) -> Message:
    fields.setdefault("tokens_before", 10)
    fields.setdefault("tokens_after", 5)
    fields.setdefault("messages_replaced", 1)
    return Message(role="compaction", content=[CompactionPart(**fields)])


def test_the_view_follows_the_last_compaction_record() -> None:
    log = [Message.user("task"), *call(1, "x" * 50), *call(2), Message.assistant("so far")]
    assert model_view(log) == log

    stubbed = [*log, record(keep_from=0, stubbed=["c1"])]
    view = model_view(stubbed)
    assert len(view) == len(log)
    assert view[2].tool_results[0].output.startswith("[output of this tool call (50 characters)")
    assert view[4] == log[4]

    summarised = [*log, record(summary="did 1 and 2", keep_from=5), Message.user("next")]
    view = model_view(summarised)
    assert [m.text for m in view] == ["task", SUMMARY_PREFIX + "did 1 and 2", "so far", "next"]


class OneAnswer:
    """A provider that answers every request with one text, recording what it was asked."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[tuple[str | None, list[Message], list[dict[str, Any]]]] = []

    async def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]:
        self.asked.append((system, messages, tools))
        yield AssistantTurn(
            content=[Message.assistant(self.answer).content[0]],
            stop_reason="end_turn",
            usage=Usage(),
        )


def compactor(model: OneAnswer, window: int) -> Compactor:
    return Compactor(model, "sys", [], ModelSettings(model="m"), window, 0.8)


async def test_stubs_alone_when_they_are_enough() -> None:
    log = [Message.user("task")]
    for i in range(6):
        log += call(i, "y" * 4_000)
    log.append(Message.assistant("done reading"))
    model = OneAnswer("unused")
    compacting = compactor(model, 6_000)
    meter = ContextMeter()
    assert compacting.needs_compaction(meter, log)
    made = await compacting.compact(meter, log)
    part = made.compaction
    assert part is not None and part.summary is None and not model.asked
    assert part.tokens_after < part.tokens_before and part.stubbed
    assert not compacting.needs_compaction(meter, [*log, made])


async def test_a_summary_replaces_the_middle_and_keeps_the_recent_turns_paired() -> None:
    log = [Message.user("the task")]
    for i in range(30):
        log += [Message.assistant(f"thinking aloud {i} " * 40), *call(i, "z" * 300)]
    model = OneAnswer("the summary")
    compacting = compactor(model, 8_000)
    meter = ContextMeter()
    made = await compacting.compact(meter, log)
    part = made.compaction
    assert part is not None and part.summary == "the summary"
    ((_, asked, tools),) = model.asked
    assert tools == [] and "Summarise the conversation" in asked[0].text
    view = model_view([*log, made])
    assert view[0].text == "the task" and view[1].text == SUMMARY_PREFIX + "the summary"
    assert view[2].role == "assistant"  # the recent turns never start at a tool result
    pending: set[str] = set()
    for message in view[2:]:
        pending |= {c.id for c in message.tool_calls}
        pending -= {r.call_id for r in message.tool_results}
    assert not pending
    assert compacting.tokens(meter, view) <= compacting.threshold


async def test_a_conversation_that_cannot_shrink_enough_fails_clearly() -> None:
    log = [Message.user("task"), Message.assistant("w" * 40_000)]
    with pytest.raises(CompactionFailed, match="context window"):
        await compactor(OneAnswer("s"), 4_000).compact(ContextMeter(), log)
