"""Keeping a long conversation inside the model's context window.

A run's conversation only ever grows; what the model is sent is a *view* of it. When the next
request would pass `compact_at` of the context window, the loop compacts first, in two stages:

1. **Stubs.** Long tool outputs outside the recent turns are cut to a one-line stub naming the
   call (old build logs and file dumps are most of a long run's bulk). If that brings the
   conversation under the target, it is enough.
2. **Summary.** Otherwise the same model is asked, in a separate request with no tools that is
   not streamed to the user, to summarise the older part of the conversation (task, decisions,
   files touched, commands and their outcomes, open problems). The view becomes: the first
   user message, the summary, and the most recent turns verbatim. The recent turns start at a
   user or assistant message, so every tool call keeps its result and provider state such as
   thinking signatures stays valid.

Either way a `compaction` message (a `CompactionPart`) is appended to the conversation:
nothing is deleted, so the stored thread, its rollout and a fork before the compaction still
hold the originals, and `model_view` derives what the model sees from the last record.

A summary request costs tokens like any model call: the compactor reports its usage and its
duration to `on_summary` (the loop adds them to the run's usage, its `usage` events and the
metrics; a compaction between runs returns them). A summary request answered with no usable
summary (no text, only a tool call, a refusal) is a failed model call (`SummaryUnusable`, a
`ModelError`), not an overflow; a summary cut off at its `max_tokens` is kept, marked as cut
(`SUMMARY_CUT_NOTE`), since what it holds is still the best account of the older turns.

Sizes are counted as the issue of a context window is: the input tokens the provider reported
for the last request, plus an estimate of what was added since, at the chars-per-token ratio
the last request showed (`CHARS_PER_TOKEN` = 4 until a provider has reported usage: the common
rule of thumb for English; code runs nearer 3, which the calibration picks up).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from runtime.messages import (
    CompactionPart,
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)
from runtime.providers.base import AssistantTurn, ModelError, ModelSettings, StreamItem
from runtime.usage import Usage

CHARS_PER_TOKEN = 4.0
DEFAULT_COMPACT_AT = 0.8
# After stubbing alone the conversation must be at most this share of the threshold, or the
# loop would compact again a few turns later.
STUB_TARGET = 0.6
# The most recent turns kept verbatim by a summary take at most this share of the window.
RECENT_SHARE = 0.25
# Tool outputs shorter than this are left alone by the stub stage.
STUB_MIN_CHARS = 600
SUMMARY_MAX_TOKENS = 4096
SUMMARY_PREFIX = (
    "[Summary of the earlier part of this conversation, written when it was compacted to fit "
    "the context window. The most recent turns follow verbatim.]\n\n"
)
# Ends a summary the model was cut off writing (at its max_tokens), so the model reading it
# knows that whatever followed is missing.
SUMMARY_CUT_NOTE = (
    "\n\n[This summary was cut off at its length limit ({max_tokens:,} tokens): whatever "
    "followed is missing.]"
)

SUMMARY_SYSTEM = (
    "You compact the history of a software engineering agent's session so that it can go on "
    "working with less context. Write for the agent itself, which will continue the task from "
    "your summary and the most recent turns."
)
SUMMARY_REQUEST = """Summarise the conversation below, which is the older part of an agent's \
session. Keep everything the agent needs to continue without re-doing work:

1. The task: what the user asked for, with every requirement and constraint.
2. Decisions made and why.
3. Files created, changed or deleted (paths), and what they now contain in outline.
4. Commands run and their outcomes (tests passing or failing, errors with their key lines).
5. Open problems and the next steps that were planned.

Be specific (names, paths, numbers, error messages); leave out chit-chat. Answer with the \
summary only.

<conversation>
{transcript}
</conversation>"""


class CompactionFailed(Exception):
    """The conversation could not be brought under the window (reported as `context_overflow`)."""


class NothingToCompact(CompactionFailed):
    """A compaction was asked for, but the conversation has no older turns to summarise."""


class SummaryUnusable(ModelError):
    """The summary request was answered, but not with a summary (no text, only a tool call,
    a refusal): a failed model call (`model_error`), not a conversation too large to fit."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_response", message)


