"""Thread events: the platform's vocabulary for following a thread across its runs.

Beside the per-run events (`runtime.events`, unchanged), every thread has

- **persisted events** `{sequence, rolloutId, threadId, runId, type, payload, createdAt}`:
  `sequence` counts 1, 2, 3, … per thread across all of its runs, with no gaps; `rolloutId`
  names one run's attempt (a new one for every run). They are stored (SQLite and the rollout
  file in the workspace) and replayable;
- **live-only events** `{type, threadId, runId, payload, createdAt}` (no `sequence`), sent to
  connected clients as they happen and never stored.

This module holds the models and the pure translations between a conversation and its
persisted events (`message_events`, `conversation_from_events`); `runtime.thread_log` holds
the log that numbers, stores and fans them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.messages import CompactionPart, Message, Part, ToolResultPart
from runtime.usage import Usage

PersistedType = Literal[
    "run_started",
    "run_completed",
    "user_message",
    "assistant_message",
    "tool_call",
    "tool_result",
    "compaction_started",
    "compaction_completed",
]
LiveType = Literal[
    "assistant_message_delta",
    "assistant_thinking_delta",
    "tool_call_started",
    "tool_output_delta",
    "tool_call_completed",
]
PERSISTED_TYPES: tuple[str, ...] = get_args(PersistedType)
LIVE_TYPES: tuple[str, ...] = get_args(LiveType)
RunCompletedStatus = Literal["completed", "failed", "cancelled", "interrupted"]


class ThreadEventError(ValueError):
    """An unknown thread event type, or a payload that does not fit its type."""


# -- payloads ------------------------------------------------------------------------------


class _Payload(BaseModel):
    # Extra fields are kept: a payload may carry more than the documented minimum.
    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, extra="allow", defer_build=True
    )


class RunStartedPayload(_Payload):
    agent: str
    version: int
    model: str | None = None


class RunErrorPayload(_Payload):
    code: str
    message: str


class RunCompletedPayload(_Payload):
    status: RunCompletedStatus
    usage: Usage = Field(default_factory=Usage)  # every token counter the providers report
    iterations: int = 0
    result: str | None = None
    error: RunErrorPayload | None = None


class MessagePayload(_Payload):
    """`user_message` / `assistant_message`: the whole message as the model saw it (text,
    thinking with its signature, tool calls), in the shape of `runtime.messages.Message`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: list[Part]


class ToolCallPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str
    input: Any = None


class ToolResultPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str | None = None
    output: str
    is_error: bool = Field(False, alias="isError")
    duration_ms: float | None = Field(None, alias="durationMs")


class CompactionPayload(_Payload):
    """`compaction_started` / `compaction_completed`: their fields belong to the compaction
    feature (tokens before/after, messages replaced); any object is accepted here."""


class TextDeltaPayload(_Payload):
    text: str


class ToolOutputDeltaPayload(_Payload):
    call_id: str = Field(alias="callId")
    chunk: str


class ToolCallCompletedPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str
    is_error: bool = Field(False, alias="isError")
    duration_ms: float = Field(0, alias="durationMs")


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "run_started": RunStartedPayload,
    "run_completed": RunCompletedPayload,
    "user_message": MessagePayload,
    "assistant_message": MessagePayload,
    "tool_call": ToolCallPayload,
    "tool_result": ToolResultPayload,
    "compaction_started": CompactionPayload,
    "compaction_completed": CompactionPayload,
    "assistant_message_delta": TextDeltaPayload,
    "assistant_thinking_delta": TextDeltaPayload,
    "tool_call_started": ToolCallPayload,
    "tool_output_delta": ToolOutputDeltaPayload,
    "tool_call_completed": ToolCallCompletedPayload,
}


def validate_payload(type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload checked against its type's model, as a JSON-ready dict (wire names)."""
    model = PAYLOAD_MODELS.get(type)
    if model is None:
        known = ", ".join(PAYLOAD_MODELS)
        raise ThreadEventError(f"unknown thread event type {type!r}; known: {known}")
    try:
        checked = model.model_validate(dict(payload))
    except ValidationError as exc:
        raise ThreadEventError(f"invalid {type} payload: {exc}") from exc
    if type in ("user_message", "assistant_message"):
        expected = type.split("_")[0]
        if getattr(checked, "role", None) != expected:
            raise ThreadEventError(f"{type} must carry a message with role {expected!r}")
    return checked.model_dump(mode="json", by_alias=True, exclude_none=False)


# -- events --------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class PersistedThreadEvent(BaseModel):
    """One stored event of a thread: `{sequence, rolloutId, threadId, runId, type, payload,
    createdAt}` on the wire, in the rollout file and in the store."""

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, frozen=True, defer_build=True
    )

    sequence: int = Field(ge=1)
    rollout_id: str = Field(alias="rolloutId")
    thread_id: str = Field(alias="threadId")
    run_id: str = Field(alias="runId")
    type: PersistedType
    payload: dict[str, Any]
    created_at: str = Field(alias="createdAt")

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "rolloutId": self.rollout_id,
            "threadId": self.thread_id,
            "runId": self.run_id,
            "type": self.type,
            "payload": self.payload,
            "createdAt": self.created_at,
        }

    @cached_property
    def json_text(self) -> str:
        """The event as one line of compact JSON (serialised once, shared by every reader)."""
        return _dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> PersistedThreadEvent:
        return cls.model_validate_json(text)


