"""Agent definitions: wire names, defaults, validation and the record's API form."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from runtime.agents import STORED, AgentRecord, AgentSpec, CustomModel, CustomToolSpec
from runtime.config import DEFAULT_MODEL
from tools.base import core_tool_names, default_tool_names


def spec(**fields: Any) -> AgentSpec:
    return AgentSpec.model_validate({"slug": "helper", "model": "claude-sonnet-4-6", **fields})


def test_defaults_follow_the_design() -> None:
    agent = spec()
    assert agent.name == "helper"
    assert agent.tools == default_tool_names()
    assert "bash" not in agent.tools  # the alias is opt-in
    assert agent.execution_mode == "in_sandbox"
    assert agent.max_iterations == 25
    assert agent.webhook_events == ["run.completed", "run.failed"]
    assert agent.fail_on_limit is False
    assert (agent.max_tokens, agent.temperature, agent.timeout, agent.max_concurrent) == (
        None,
        None,
        None,
        None,
    )


def test_wire_names_are_camel_case_in_and_out() -> None:
    body = {
        "slug": "coder",
        "name": "Coder",
        "model": "gpt-5",
        "systemPrompt": "Be brief.",
        "tools": ["read_file"],
        "executionMode": "managed",
        "env": {"TOKEN": "t0ps3cret"},
        "maxIterations": 5,
        "maxTokens": 1000,
        "temperature": 0.2,
        "timeout": 30,
        "maxConcurrent": 2,
        "secrets": ["TOKEN"],
        "webhookUrl": "https://hooks.example/agentd",
        "webhookEvents": ["run.failed"],
        "failOnLimit": True,
        "thinkingBudget": 2048,
    }
    agent = AgentSpec.model_validate(body)
    assert agent.system_prompt == "Be brief." and agent.max_concurrent == 2
    dumped = agent.model_dump(mode="json")
    assert {k: dumped[k] for k in body} == body
    # Python names are accepted too.
    assert AgentSpec(slug="coder", model="gpt-5", system_prompt="x").system_prompt == "x"


def test_custom_model_and_custom_tools() -> None:
    agent = spec(
        model={
            "provider": "custom",
            "endpoint": "http://127.0.0.1:9000/v1",
            "apiKey": "sk-custom-123",
            "format": "openai",
            "model": "local-llama",
        },
        tools=[
            "read_file",
            {
                "name": "lookup",
                "description": "Look a thing up",
                "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
                "invokeUrl": "https://tools.example/lookup",
            },
        ],
    )
    assert isinstance(agent.model, CustomModel) and agent.model.api_key == "sk-custom-123"
    assert agent.core_tool_names() == ["read_file"]
    [custom] = agent.custom_tools()
    assert isinstance(custom, CustomToolSpec) and custom.invoke_url.endswith("/lookup")


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "-leading"}, "slug"),
        ({"slug": "x" * 65}, "slug"),
        ({"model": ""}, "model"),
        ({"executionMode": "cloud"}, "executionMode"),
        ({"maxIterations": 0}, "maxIterations"),
        ({"temperature": 3}, "temperature"),
        ({"timeout": 0}, "timeout"),
        ({"webhookUrl": "ftp://x"}, "webhookUrl"),
        ({"webhookEvents": ["run.started"]}, "webhookEvents"),
        ({"secrets": ["not a name"]}, "secrets"),
        ({"unknownField": 1}, "unknownField"),
        ({"tools": ["read_file", "read_file"]}, "more than once"),
        ({"tools": [{"name": "t", "invokeUrl": "not-a-url"}]}, "invokeUrl"),
        (
            {"tools": [{"name": "t", "invokeUrl": "http://x", "inputSchema": {"type": "array"}}]},
            "inputSchema",
        ),
        ({"model": {"provider": "custom", "endpoint": "x", "format": "openai"}}, "endpoint"),
        ({"model": {"provider": "custom", "endpoint": "http://x", "format": "grpc"}}, "format"),
    ],
)
def test_invalid_definitions_are_refused_with_the_field_named(
    fields: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    assert complaint in str(info.value)


def test_unknown_tools_names_only_what_is_not_a_core_tool() -> None:
    known = core_tool_names()
    agent = spec(tools=[*known[:1], "no_such_tool", {"name": "mine", "invokeUrl": "http://x"}])
    assert agent.unknown_tools() == ["no_such_tool"]
    assert spec(tools=known).unknown_tools() == []


def test_canonical_form_ignores_how_the_spec_was_written() -> None:
    by_alias = AgentSpec.model_validate({"slug": "a", "model": "m", "systemPrompt": "p"})
    by_name = AgentSpec(slug="a", model="m", system_prompt="p", name="a")
    assert by_alias.canonical() == by_name.canonical()
    assert spec(systemPrompt="other").canonical() != spec().canonical()


def test_record_api_form_is_flat_and_hides_secret_values() -> None:
    agent = spec(
        env={"API_TOKEN": "tok-12345", "REGION": "eu"},
        secrets=["API_TOKEN"],
        model={
            "provider": "custom",
            "endpoint": "https://llm.example",
            "apiKey": "sk-live-999",
            "format": "anthropic",
        },
    )
    record = AgentRecord(
        id="agt_1", version=3, created_at="2025-01-01T00:00:00.000Z", updated_at="u", spec=agent
    )
    api = record.to_api()
    assert (api["id"], api["slug"], api["version"], api["createdAt"]) == (
        "agt_1",
        "helper",
        3,
        "2025-01-01T00:00:00.000Z",
    )
    assert api["env"] == {"API_TOKEN": "[REDACTED]", "REGION": "eu"}
    assert api["model"]["apiKey"] == "[REDACTED]"
    assert "sk-live-999" not in str(api) and "tok-12345" not in str(api)
    revealed = record.to_api(reveal_secrets=True)
    assert revealed["model"]["apiKey"] == "sk-live-999"
    assert revealed["env"]["API_TOKEN"] == "tok-12345"
    # The record round-trips through its wire form.
    assert AgentRecord.model_validate(record.model_dump(mode="json")) == record


def test_stored_definitions_are_read_back_under_the_rules_they_were_written_with() -> None:
    # An older daemon allowed `_` in slugs and any maxIterations: its stored agents still load
    # (and keep running), while a request with the same values is refused.
    old = {"slug": "old_style", "model": "claude-sonnet-4-6", "maxIterations": 500}
    with pytest.raises(ValidationError, match="slug"):
        AgentSpec.model_validate(old)
    loaded = AgentSpec.model_validate_json(json.dumps(old), context=STORED)
    assert (loaded.slug, loaded.max_iterations) == ("old_style", 500)


def test_the_default_model_comes_from_the_context() -> None:
    assert AgentSpec.model_validate({"slug": "a"}).model == DEFAULT_MODEL
    given = AgentSpec.model_validate({"slug": "a", "model": None}, context={"default_model": "x"})
    assert given.model == "x"
