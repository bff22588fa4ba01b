"""The provider interface: one streaming call per model turn, normalised across APIs.

`Provider.stream(system, messages, tools, settings)` yields `Delta`s as the model produces
them and ends with exactly one `AssistantTurn` (the last item yielded). Adapters raise
`ModelError` for failures they have given up on; the agent loop turns it into an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from runtime.messages import Message, Part, TextPart, ThinkingPart, ToolCallPart
from runtime.usage import Usage as Usage  # the one usage model; re-exported for adapters


class _ProviderModel(BaseModel):
    # Validators are built after the daemon listens (runtime.daemon.build_deferred_models).
    model_config = ConfigDict(defer_build=True)


class ModelSettings(_ProviderModel):
    """Per-call settings. `model` is the id the API expects (routing prefixes removed)."""

    model: str
    max_tokens: int = 8192
    temperature: float | None = None
    thinking_budget: int | None = None
    # Free-form provider options (e.g. {"reasoning_effort": "low"}), passed through.
    extra: dict[str, Any] = Field(default_factory=dict)


class TextDelta(_ProviderModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingDelta(_ProviderModel):
    type: Literal["thinking"] = "thinking"
    text: str


class ToolCallStart(_ProviderModel):
    type: Literal["tool_call_start"] = "tool_call_start"
    index: int
    id: str
    name: str


class ToolCallArgumentsDelta(_ProviderModel):
    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    arguments: str


class ToolCallEnd(_ProviderModel):
    type: Literal["tool_call_end"] = "tool_call_end"
    index: int
    call: ToolCallPart


class HostedToolCall(_ProviderModel):
    """The provider started running one of its hosted tools (`web_search`)."""

    type: Literal["hosted_tool_call"] = "hosted_tool_call"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class HostedToolResult(_ProviderModel):
    """The provider's hosted tool finished; `output` is what it found, as text."""

    type: Literal["hosted_tool_result"] = "hosted_tool_result"
    id: str
    name: str
    output: str
    is_error: bool = False


class StreamRestarted(_ProviderModel):
    """The connection dropped mid-turn and the adapter is retrying the turn from the start:
    consumers must discard the partial deltas they received for this turn."""

    type: Literal["restart"] = "restart"
    attempt: int
    reason: str


StopReason = Literal[
    "end_turn", "tool_use", "max_tokens", "refusal", "stop_sequence", "pause_turn", "error"
]


class AssistantTurn(_ProviderModel):
    """The complete assistant message of one model call."""

    type: Literal["turn"] = "turn"
    content: list[Part]
    stop_reason: StopReason = "end_turn"
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def thinking(self) -> str:
        return "".join(p.thinking for p in self.content if isinstance(p, ThinkingPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.content if isinstance(p, ToolCallPart)]


Delta = (
    TextDelta
    | ThinkingDelta
    | ToolCallStart
    | ToolCallArgumentsDelta
    | ToolCallEnd
    | HostedToolCall
    | HostedToolResult
    | StreamRestarted
)
StreamItem = Delta | AssistantTurn


HOSTED_TOOL_KEY = "hosted"


def hosted_tool_spec(name: str) -> dict[str, Any]:
    """The tool spec that asks a provider for its own hosted tool `name` (`web_search`)."""
    return {"name": name, HOSTED_TOOL_KEY: True}


def is_hosted(spec: dict[str, Any]) -> bool:
    return bool(spec.get(HOSTED_TOOL_KEY))


def split_hosted(tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Function tool specs, and the names of the hosted tools asked for."""
    return [t for t in tools if not is_hosted(t)], [t["name"] for t in tools if is_hosted(t)]


class ModelError(Exception):
    """A model call that failed for good (after retries, or not retryable).

    `code` is a short machine word: `rate_limited`, `overloaded`, `server_error`,
    `invalid_request`, `authentication`, `permission`, `not_found`, `connection`,
    `certificate` (TLS did not trust the server), `timeout`, `missing_api_key`,
    `divergence` (replay), `bad_response`.
    """

    def __init__(
        self, code: str, message: str, *, status: int | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable

    def __repr__(self) -> str:
        return f"ModelError({self.code!r}, {self.message!r}, status={self.status})"

    @classmethod
    def missing_api_key(cls, env_var: str, label: str) -> ModelError:
        return cls(
            "missing_api_key",
            f"{env_var} is not set: add it to the daemon's environment or the agent's env to "
            f"use {label} models",
        )


class Provider(Protocol):
    """A model API. `stream` yields deltas, then one final `AssistantTurn`."""

    name: str

    def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]: ...

    async def aclose(self) -> None: ...
