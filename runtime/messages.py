"""The provider-neutral conversation model.

A conversation is a list of `Message`s. Each message has a role and a list of content parts.
Everything a provider needs to continue a conversation (thinking signatures, provider item
ids, Gemini thought signatures) is kept on the parts, so a thread stored as JSON and loaded
again continues exactly where it stopped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class TextPart(_Part):
    type: Literal["text"] = "text"
    text: str


class ThinkingPart(_Part):
    """Model reasoning. `signature` (Anthropic) or `meta` (OpenAI Responses encrypted
    reasoning, item ids) must be sent back unchanged; `redacted` thinking carries only
    opaque `data`."""

    type: Literal["thinking"] = "thinking"
    thinking: str = ""
    signature: str | None = None
    redacted: bool = False
    data: str | None = None
    provider: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class ToolCallPart(_Part):
    """A tool call. `arguments` is the parsed JSON object; when the model produced text that
    is not a JSON object, `arguments` is empty and `raw_arguments` keeps what it sent."""

    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None
    # Provider-specific data to echo back (e.g. Gemini `extra_content.google.thought_signature`).
    meta: dict[str, Any] = Field(default_factory=dict)


class ToolResultPart(_Part):
    type: Literal["tool_result"] = "tool_result"
    call_id: str
    output: str
    is_error: bool = False
    name: str | None = None


class HostedToolPart(_Part):
    """A tool the model provider ran itself (its hosted web search): the call and its result
    in one part of the assistant message. `blocks` are the provider's own items, sent back
    unchanged to the same provider (another provider reads `output` as text)."""

    type: Literal["hosted_tool"] = "hosted_tool"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    output: str = ""
    is_error: bool = False
    provider: str
    blocks: list[dict[str, Any]] = Field(default_factory=list)


def hosted_tool_text(part: HostedToolPart) -> str:
    """A hosted tool's call and result as text, for a provider that cannot take its items."""
    query = part.input.get("query") if isinstance(part.input.get("query"), str) else None
    what = f"{part.name} for {query!r}" if query else part.name
    return f"[{what}]\n{part.output}"


class ImagePart(_Part):
    type: Literal["image"] = "image"
    media_type: str
    data: str  # base64


class CompactionPart(_Part):
    """The record a compaction leaves in a conversation (the only part of a `compaction`
    message). Nothing before it is deleted; what the model is sent from then on is derived by
    `runtime.compaction.model_view`: the conversation's first message, then `summary` (when
    the older turns were summarised) and the messages from index `keep_from` on, with the
    tool results named in `stubbed` cut to a short stub."""

    type: Literal["compaction"] = "compaction"
    # Why: `auto` (the threshold), `overflow` (the provider refused the request as too long),
    # `manual` (POST /v1/run/threads/{id}/compact).
    reason: Literal["auto", "overflow", "manual"] = "auto"
    summary: str | None = None
    # Whether this compaction wrote `summary` (else it carries an earlier one forward).
    summarized: bool = False
    keep_from: int
    stubbed: list[str] = Field(default_factory=list)
    tokens_before: int
    tokens_after: int
    messages_replaced: int


Part = Annotated[
    TextPart
    | ThinkingPart
    | ToolCallPart
    | ToolResultPart
    | HostedToolPart
    | ImagePart
    | CompactionPart,
    Field(discriminator="type"),
]

# `compaction` messages are records in the stored conversation, never sent to a model.
Role = Literal["user", "assistant", "tool", "compaction"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    role: Role
    content: list[Part]

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", content=[TextPart(text=text)])

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls(role="assistant", content=[TextPart(text=text)])

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.content if isinstance(p, ToolCallPart)]

    @property
    def tool_results(self) -> list[ToolResultPart]:
        return [p for p in self.content if isinstance(p, ToolResultPart)]

    @property
    def compaction(self) -> CompactionPart | None:
        """The compaction record, when this is a `compaction` message."""
        if self.role != "compaction":
            return None
        return next((p for p in self.content if isinstance(p, CompactionPart)), None)
