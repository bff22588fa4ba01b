"""An in-process provider that plays model turns from a script.

Each model call takes the next step of the script. A step is a list of stream items
(`TextDelta`, `ThinkingDelta`, `StreamRestarted`, a final `AssistantTurn`, …), a `Gate` (the
stream stops there until the test opens it, so a test can act "during a model stream"
deterministically), an exception to raise (e.g. `ModelError`), or a callable that builds the
step from the conversation it is given. Every call is recorded for assertions.

`text_turn`, `tool_turn` and `call` build the common steps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from runtime.messages import Message, TextPart, ThinkingPart, ToolCallPart
from runtime.providers.base import (
    AssistantTurn,
    ModelError,
    ModelSettings,
    StopReason,
    StreamItem,
    TextDelta,
    ThinkingDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)


class Gate:
    """A blocking point in a scripted stream: `reached` is set when the stream gets there;
    the stream continues once the test calls `open()`."""

    def __init__(self) -> None:
        self.reached = anyio.Event()
        self._open = anyio.Event()

    def open(self) -> None:
        self._open.set()

    async def wait_reached(self) -> None:
        await self.reached.wait()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._open.wait()


ScriptItem = StreamItem | Gate | BaseException
Step = Sequence[ScriptItem] | BaseException | Callable[[list[Message]], Sequence[ScriptItem]]


@dataclass
class RecordedCall:
    system: str | None
    messages: list[Message]
    tools: list[dict[str, Any]]
    settings: ModelSettings


@dataclass
class ScriptedProvider:
    """Plays `steps` in order, one per model call; running out is a `ModelError`."""

    steps: list[Step]
    name: str = "scripted"
    calls: list[RecordedCall] = field(default_factory=list)
    closed: bool = False
    # Set when a stream was abandoned before its final turn (cancel, timeout).
    abandoned: int = 0

    def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]:
        self.calls.append(
            RecordedCall(system, [m.model_copy(deep=True) for m in messages], tools, settings)
        )
        return self._play(len(self.calls) - 1, messages)

    async def _play(self, index: int, messages: list[Message]) -> AsyncIterator[StreamItem]:
        if index >= len(self.steps):
            raise ModelError("divergence", f"the script has no step {index + 1}")
        step = self.steps[index]
        if callable(step):
            step = step(messages)
        if isinstance(step, BaseException):
            raise step
        finished = False
        try:
            for item in step:
                if isinstance(item, Gate):
                    await item.pass_through()
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
                    if isinstance(item, AssistantTurn):
                        finished = True
                        return
        finally:
            if not finished:
                self.abandoned += 1

    async def aclose(self) -> None:
        self.closed = True


def call(call_id: str, name: str, arguments: dict[str, Any] | None = None) -> ToolCallPart:
    return ToolCallPart(id=call_id, name=name, arguments=arguments or {})


def usage(inp: int = 10, out: int = 5) -> Usage:
    return Usage(input_tokens=inp, output_tokens=out)


def text_turn(
    text: str,
    *,
    chunks: int = 1,
    thinking: str | None = None,
    stop_reason: StopReason = "end_turn",
    turn_usage: Usage | None = None,
    gate: Gate | None = None,
) -> list[ScriptItem]:
    """Streams `text` in `chunks` deltas (a `gate` after the first one) and ends the turn."""
    items: list[ScriptItem] = []
    content: list[Any] = []
    if thinking is not None:
        items.append(ThinkingDelta(text=thinking))
        content.append(ThinkingPart(thinking=thinking, signature="sig"))
    size = max(1, -(-len(text) // chunks)) if text else 1
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    for i, piece in enumerate(pieces):
        if piece:
            items.append(TextDelta(text=piece))
        if i == 0 and gate is not None:
            items.append(gate)
    if text:
        content.append(TextPart(text=text))
    items.append(
        AssistantTurn(content=content, stop_reason=stop_reason, usage=turn_usage or usage())
    )
    return items


def tool_turn(
    *calls: ToolCallPart,
    text: str = "",
    turn_usage: Usage | None = None,
    gate: Gate | None = None,
    stop_reason: StopReason = "tool_use",
) -> list[ScriptItem]:
    """Optional text, then the tool calls as a provider streams them, then the turn."""
    items: list[ScriptItem] = []
    content: list[Any] = []
    if text:
        items.append(TextDelta(text=text))
        content.append(TextPart(text=text))
    if gate is not None:
        items.append(gate)
    for index, tool_call in enumerate(calls):
        items.append(ToolCallStart(index=index, id=tool_call.id, name=tool_call.name))
        items.append(ToolCallEnd(index=index, call=tool_call))
        content.append(tool_call)
    items.append(
        AssistantTurn(content=content, stop_reason=stop_reason, usage=turn_usage or usage())
    )
    return items


class ScriptedFactory:
    """A `provider_factory` for the RunManager: each run gets the next queued provider (a
    run with none queued gets an empty script, so its first model call fails loudly)."""

    def __init__(self) -> None:
        self.queue: list[ScriptedProvider] = []
        self.created: list[tuple[Any, ScriptedProvider]] = []

    def add(self, *steps: Step) -> ScriptedProvider:
        provider = ScriptedProvider(list(steps))
        self.queue.append(provider)
        return provider

    def __call__(
        self, model: str | dict[str, Any], *, env: Any = None
    ) -> tuple[ScriptedProvider, str]:
        provider = self.queue.pop(0) if self.queue else ScriptedProvider([])
        self.created.append((model, provider))
        model_id = model if isinstance(model, str) else str(model.get("model") or "custom")
        return provider, model_id.removeprefix("scripted:")
