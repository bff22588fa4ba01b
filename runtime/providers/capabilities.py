"""What each model route can take, owned here as data.

The SDKs keep some of this knowledge privately (which Claude models want adaptive thinking)
and some of it nowhere (which routes take `temperature`); depending on their internals broke
the build when a release moved them. This module is the one place that answers, with tests
(tests/providers/test_capabilities.py), and both the adapters (what they send) and the API
(what it refuses at upsert) ask it, so the two cannot disagree.

`temperature` by route:
- Anthropic Messages (and custom `anthropic` endpoints): never; the Messages API of the 2.x
  SDK has no such parameter.
- OpenAI Responses with a reasoning model (o-series, gpt-5 and later, codex-*) or a thinking
  budget: never; reasoning models refuse sampling settings.
- OpenAI Responses with other models, OpenAI Chat, Gemini, custom `openai` endpoints: sent.
- replay: irrelevant (nothing is sent).

`web_search` (a hosted tool: the provider runs it) by route:
- Anthropic Messages: the server tool `web_search_20250305` (`server_tool_use` and
  `web_search_tool_result` blocks).
- OpenAI Responses: the `web_search` tool (`web_search_call` items).
- OpenAI Chat, Gemini's OpenAI-compatible endpoint, custom endpoints, replay: none. Gemini's
  search grounding exists only in its native API; the OpenAI-compatible endpoint documents
  function tools alone and returns no search results in its stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Claude models for which budgeted thinking (`{"type": "enabled", "budget_tokens"}`) is
# deprecated in favour of `{"type": "adaptive"}` (the anthropic SDK warns for exactly these
# as of 2.15). Extend it when a new model joins them.
ADAPTIVE_THINKING_MODELS = frozenset({"claude-opus-4-6", "claude-mythos-preview"})

# OpenAI models that reason: they take `reasoning`, and refuse sampling settings.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-(?:[5-9]|\d{2,})|codex-)")


def prefers_adaptive_thinking(model: str) -> bool:
    """Whether a Claude model wants `thinking: {"type": "adaptive"}` rather than a budget."""
    return model in ADAPTIVE_THINKING_MODELS


def is_reasoning_model(model: str) -> bool:
    """Whether an OpenAI model id names a reasoning model (`*-chat` variants do not reason)."""
    return bool(_REASONING_MODEL.match(model)) and "-chat" not in model


@dataclass(frozen=True)
class UnsupportedSetting:
    """A setting a route never sends: `setting` is the agent/config field, `reason` says why
    and what to do instead."""

    setting: str
    reason: str

    def message(self) -> str:
        return f"{self.setting} is not sent: {self.reason}"


def unsupported_settings(
    kind: str,
    model_id: str,
    *,
    temperature: float | None = None,
    thinking_budget: int | None = None,
    custom_format: str | None = None,
) -> list[UnsupportedSetting]:
    """The settings among those given (not None) that route `kind` never sends for `model_id`.

    `kind` is a registry route kind (`anthropic`, `openai-responses`, `openai-chat`,
    `gemini`, `replay`, `custom`); `custom_format` is a custom endpoint's wire format.
    """
    if temperature is None:
        return []
    if kind == "anthropic" or (kind == "custom" and custom_format == "anthropic"):
        return [
            UnsupportedSetting(
                "temperature",
                "the Anthropic Messages API takes no temperature; leave it unset for "
                f"{model_id}, or use an OpenAI Chat, Gemini or non-reasoning OpenAI model",
            )
        ]
    if kind == "openai-responses" and (thinking_budget or is_reasoning_model(model_id)):
        return [
            UnsupportedSetting(
                "temperature",
                f"{model_id} is a reasoning model on the OpenAI Responses API, which refuses "
                "sampling settings; leave temperature unset (or pick a non-reasoning model "
                "such as gpt-4.1)",
            )
        ]
    return []


# Context windows (input + output tokens) by model id prefix, longest prefix first. The
# providers' published figures for the models they serve today; a dated or suffixed id
# (claude-sonnet-4-6-20260101, gpt-5.5-mini) takes its family's figure.
_CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("claude-", 200_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("chatgpt-4o", 128_000),
    ("gpt-5", 400_000),
    ("gpt-6", 400_000),
    ("codex-", 400_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
    ("gemini-", 1_048_576),
)

# For ids we do not know (custom endpoints, new families): small enough for any model an
# agent would use today, so a wrong guess compacts early rather than overflowing.
DEFAULT_CONTEXT_WINDOW = 32_768


def context_window(model_id: str) -> int:
    """The context window of a model id (routing prefixes removed), or the default."""
    for prefix, window in sorted(_CONTEXT_WINDOWS, key=lambda item: -len(item[0])):
        if model_id.startswith(prefix):
            return window
    return DEFAULT_CONTEXT_WINDOW


HOSTED_TOOL_ROUTES: dict[str, frozenset[str]] = {
    "web_search": frozenset({"anthropic", "openai-responses"}),
}
HOSTED_TOOL_MODELS = {
    "web_search": "Anthropic models (claude-*, anthropic:<id>) and OpenAI Responses models "
    "(gpt-*, o1…o9*, codex-*, openai:<id>)",
}


def hosted_tool_problem(kind: str, model_id: str, tools: list[str]) -> str | None:
    """Why route `kind` cannot give `model_id` the hosted tools `tools` (None if it can)."""
    for tool in tools:
        if kind not in HOSTED_TOOL_ROUTES.get(tool, frozenset()):
            return (
                f"{tool} is run by the model provider, and {model_id} ({kind} route) has no "
                f"hosted {tool}; it is supported by {HOSTED_TOOL_MODELS[tool]}. Pick one of "
                f"those models or remove {tool} from the tools"
            )
    return None
