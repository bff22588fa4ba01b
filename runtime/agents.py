"""Agent definitions: what `POST /v1/agents` upserts, and the stored, versioned record.

An `AgentSpec` is the definition a client sends (wire names camelCase, unknown fields
refused). The store keeps every version of it as an `AgentRecord`; `version` increases by
one whenever the spec changes and `id` never changes for a slug.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runtime.config import DEFAULT_MODEL
from runtime.limits import (
    MAX_CONCURRENT,
    MAX_CONTEXT_WINDOW,
    MAX_ITERATIONS,
    MAX_TIMEOUT_SECONDS,
    MAX_TOKENS,
    MIN_CONTEXT_WINDOW,
)
from tools.base import core_tool_names as registered_tool_names
from tools.base import default_tool_names

# Documented: "lowercase letters, numbers and hyphens". Slugs never contain `_`, so an agent
# id (`agt_…`) can stand wherever a slug is accepted without ambiguity.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
SLUG_RULE = "1–64 lowercase letters, numbers and hyphens, starting with a letter or a number"
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TOOL_NAME_RULE = "1–64 letters, numbers, underscores and hyphens"
REDACTED = "[REDACTED]"
# Tools the model provider runs itself (its hosted web search); no local implementation.
HOSTED_TOOL_NAMES: tuple[str, ...] = ("web_search",)
# Custom tool targets of the platform's SDK that this runtime cannot call.
UNSUPPORTED_TOOL_TARGETS = ("lambdaArn", "inlineScript")

ExecutionMode = Literal["in_sandbox", "managed", "local-mac"]
WebhookEvent = Literal["run.completed", "run.failed"]
_ALL_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("run.completed", "run.failed")
# Validation context of records read back from the store: the request-only rules (slug
# spelling, upper limits) were those of the daemon that wrote them and are not re-applied.
STORED = {"stored": True}


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {value!r}")
    return value


def _default_tools() -> list[str | CustomToolSpec]:
    return list(default_tool_names())


def _is_stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("stored"))


def check_limit(name: str, value: float | None, low: float, high: float) -> None:
    """Raise ValueError naming `name` unless `value` is None or a finite number in range."""
    if value is None:
        return
    # an int is compared exactly (math.isfinite would overflow on one past a float's range)
    finite = not isinstance(value, float) or math.isfinite(value)
    if not finite or not low <= value <= high:
        shown = repr(value) if abs(value) < 1e18 or not finite else "a larger number"
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {shown}")


class _WireModel(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True, serialize_by_alias=True, extra="forbid", defer_build=True
    )


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
    """A tool the daemon implements by POSTing the call's arguments to `invokeUrl`, as the
    platform's SDK sends it (`id` is kept; a tool with `enabled: false` is not offered)."""

    id: str | None = Field(None, max_length=200, description="the platform's id of the tool")
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}, alias="inputSchema"
    )
    enabled: bool = Field(True, description="false: kept in the definition, not offered")
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


