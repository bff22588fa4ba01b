"""Model-id routing, custom endpoints, environment, and the lazy SDK import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from runtime.messages import Message
from runtime.providers.anthropic import AnthropicProvider
from runtime.providers.base import ModelError, ModelSettings
from runtime.providers.openai_chat import OpenAIChatProvider
from runtime.providers.openai_responses import OpenAIResponsesProvider
from runtime.providers.registry import (
    PRELOADED_MODULES,
    create_provider,
    modules_for,
    preload_adapters,
    resolve_model,
    validate_model,
)
from tests.fakes.model_server import FakeModelServer, Turn, text
from tests.providers.conftest import collect


@pytest.mark.parametrize(
    ("model", "kind", "model_id"),
    [
        ("claude-sonnet-4-6", "anthropic", "claude-sonnet-4-6"),
        ("gpt-5", "openai-responses", "gpt-5"),
        ("gpt-4o-mini", "openai-responses", "gpt-4o-mini"),
        ("o1", "openai-responses", "o1"),
        ("o3-mini", "openai-responses", "o3-mini"),
        ("o4-mini-2025-04-16", "openai-responses", "o4-mini-2025-04-16"),
        ("codex-mini-latest", "openai-responses", "codex-mini-latest"),
        ("gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
        ("anthropic:my-proxy-model", "anthropic", "my-proxy-model"),
        ("openai:ft:gpt-4o:org:custom", "openai-responses", "ft:gpt-4o:org:custom"),
        ("openai-chat:gpt-4o", "openai-chat", "gpt-4o"),
        ("gemini:learnlm-2.0", "gemini", "learnlm-2.0"),
        ("replay:/tmp/demo.jsonl", "replay", "/tmp/demo.jsonl"),
    ],
)
def test_routing(model: str, kind: str, model_id: str) -> None:
    route = resolve_model(model)
    assert (route.kind, route.model_id) == (kind, model_id)


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("llama-3", "unknown model 'llama-3'"),
        ("", "empty"),
        ("openai-chat:", "names no model"),
        ("omega-1", "unknown model"),
        ({"provider": "other"}, '"provider": "custom"'),
        ({"provider": "custom", "endpoint": "ftp://x", "format": "openai"}, "http(s) URL"),
        ({"provider": "custom", "endpoint": "http://x/v1", "format": "grpc"}, "format"),
        (
            {"provider": "custom", "endpoint": "http://x/v1", "format": "openai", "apiKey": 3},
            "apiKey",
        ),
        (42, "string or a custom endpoint"),
    ],
)
def test_validation_names_the_problem(model: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_model(model)
    assert fragment in str(info.value)


def test_custom_spec_accepts_pydantic_objects() -> None:
    class Spec:
        def model_dump(self, by_alias: bool = False) -> dict:
            return {
                "provider": "custom",
                "endpoint": "http://h:1",
                "format": "anthropic",
                "apiKey": None,
                "model": None,
            }

    route = resolve_model(Spec())
    assert (route.kind, route.model_id) == ("custom", "default")


def test_env_selects_keys_and_base_urls() -> None:
    env = {
        "ANTHROPIC_API_KEY": "a",
        "ANTHROPIC_BASE_URL": "http://proxy:1/v1",
        "OPENAI_API_KEY": "o",
        "OPENAI_BASE_URL": "http://oai:2/v1",
        "GEMINI_API_KEY": "g",
    }
    anthropic, _ = create_provider("claude-haiku-4-5", env=env)
    assert isinstance(anthropic, AnthropicProvider)
    assert str(anthropic._client.base_url).rstrip("/") == "http://proxy:1"  # SDK adds /v1
    responses, _ = create_provider("gpt-5", env=env)
    assert isinstance(responses, OpenAIResponsesProvider)
    assert str(responses._client.base_url) == "http://oai:2/v1/"
    chat, _ = create_provider("openai-chat:gpt-4o", env=env)
    assert isinstance(chat, OpenAIChatProvider) and chat.max_tokens_field == "max_completion_tokens"
    gemini, _ = create_provider("gemini-2.5-flash", env=env)
    assert isinstance(gemini, OpenAIChatProvider) and gemini.name == "gemini"
    assert (
        str(gemini._client.base_url) == "https://generativelanguage.googleapis.com/v1beta/openai/"
    )
    tuned, _ = create_provider(
        "gpt-5", env={**env, "AGENTD_MODEL_MAX_ATTEMPTS": "2", "AGENTD_MODEL_RETRY_BASE_MS": "5"}
    )
    assert (tuned.retry.max_attempts, tuned.retry.base_delay) == (2, 0.005)


async def test_missing_anthropic_key_is_reported_when_streaming() -> None:
    provider, _ = create_provider("claude-sonnet-4-6", env={"OPENAI_API_KEY": "not this one"})
    with pytest.raises(ModelError) as info:
        await collect(provider.stream(None, [Message.user("x")], [], ModelSettings(model="m")))
    assert info.value.code == "missing_api_key"
    assert "ANTHROPIC_API_KEY is not set" in info.value.message


async def test_custom_anthropic_endpoint() -> None:
    async with FakeModelServer(api_key="proxy-key") as server:
        server.script(Turn([text("via proxy")]))
        provider, model_id = create_provider(
            {
                "provider": "custom",
                "endpoint": server.url + "/gateway",
                "apiKey": "proxy-key",
                "format": "anthropic",
                "model": "claude-proxy",
            },
            env={},
        )
        _, turn = await collect(
            provider.stream(None, [Message.user("hi")], [], ModelSettings(model=model_id))
        )
        assert turn.text == "via proxy"
        assert server.requests[0].path == "/gateway/v1/messages"
        assert server.requests[0].body["model"] == "claude-proxy"
        await provider.aclose()


def test_importing_the_registry_does_not_import_the_sdks() -> None:
    code = (
        "import sys, runtime.providers.registry as r; r.validate_model('claude-x');"
        "print(sorted(m for m in ('anthropic', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


CUSTOM_OPENAI = {"provider": "custom", "endpoint": "http://127.0.0.1:9/v1", "format": "openai"}
CUSTOM_ANTHROPIC = {"provider": "custom", "endpoint": "http://127.0.0.1:9", "format": "anthropic"}


@pytest.mark.parametrize(
    ("model", "modules"),
    [
        ("claude-sonnet-4-6", ("anthropic", "runtime.providers.anthropic")),
        ("gpt-5", ("openai", "runtime.providers.openai_responses")),
        ("openai-chat:x", ("openai", "runtime.providers.openai_chat")),
        ("gemini-2.5-pro", ("openai", "runtime.providers.openai_chat")),
        (CUSTOM_OPENAI, ("openai", "runtime.providers.openai_chat")),
        (CUSTOM_ANTHROPIC, ("anthropic", "runtime.providers.anthropic")),
        ("replay:/tmp/cassette.jsonl", ()),  # no SDK
        ("no-such-model", ()),
        (None, ()),
    ],
)
def test_a_model_names_the_sdk_and_adapter_its_provider_imports(
    model: object, modules: tuple[str, ...]
) -> None:
    assert modules_for(model) == modules
    assert set(modules) <= set(PRELOADED_MODULES)


def test_the_preload_imports_what_it_is_given_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr(importlib, "import_module", imported.append)
    assert preload_adapters(modules_for("gpt-5")) == []
    assert imported == ["openai", "runtime.providers.openai_responses"]
    imported.clear()
    assert preload_adapters() == []
    assert imported == list(PRELOADED_MODULES)


async def test_anthropic_auth_token_is_an_alternative_credential() -> None:
    async with FakeModelServer(api_key="oauth-token") as server:
        server.script(Turn([text("ok")]))
        env = {"ANTHROPIC_AUTH_TOKEN": "oauth-token", "ANTHROPIC_BASE_URL": server.url}
        provider, model_id = create_provider("claude-haiku-4-5", env=env)
        _, turn = await collect(
            provider.stream(None, [Message.user("hi")], [], ModelSettings(model=model_id))
        )
        assert turn.text == "ok"
        assert server.requests[0].headers["authorization"] == "Bearer oauth-token"
        await provider.aclose()