class LiveThreadEvent(BaseModel):
    """One live-only event: `{type, threadId, runId, payload, createdAt}`, never stored."""

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, frozen=True, defer_build=True
    )

    type: LiveType
    thread_id: str = Field(alias="threadId")
    run_id: str = Field(alias="runId")
    payload: dict[str, Any]
    created_at: str = Field(alias="createdAt")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "threadId": self.thread_id,
            "runId": self.run_id,
            "payload": self.payload,
            "createdAt": self.created_at,
        }

    @cached_property
    def json_text(self) -> str:
        return _dumps(self.to_dict())


ThreadEvent = PersistedThreadEvent | LiveThreadEvent


# -- a conversation as events, and back ----------------------------------------------------


def message_events(
    messages: Iterable[Message], durations_ms: Mapping[str, float] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The persisted events (type, payload) that record `messages` being appended to a
    thread: `user_message`, `assistant_message` followed by one `tool_call` per call it
    makes, and one `tool_result` per result of a tool message. `durations_ms` adds the
    measured duration of a call to its result when known."""
    events: list[tuple[str, dict[str, Any]]] = []
    durations = durations_ms or {}
    for message in messages:
        if message.role == "tool":
            for part in message.content:
                if not isinstance(part, ToolResultPart):
                    raise ThreadEventError(f"a tool message holds a {part.type} part")
                result: dict[str, Any] = {
                    "callId": part.call_id,
                    "tool": part.name,
                    "output": part.output,
                    "isError": part.is_error,
                    "durationMs": durations.get(part.call_id),
                }
                events.append(("tool_result", result))
            continue
        record = message.compaction
        if record is not None:
            events.extend(compaction_events(record))
            continue
        payload = message.model_dump(mode="json")
        events.append((f"{message.role}_message", payload))
        for call in message.tool_calls:
            tool_input: Any = call.arguments
            if call.raw_arguments is not None:
                tool_input = {"rawArguments": call.raw_arguments}
            events.append(
                ("tool_call", {"callId": call.id, "tool": call.name, "input": tool_input})
            )
    return events


def compaction_events(record: CompactionPart) -> list[tuple[str, dict[str, Any]]]:
    """A compaction as persisted events: `compaction_started` (why, and the size before)
    then `compaction_completed` with the whole record, so that a conversation rebuilt from
    the events (a continuation from the rollout) is compacted exactly as the original. Both
    are written when the compaction's record is committed to the thread: one that failed
    leaves no record, and the run's `run_completed` carries its `context_overflow` error."""
    started = {"reason": record.reason, "tokensBefore": record.tokens_before}
    completed = {
        "reason": record.reason,
        "summarized": record.summarized,
        "tokensBefore": record.tokens_before,
        "tokensAfter": record.tokens_after,
        "messagesReplaced": record.messages_replaced,
        "summary": record.summary,
        "keepFrom": record.keep_from,
        "stubbed": list(record.stubbed),
    }
    return [("compaction_started", started), ("compaction_completed", completed)]


def conversation_from_events(events: Iterable[PersistedThreadEvent]) -> list[Message]:
    """The conversation the persisted events record (the inverse of `message_events`):
    messages in order, consecutive `tool_result`s forming one tool message."""
    messages: list[Message] = []
    results: list[Part] = []

    def close_tool_message() -> None:
        if results:
            messages.append(Message(role="tool", content=list(results)))
            results.clear()

    for event in events:
        if event.type == "tool_result":
            payload = event.payload
            results.append(
                ToolResultPart(
                    call_id=payload["callId"],
                    output=payload["output"],
                    is_error=bool(payload.get("isError", False)),
                    name=payload.get("tool"),
                )
            )
        elif event.type in ("user_message", "assistant_message"):
            close_tool_message()
            messages.append(Message.model_validate(event.payload))
        elif event.type == "compaction_completed":
            close_tool_message()
            payload = event.payload
            record = CompactionPart(
                reason=payload.get("reason", "auto"),
                summary=payload.get("summary"),
                summarized=bool(payload.get("summarized", False)),
                keep_from=int(payload["keepFrom"]),
                stubbed=list(payload.get("stubbed", [])),
                tokens_before=int(payload.get("tokensBefore", 0)),
                tokens_after=int(payload.get("tokensAfter", 0)),
                messages_replaced=int(payload.get("messagesReplaced", 0)),
            )
            messages.append(Message(role="compaction", content=[record]))
    close_tool_message()
    return messages


__all__ = [
    "LIVE_TYPES",
    "PAYLOAD_MODELS",
    "PERSISTED_TYPES",
    "LiveThreadEvent",
    "PersistedThreadEvent",
    "ThreadEvent",
    "ThreadEventError",
    "conversation_from_events",
    "message_events",
    "validate_payload",
]
