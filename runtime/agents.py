"""Agent definitions: what `POST /v1/agents` upserts, and the stored, versioned record.

An `AgentSpec` is the definition a client sends (wire names camelCase, unknown fields
refused). The store keeps every version of it as an `AgentRecord`; `version` increases by
one whenever the spec changes and `id` never changes for a slug.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tools.base import core_tool_names as registered_tool_names
from tools.base import default_tool_names

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
REDACTED = "[REDACTED]"

ExecutionMode = Literal["in_sandbox", "managed", "local-mac"]
WebhookEvent = Literal["run.completed", "run.failed"]
_ALL_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("run.completed", "run.failed")


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {value!r}")
    return value


def _default_tools() -> list[str | CustomToolSpec]:
    return list(default_tool_names())


class _WireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, extra="forbid")


class CustomModel(_WireModel):
    """A model behind a custom endpoint that speaks the OpenAI or Anthropic wire format."""

    provider: Literal["custom"]
    endpoint: str
    api_key: str | None = Field(None, alias="apiKey")
    format: Literal["openai", "anthropic"]
    model: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str) -> str:
        return _http_url(value, "endpoint")


class CustomToolSpec(_WireModel):
    """A tool the daemon implements by POSTing the call's arguments to `invokeUrl`."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}, alias="inputSchema"
    )
    invoke_url: str = Field(alias="invokeUrl")

    @field_validator("invoke_url")
    @classmethod
    def _invoke_url_is_url(cls, value: str) -> str:
        return _http_url(value, "invokeUrl")

    @field_validator("input_schema")
    @classmethod
    def _schema_is_an_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError("inputSchema must describe a JSON object (type: object)")
        return value


MIN_CONTEXT_WINDOW = 2_048
MAX_CONTEXT_WINDOW = 10_000_000


class AgentSpec(_WireModel):
    """An agent definition (the body of `POST /v1/agents`). See docs/design.md, "Agents, runs,
    threads"."""

    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = ""
    description: str = ""
    model: str | CustomModel
    system_prompt: str = Field("", alias="systemPrompt")
    tools: list[str | CustomToolSpec] = Field(default_factory=lambda: _default_tools())
    execution_mode: ExecutionMode = Field("in_sandbox", alias="executionMode")
    env: dict[str, str] = Field(default_factory=dict)
    max_iterations: int = Field(25, alias="maxIterations", ge=1)
    max_tokens: int | None = Field(None, alias="maxTokens", ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    timeout: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, alias="maxConcurrent", ge=1)
    secrets: list[str] = Field(default_factory=list)
    webhook_url: str | None = Field(None, alias="webhookUrl")
    webhook_events: list[WebhookEvent] = Field(
        default_factory=lambda: list(_ALL_WEBHOOK_EVENTS), alias="webhookEvents"
    )
    fail_on_limit: bool = Field(False, alias="failOnLimit")
    thinking_budget: int | None = Field(None, alias="thinkingBudget", ge=1)
    # The model's context window in tokens (default: runtime.providers.capabilities's table)
    # and the share of it past which the conversation is compacted (runtime/compaction.py).
    context_window: int | None = Field(
        None, alias="contextWindow", ge=MIN_CONTEXT_WINDOW, le=MAX_CONTEXT_WINDOW
    )
    compact_at: float | None = Field(None, alias="compactAt", ge=0.2, le=0.95)

    @field_validator("model")
    @classmethod
    def _model_is_named(cls, value: str | CustomModel) -> str | CustomModel:
        if isinstance(value, str) and not value.strip():
            raise ValueError("model must not be empty")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "webhookUrl")

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]
        if bad:
            raise ValueError(f"secrets must be environment variable names, got {bad}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _defaults_and_consistency(self) -> AgentSpec:
        if not self.name:
            self.name = self.slug
        names = [t if isinstance(t, str) else t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tools are named more than once: {', '.join(duplicates)}")
        return self

    def core_tool_names(self) -> list[str]:
        """The tools given by name (core tools), in order."""
        return [t for t in self.tools if isinstance(t, str)]

    def custom_tools(self) -> list[CustomToolSpec]:
        return [t for t in self.tools if isinstance(t, CustomToolSpec)]

    def unknown_tools(self) -> list[str]:
        """Names in `tools` that are not registered core tools (a 400 at upsert time)."""
        known = set(registered_tool_names())
        return [name for name in self.core_tool_names() if name not in known]

    def canonical(self) -> dict[str, Any]:
        """The JSON form used to decide whether an upsert changes the agent."""
        return self.model_dump(mode="json", by_alias=True)


class AgentRecord(BaseModel):
    """One stored version of an agent. `created_at` is when the slug was first created,
    `updated_at` when this version was written."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    version: int = Field(ge=1)
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    spec: AgentSpec

    @property
    def slug(self) -> str:
        return self.spec.slug

    def to_api(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The flat wire form: the spec's fields plus id, version, createdAt, updatedAt.

        Unless `reveal_secrets`, the custom model's apiKey and the values of env vars
        named in `secrets` are replaced by `[REDACTED]`."""
        data = self.spec.model_dump(mode="json", by_alias=True)
        if not reveal_secrets:
            model = data.get("model")
            if isinstance(model, dict) and model.get("apiKey"):
                model["apiKey"] = REDACTED
            for name in self.spec.secrets:
                if name in data["env"]:
                    data["env"][name] = REDACTED
        return {
            **data,
            "id": self.id,
            "version": self.version,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }
