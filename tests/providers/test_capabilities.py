"""What each route takes: the data the adapters and the upsert check both ask."""

from __future__ import annotations

import pytest

from runtime.providers.anthropic import AnthropicProvider
from runtime.providers.base import ModelSettings
from runtime.providers.capabilities import (
    ADAPTIVE_THINKING_MODELS,
    prefers_adaptive_thinking,
    unsupported_settings,
)
from runtime.providers.openai_chat import OpenAIChatProvider
from runtime.providers.openai_responses import OpenAIResponsesProvider
from runtime.providers.registry import unsupported_settings as model_unsupported


def test_adaptive_thinking_models_are_ours_and_drive_the_request() -> None:
    assert {"claude-opus-4-6", "claude-mythos-preview"} <= ADAPTIVE_THINKING_MODELS
    assert prefers_adaptive_thinking("claude-opus-4-6")
    assert not prefers_adaptive_thinking("claude-sonnet-4-6")
    provider = AnthropicProvider(api_key=None)
    adaptive = provider.build_request(
        None, [], [], ModelSettings(model="claude-opus-4-6", thinking_budget=4000)
    )
    budgeted = provider.build_request(
        None, [], [], ModelSettings(model="claude-sonnet-4-6", thinking_budget=4000)
    )
    assert adaptive["thinking"] == {"type": "adaptive"}
    assert budgeted["thinking"] == {"type": "enabled", "budget_tokens": 4000}


@pytest.mark.parametrize(
    ("model", "refused"),
    [
        ("claude-sonnet-4-6", True),
        ("anthropic:my-claude", True),
        ({"provider": "custom", "endpoint": "http://127.0.0.1:1", "format": "anthropic"}, True),
        ("gpt-5", True),
        ("o3-mini", True),
        ("codex-mini-latest", True),
        ("gpt-4.1", False),
        ("gpt-5-chat-latest", False),
        ("openai-chat:gpt-5", False),
        ("gemini-2.5-pro", False),
        ({"provider": "custom", "endpoint": "http://127.0.0.1:1", "format": "openai"}, False),
        ("replay:/tmp/x.jsonl", False),
    ],
)
def test_which_routes_take_temperature(model: object, refused: bool) -> None:
    problems = model_unsupported(model, temperature=0.2)
    assert [p.setting for p in problems] == (["temperature"] if refused else [])
    assert model_unsupported(model) == []  # nothing set, nothing refused
    for problem in problems:
        assert problem.message().startswith("temperature is not sent: ")


def test_a_thinking_budget_makes_responses_a_reasoning_call() -> None:
    assert unsupported_settings("openai-responses", "gpt-4.1", temperature=0.2) == []
    refused = unsupported_settings(
        "openai-responses", "gpt-4.1", temperature=0.2, thinking_budget=2048
    )
    assert [p.setting for p in refused] == ["temperature"]


@pytest.mark.parametrize(
    ("provider", "model", "thinking_budget"),
    [
        (AnthropicProvider(api_key=None), "claude-sonnet-4-6", None),
        (AnthropicProvider(api_key=None), "claude-sonnet-4-6", 2048),
        (OpenAIResponsesProvider(api_key=None), "gpt-5", None),
        (OpenAIResponsesProvider(api_key=None), "gpt-4.1", None),
        (OpenAIResponsesProvider(api_key=None), "gpt-4.1", 2048),
        (OpenAIChatProvider(api_key=None), "gpt-4o", None),
    ],
)
def test_adapters_send_temperature_exactly_where_the_data_says(
    provider: AnthropicProvider | OpenAIResponsesProvider | OpenAIChatProvider,
    model: str,
    thinking_budget: int | None,
) -> None:
    settings = ModelSettings(model=model, temperature=0.4, thinking_budget=thinking_budget)
    body = provider.build_request(None, [], [], settings)
    kind = {
        AnthropicProvider: "anthropic",
        OpenAIResponsesProvider: "openai-responses",
        OpenAIChatProvider: "openai-chat",
    }[type(provider)]
    refused = unsupported_settings(kind, model, temperature=0.4, thinking_budget=thinking_budget)
    assert ("temperature" in body) is (not refused)