# Told the usage and the duration (seconds) of each summary request the model answered.
SummaryObserver = Callable[[Usage, float], Awaitable[None]]


class SummaryModel(Protocol):
    """What compaction needs from a provider: one non-streamed-to-the-user model call."""

    def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]: ...


# -- the view ----------------------------------------------------------------------------------


def last_compaction(log: list[Message]) -> tuple[int, CompactionPart] | None:
    for index in range(len(log) - 1, -1, -1):
        record = log[index].compaction
        if record is not None:
            return index, record
    return None


def _view_with_indices(log: list[Message]) -> list[tuple[int | None, Message]]:
    """The model's view of `log`, each message with its index in `log` (None: the summary)."""
    found = last_compaction(log)
    if found is None:
        return [(i, m) for i, m in enumerate(log) if m.role != "compaction"]
    at, record = found
    stubbed = set(record.stubbed)
    kept: list[tuple[int | None, Message]] = [
        (i, _stub(log[i], stubbed))
        for i in range(record.keep_from, len(log))
        if i != at and log[i].role != "compaction"
    ]
    if record.summary is None:
        return kept
    head: list[tuple[int | None, Message]] = []
    if record.keep_from > 0:
        head.append((0, _stub(log[0], stubbed)))
    return [*head, (None, Message.user(SUMMARY_PREFIX + record.summary)), *kept]


def model_view(log: list[Message]) -> list[Message]:
    """What the model is sent for the conversation `log` (see the module docstring)."""
    return [message for _, message in _view_with_indices(log)]


def _stub(message: Message, stubbed: set[str]) -> Message:
    if message.role != "tool" or not stubbed:
        return message
    if not any(p.call_id in stubbed for p in message.tool_results):
        return message
    content = [
        _stub_result(part) if isinstance(part, ToolResultPart) and part.call_id in stubbed else part
        for part in message.content
    ]
    return Message(role="tool", content=content)


def _stub_result(part: ToolResultPart) -> ToolResultPart:
    note = (
        f"[output of this {part.name or 'tool'} call ({len(part.output):,} characters) was "
        "removed to keep the conversation inside the context window; run the call again if "
        "you need it]"
    )
    return part.model_copy(update={"output": note})


# -- sizes -------------------------------------------------------------------------------------


class MessageSizes:
    """The JSON size of each message of the last request measured, kept so that the next
    request (the same messages and a few new ones) serialises only what is new: measuring
    every turn stays linear in what the turn added, not in the conversation."""

    def __init__(self) -> None:
        # id → (the message itself, so the id cannot be reused while it is here; its size)
        self._known: dict[int, tuple[Message, int]] = {}

    def total(self, messages: list[Message]) -> int:
        known, self._known = self._known, {}
        size = 0
        for message in messages:
            hit = known.get(id(message))
            length = hit[1] if hit is not None and hit[0] is message else None
            if length is None:
                length = len(message.model_dump_json())
            self._known[id(message)] = (message, length)
            size += length
        return size


def request_chars(
    system: str | None,
    tools: list[dict[str, Any]],
    messages: list[Message],
    sizes: MessageSizes | None = None,
) -> int:
    """The size of a request in characters of JSON, as the estimate counts it."""
    size = len(system or "") + (len(json.dumps(tools)) if tools else 0)
    if sizes is not None:
        return size + sizes.total(messages)
    return size + sum(len(m.model_dump_json()) for m in messages)


@dataclass
class ContextMeter:
    """Tokens of the next request: the last reported input usage plus what was added since.

    `observe` is told the size (chars) of every request the provider answered and the input
    tokens it reported for it; that fixes the chars-per-token ratio of this conversation."""

    tokens_per_char: float = 1 / CHARS_PER_TOKEN
    last_chars: int = 0
    last_tokens: int = 0

    def observe(self, chars: int, input_tokens: int) -> None:
        if chars > 0 and input_tokens > 0:
            self.tokens_per_char = input_tokens / chars
            self.last_chars, self.last_tokens = chars, input_tokens

    def estimate(self, chars: int) -> int:
        if self.last_tokens and chars >= self.last_chars:
            return self.last_tokens + math.ceil((chars - self.last_chars) * self.tokens_per_char)
        return math.ceil(chars * self.tokens_per_char)