class AgentSpec(_WireModel):
    """An agent definition (the body of `POST /v1/agents`). See docs/design.md, "Agents, runs,
    threads" and "The HTTP API".

    A missing (or null) `model` is the daemon's default model: the validation context's
    `default_model` (`--default-model`), else `DEFAULT_MODEL`."""

    slug: str = Field(
        description=f"{SLUG_RULE}; also the agent's run path",
        json_schema_extra={"pattern": SLUG_PATTERN},
    )
    name: str = ""
    description: str = ""
    model: str | CustomModel = Field(
        DEFAULT_MODEL, description="model id or custom endpoint (default: --default-model)"
    )
    system_prompt: str = Field("", alias="systemPrompt")
    tools: list[str | CustomToolSpec] = Field(
        default_factory=lambda: _default_tools(),
        description="core tool names, `web_search`, Tool Hub slugs and custom tool objects",
    )
    sandbox: str | None = Field(None, max_length=200, description="the sandbox (template) name")
    execution_mode: ExecutionMode = Field("in_sandbox", alias="executionMode")
    target_device_id: str | None = Field(
        None, alias="targetDeviceId", max_length=200, description="required for local-mac"
    )
    resources: list[dict[str, Any]] = Field(
        default_factory=list, description="attached workspace or sandbox resources"
    )
    env: dict[str, str] = Field(default_factory=dict)
    max_iterations: int = Field(
        25, alias="maxIterations", ge=1, json_schema_extra={"maximum": MAX_ITERATIONS}
    )
    max_tokens: int | None = Field(
        None, alias="maxTokens", ge=1, json_schema_extra={"maximum": MAX_TOKENS}
    )
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    timeout: float | None = Field(
        None, gt=0, allow_inf_nan=False, json_schema_extra={"maximum": MAX_TIMEOUT_SECONDS}
    )
    max_concurrent: int | None = Field(
        None, alias="maxConcurrent", ge=1, json_schema_extra={"maximum": MAX_CONCURRENT}
    )
    secrets: list[str] = Field(default_factory=list)
    webhook_url: str | None = Field(None, alias="webhookUrl")
    webhook_events: list[WebhookEvent] = Field(
        default_factory=lambda: list(_ALL_WEBHOOK_EVENTS), alias="webhookEvents"
    )
    fail_on_limit: bool = Field(False, alias="failOnLimit")
    thinking_budget: int | None = Field(
        None, alias="thinkingBudget", ge=1, json_schema_extra={"maximum": MAX_TOKENS}
    )
    # The model's context window in tokens (default: runtime.providers.capabilities's table)
    # and the share of it past which the conversation is compacted (runtime/compaction.py).
    context_window: int | None = Field(
        None, alias="contextWindow", ge=MIN_CONTEXT_WINDOW, le=MAX_CONTEXT_WINDOW
    )
    compact_at: float | None = Field(None, alias="compactAt", ge=0.2, le=0.95)

    @model_validator(mode="before")
    @classmethod
    def _fill_default_model(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("model") is None:
            context = info.context if isinstance(info.context, dict) else {}
            data = {**data, "model": context.get("default_model") or DEFAULT_MODEL}
        return data

    @field_validator("env")
    @classmethod
    def _env_rule(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """What a process environment can hold, checked when the agent is stored rather than
        failing every command of its runs. The message names the variable, never a value
        (values may be secrets)."""
        if _is_stored(info):
            return value
        for name, text in value.items():
            if not name or "=" in name or "\0" in name:
                raise ValueError(
                    f"env: {name!r} cannot name an environment variable (it is empty or holds "
                    "'=' or a NUL byte)"
                )
            if "\0" in text:
                raise ValueError(
                    f"env: the value of {name} holds a NUL byte (\\u0000), which no environment "
                    "value can"
                )
        return value

    @field_validator("slug")
    @classmethod
    def _slug_rule(cls, value: str, info: ValidationInfo) -> str:
        if not _is_stored(info) and not re.fullmatch(SLUG_PATTERN, value):
            raise ValueError(f"slug must be {SLUG_RULE}")  # the value is added where it is shown
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _supported_tool_targets(cls, value: Any) -> Any:
        for index, tool in enumerate(value if isinstance(value, list) else []):
            if not isinstance(tool, dict):
                continue
            targets = [key for key in UNSUPPORTED_TOOL_TARGETS if key in tool]
            if targets:
                named = tool.get("name", f"#{index}")
                raise ValueError(
                    f"tool {named!r}: {' and '.join(targets)} tools are not supported by "
                    "this runtime; give the tool an invokeUrl (an HTTP endpoint the daemon "
                    "POSTs the arguments to) instead"
                )
        return value

    @field_validator("tools")
    @classmethod
    def _tool_names_rule(
        cls, value: list[str | CustomToolSpec], info: ValidationInfo
    ) -> list[str | CustomToolSpec]:
        """A tool given by name follows the custom tools' rule (the name the model sees, and
        a Tool Hub slug in the hub's URL: `..` would be the hub's root)."""
        if _is_stored(info):
            return value
        bad = [
            f"tools[{index}] {name!r}"
            for index, name in enumerate(value)
            if isinstance(name, str) and not re.fullmatch(TOOL_NAME_PATTERN, name)
        ]
        if bad:
            raise ValueError(
                f"tool names are {TOOL_NAME_RULE}; not {', '.join(bad[:5])}"
                + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            )
        return value

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
    def _defaults_and_consistency(self, info: ValidationInfo) -> AgentSpec:
        if not self.name:
            self.name = self.slug
        names = [t if isinstance(t, str) else t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tools are named more than once: {', '.join(duplicates)}")
        if _is_stored(info):
            return self
        if self.execution_mode == "local-mac" and not self.target_device_id:
            raise ValueError(
                "targetDeviceId is required when executionMode is local-mac (the device "
                "that runs the agent)"
            )
        check_limit("maxIterations", self.max_iterations, 1, MAX_ITERATIONS)
        check_limit("maxTokens", self.max_tokens, 1, MAX_TOKENS)
        check_limit("thinkingBudget", self.thinking_budget, 1, MAX_TOKENS)
        check_limit("timeout", self.timeout, 0, MAX_TIMEOUT_SECONDS)
        check_limit("maxConcurrent", self.max_concurrent, 1, MAX_CONCURRENT)
        return self

    def named_tools(self) -> list[str]:
        """Every tool given by name (core tools, hosted tools, Tool Hub slugs), in order."""
        return [t for t in self.tools if isinstance(t, str)]

    def core_tool_names(self) -> list[str]:
        """The tools given by name that are implemented in this daemon, in order."""
        known = set(registered_tool_names())
        return [name for name in self.named_tools() if name in known]

    def hosted_tools(self) -> list[str]:
        """The tools the model provider runs (`web_search`)."""
        return [name for name in self.named_tools() if name in HOSTED_TOOL_NAMES]

    def custom_tools(self) -> list[CustomToolSpec]:
        """The enabled custom tools (a disabled one is kept but not offered)."""
        return [t for t in self.tools if isinstance(t, CustomToolSpec) and t.enabled]

    def declared_custom_tools(self) -> list[CustomToolSpec]:
        """Every custom tool of the definition, enabled or not."""
        return [t for t in self.tools if isinstance(t, CustomToolSpec)]

    def unknown_tools(self) -> list[str]:
        """Names in `tools` that are neither core tools nor hosted ones: Tool Hub slugs when
        the daemon has a hub, a 400 at upsert time otherwise."""
        known = {*registered_tool_names(), *HOSTED_TOOL_NAMES}
        return [name for name in self.named_tools() if name not in known]

    def canonical(self) -> dict[str, Any]:
        """The JSON form used to decide whether an upsert changes the agent."""
        return self.model_dump(mode="json", by_alias=True)


class AgentRecord(BaseModel):
    """One stored version of an agent. `created_at` is when the slug was first created,
    `updated_at` when this version was written."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, defer_build=True)

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
