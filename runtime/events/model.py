"""The event model: the envelope every run event has, and each type's payload model.

An event on the wire is flat: `{id, runId, threadId, type, ts, …payload}`. `validate_payload`
checks a payload against its type's model before the event is stored or sent; extra fields
are kept (a payload may carry more than the documented minimum).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.usage import Usage

ENVELOPE_KEYS = ("id", "runId", "threadId", "type", "ts")


class _Payload(BaseModel):
    # Extra fields are kept: a payload may carry more than the documented minimum.
    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, extra="allow", defer_build=True
    )


class RunStartedPayload(_Payload):
    agent: str
    version: int
    # The envelope carries threadId; it is accepted here for callers that pass it.
    thread_id: str | None = Field(None, alias="threadId")
    model: str | None = None
    # Also, only when there are some: `warnings`, the run's settings its model's route does
    # not take (left out of every request), said once (an extra field, so that run_started
    # stays exactly as it was otherwise).


class StatusPayload(_Payload):
    status: Literal["queued", "running", "pausing", "paused", "resumed"]


class ThinkingPayload(_Payload):
    content: str


class TextPayload(_Payload):
    content: str


class ToolCallPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str
    input: Any = None


class ToolOutputPayload(_Payload):
    call_id: str = Field(alias="callId")
    chunk: str


class ToolResultPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str
    output: str
    is_error: bool = Field(False, alias="isError")
    duration_ms: float = Field(0, alias="durationMs")


class FileEditPayload(_Payload):
    path: str
    action: Literal["create", "modify", "delete", "move"]
    diff: str = ""
    moved_from: str | None = Field(None, alias="movedFrom")


class DevUrlPayload(_Payload):
    url: str
    port: int
    # Also, when the run saw the port open by itself (not through get_dev_url): `pid` and
    # `command` of the process listening on it.


class PortClosedPayload(_Payload):
    """A port a process of the run listened on (announced by `dev_url`) closed."""

    url: str
    port: int
    pid: int | None = None
    command: str | None = None


class InputPayload(_Payload):
    text: str


class UsagePayload(Usage, _Payload):
    # The one usage model (runtime.usage) with the payloads' config: extra fields are kept.
    # A `usage` event also has `compaction: true` when it is a compaction's summary request
    # (an extra field, only there: the events of model turns stay exactly as they were).
    model_config = _Payload.model_config


class ErrorPayload(_Payload):
    message: str
    code: str


class CompactionStartedPayload(_Payload):
    reason: Literal["auto", "overflow", "manual"]
    tokens_before: int = Field(alias="tokensBefore")
    context_window: int = Field(alias="contextWindow")
    threshold: int


class CompactionCompletedPayload(_Payload):
    reason: Literal["auto", "overflow", "manual"]
    tokens_before: int = Field(alias="tokensBefore")
    tokens_after: int = Field(alias="tokensAfter")
    messages_replaced: int = Field(alias="messagesReplaced")
    summarized: bool
    stubbed_outputs: int = Field(alias="stubbedOutputs")


class CompactionFailedPayload(_Payload):
    reason: Literal["auto", "overflow", "manual"]
    tokens_before: int = Field(alias="tokensBefore")
    code: str
    message: str


class CompletePayload(_Payload):
    status: Literal["completed", "failed", "cancelled", "interrupted"]
    output: str = ""
    files: list[Any] = Field(default_factory=list)
    dev_url: str | None = Field(None, alias="devUrl")
    usage: UsagePayload = Field(default_factory=UsagePayload)
    iterations: int = 0


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "run_started": RunStartedPayload,
    "status": StatusPayload,
    "thinking": ThinkingPayload,
    "text": TextPayload,
    "tool_call": ToolCallPayload,
    "tool_output": ToolOutputPayload,
    "tool_result": ToolResultPayload,
    "file_edit": FileEditPayload,
    "dev_url": DevUrlPayload,
    "port_closed": PortClosedPayload,
    "input": InputPayload,
    "usage": UsagePayload,
    "error": ErrorPayload,
    "compaction_started": CompactionStartedPayload,
    "compaction_completed": CompactionCompletedPayload,
    "compaction_failed": CompactionFailedPayload,
    "complete": CompletePayload,
}
EVENT_TYPES = tuple(PAYLOAD_MODELS)
TERMINAL_EVENT = "complete"


class EventPayloadError(ValueError):
    """An event of an unknown type, or a payload that does not fit its type's model."""


def validate_payload(type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload checked against its type's model, as a JSON-ready dict (wire names).

    Envelope keys (`id`, `runId`, `type`, `ts`, and `threadId` outside `run_started`) are
    refused; they belong to the event, not its payload."""
    model = PAYLOAD_MODELS.get(type)
    if model is None:
        raise EventPayloadError(f"unknown event type {type!r}; known: {', '.join(EVENT_TYPES)}")
    clashes = [
        k for k in ENVELOPE_KEYS if k in payload and (k, type) != ("threadId", "run_started")
    ]
    if clashes:
        raise EventPayloadError(f"{type} payload must not set envelope field(s) {clashes}")
    try:
        checked = model.model_validate(payload)
    except ValidationError as exc:
        raise EventPayloadError(f"invalid {type} payload: {exc}") from exc
    return checked.model_dump(mode="json", by_alias=True)


class Event(BaseModel):
    """One event of one run. On the wire it is flat: `{id, runId, threadId, type, ts, …}`."""

    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, frozen=True, defer_build=True
    )

    id: int
    run_id: str = Field(alias="runId")
    thread_id: str | None = Field(None, alias="threadId")
    type: str
    ts: str
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "runId": self.run_id,
            "threadId": self.thread_id,
            "type": self.type,
            "ts": self.ts,
            **self.payload,
        }

    def typed_payload(self) -> BaseModel:
        """The payload as its type's model (`ToolCallPayload` for a `tool_call`, …); a type
        this version does not know keeps its fields on a generic model."""
        return PAYLOAD_MODELS.get(self.type, _Payload).model_validate(self.payload)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        payload = {k: v for k, v in data.items() if k not in ENVELOPE_KEYS}
        if data["type"] == "run_started" and "threadId" in data:
            payload["threadId"] = data["threadId"]  # run_started repeats it in its payload
        return cls(
            id=data["id"],
            run_id=data["runId"],
            thread_id=data.get("threadId"),
            type=data["type"],
            ts=data["ts"],
            payload=payload,
        )