# -- compacting --------------------------------------------------------------------------------


@dataclass
class Compactor:
    """Compacts one conversation for one model (its system prompt, tools and settings).
    `on_summary` is told what each summary request cost (see the module docstring)."""

    model: SummaryModel
    system: str | None
    tools: list[dict[str, Any]]
    settings: ModelSettings
    context_window: int
    compact_at: float = DEFAULT_COMPACT_AT
    on_summary: SummaryObserver | None = None
    sizes: MessageSizes = field(default_factory=MessageSizes, init=False, repr=False)

    @property
    def threshold(self) -> int:
        """Input tokens above which a request is compacted first."""
        return int(self.context_window * self.compact_at)

    def request_chars(self, messages: list[Message]) -> int:
        return request_chars(self.system, self.tools, messages, self.sizes)

    def tokens(self, meter: ContextMeter, messages: list[Message]) -> int:
        return meter.estimate(self.request_chars(messages))

    def needs_compaction(self, meter: ContextMeter, log: list[Message]) -> bool:
        return self.tokens(meter, model_view(log)) > self.threshold

    async def compact(
        self,
        meter: ContextMeter,
        log: list[Message],
        *,
        summarize: bool = False,
        reason: Literal["auto", "overflow", "manual"] = "auto",
    ) -> Message:
        """The `compaction` message to append to `log`; CompactionFailed when even a summary
        cannot bring the conversation under the threshold, ModelError (SummaryUnusable among
        them) when the summary request fails. `summarize` asks for a summary even where stubs
        alone would do (a compaction a person asked for)."""
        view = _view_with_indices(log)
        previous = last_compaction(log)
        stubbed = set(previous[1].stubbed) if previous else set()
        before = self.tokens(meter, [m for _, m in view])

        # A compaction asked for keeps less: the older three quarters are summarised.
        budget = self.context_window * RECENT_SHARE
        recent = self._recent_start(meter, view, min(budget, before / 4) if summarize else budget)
        newly = {
            part.call_id
            for _, message in view[:recent]
            if message.role == "tool"
            for part in message.tool_results
            if len(part.output) > STUB_MIN_CHARS and part.call_id not in stubbed
        }
        stubbed |= newly
        stubbed_view = [(i, _stub(m, stubbed)) for i, m in view]
        after = self.tokens(meter, [m for _, m in stubbed_view])
        if newly and after <= self.threshold * STUB_TARGET and not summarize:
            keep_from = previous[1].keep_from if previous else 0
            summary = previous[1].summary if previous else None
            return _record(reason, summary, False, keep_from, stubbed, before, after, len(newly))

        # Summarise everything between the first message and the recent turns.
        first = 1 if view and view[0][0] == 0 else 0
        middle = [m for _, m in stubbed_view[first:recent]]
        if not middle or recent >= len(view):
            if summarize:
                raise NothingToCompact(
                    "the conversation has no older turns to summarise: only its first message "
                    "and its most recent turns, which are kept verbatim"
                )
            raise CompactionFailed(
                f"the conversation ({before:,} tokens) does not fit the context window "
                f"({self.context_window:,} tokens, compacting above {self.threshold:,}) and its "
                "most recent turn alone is too large to compact"
            )
        summary = await self._summarise(middle, meter)
        recent_from = view[recent][0]
        assert recent_from is not None  # the recent turns never start at the old summary
        record = _record(reason, summary, True, recent_from, stubbed, before, 0, len(middle))
        after = self.tokens(meter, model_view([*log, record]))
        if after > self.threshold:
            raise CompactionFailed(
                f"compaction left {after:,} tokens, still above the threshold of "
                f"{self.threshold:,} (context window {self.context_window:,} tokens): the most "
                "recent turns are too large; use a model with a larger window or smaller outputs"
            )
        return _record(reason, summary, True, recent_from, stubbed, before, after, len(middle))

    def _recent_start(
        self, meter: ContextMeter, view: list[tuple[int | None, Message]], budget: float
    ) -> int:
        """Where the recent turns begin: as many of the last messages as fit `budget` tokens,
        starting at a user or assistant message (never at tool results, which must follow
        their calls), and at least the last such message."""
        start = len(view)
        used = 0.0
        for index in range(len(view) - 1, -1, -1):
            used += len(view[index][1].model_dump_json()) * meter.tokens_per_char
            if used > budget and start < len(view):
                break
            if view[index][1].role != "tool":
                start = index
        return start

    async def _summarise(self, middle: list[Message], meter: ContextMeter) -> str:
        # The summary request itself must fit the window: its transcript is cut to fit.
        limit = int(self.threshold * 0.8 / meter.tokens_per_char)
        transcript = _transcript(middle, max_chars=max(2_000, limit))
        settings = self.settings.model_copy(
            update={
                "max_tokens": min(self.settings.max_tokens, SUMMARY_MAX_TOKENS),
                "thinking_budget": None,
            }
        )
        request = [Message.user(SUMMARY_REQUEST.format(transcript=transcript))]
        started = time.perf_counter()
        turn: AssistantTurn | None = None
        async for item in self.model.stream(SUMMARY_SYSTEM, request, [], settings):
            if isinstance(item, AssistantTurn):
                turn = item
        if turn is None:
            raise ModelError("bad_response", "the summary request ended without a complete turn")
        if self.on_summary is not None:
            await self.on_summary(turn.usage, time.perf_counter() - started)
        summary = turn.text.strip()
        if turn.stop_reason == "refusal" or not summary:
            if turn.stop_reason == "refusal":
                why = "it refused"
            elif turn.tool_calls:
                why = "it answered with only a tool call"
            else:
                why = f"its answer had no text (stop reason {turn.stop_reason})"
            raise SummaryUnusable(
                f"the model returned no usable summary when asked to compact: {why}"
            )
        if turn.stop_reason == "max_tokens":
            summary += SUMMARY_CUT_NOTE.format(max_tokens=settings.max_tokens)
        return summary


def _record(
    reason: Literal["auto", "overflow", "manual"],
    summary: str | None,
    summarized: bool,
    keep_from: int,
    stubbed: set[str],
    before: int,
    after: int,
    replaced: int,
) -> Message:
    return Message(
        role="compaction",
        content=[
            CompactionPart(
                reason=reason,
                summary=summary,
                summarized=summarized,
                keep_from=keep_from,
                stubbed=sorted(stubbed),
                tokens_before=before,
                tokens_after=after,
                messages_replaced=replaced,
            )
        ],
    )


def _transcript(messages: list[Message], *, max_chars: int) -> str:
    """The messages as plain text for the summary request (no tool-call pairing to keep, no
    provider state), long tool outputs cut in the middle, the oldest lines dropped first
    when the whole is still too long."""
    lines: list[str] = []
    for message in messages:
        for part in message.content:
            if isinstance(part, TextPart) and part.text.strip():
                lines.append(f"{message.role.upper()}: {part.text.strip()}")
            elif isinstance(part, ThinkingPart) and part.thinking.strip():
                lines.append(f"ASSISTANT (thinking): {_cut(part.thinking.strip(), 1_000)}")
            elif isinstance(part, ToolCallPart):
                arguments = part.raw_arguments or json.dumps(part.arguments, ensure_ascii=False)
                lines.append(f"TOOL CALL {part.id} {part.name}: {_cut(arguments, 2_000)}")
            elif isinstance(part, ToolResultPart):
                status = " (error)" if part.is_error else ""
                lines.append(f"TOOL RESULT {part.call_id}{status}: {_cut(part.output, 2_000)}")
            elif isinstance(part, ImagePart):
                lines.append(f"{message.role.upper()}: [an image]")
    text = "\n\n".join(lines)
    if len(text) > max_chars:
        text = "[… the oldest part is left out …]\n" + text[len(text) - max_chars :]
    return text


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[… {len(text) - limit:,} characters cut …]\n{text[-half:]}"
