"""The Responses adapter through the real `openai` SDK against the fake server."""

from __future__ import annotations

import pytest

from runtime.messages import Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from runtime.providers.base import (
    ModelError,
    ModelSettings,
    StreamRestarted,
    TextDelta,
    ThinkingDelta,
    ToolCallArgumentsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from runtime.providers.openai_responses import OpenAIResponsesProvider
from runtime.providers.registry import create_provider
from runtime.providers.retry import RetryPolicy
from tests.fakes.model_server import (
    FakeModelServer,
    HttpError,
    Turn,
    TurnUsage,
    redacted_thinking,
    text,
    thinking,
    tool_call,
)
from tests.providers.conftest import collect

TOOLS = [
    {
        "name": "exec_command",
        "description": "Run a command.",
        "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    }
]
SETTINGS = ModelSettings(model="gpt-5", max_tokens=4000)


def make(server: FakeModelServer, retry: RetryPolicy) -> OpenAIResponsesProvider:
    return OpenAIResponsesProvider(api_key="test-key", base_url=server.url + "/v1", retry=retry)


async def test_streams_reasoning_text_and_function_calls(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn(
            [
                thinking("**Plan**", " list the files", signature="gAAAA-encrypted"),
                text("Listing."),
                tool_call("exec_command", {"cmd": "ls -1"}, id="call_r1", chunks=5),
            ],
            usage=TurnUsage(
                input_tokens=900, cached_input_tokens=512, output_tokens=80, reasoning_tokens=64
            ),
        )
    )
    deltas, turn = await collect(
        make(server, retry).stream("Be helpful.", [Message.user("ls")], TOOLS, SETTINGS)
    )
    assert [d.text for d in deltas if isinstance(d, ThinkingDelta)] == [
        "**Plan**",
        " list the files",
    ]
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["Listing."]
    assert [(d.index, d.id, d.name) for d in deltas if isinstance(d, ToolCallStart)] == [
        (0, "call_r1", "exec_command")
    ]
    assert len([d for d in deltas if isinstance(d, ToolCallArgumentsDelta)]) == 5
    assert [d.call.arguments for d in deltas if isinstance(d, ToolCallEnd)] == [{"cmd": "ls -1"}]

    reasoning, message, call = turn.content
    assert isinstance(reasoning, ThinkingPart)
    assert reasoning.thinking == "**Plan** list the files"
    assert reasoning.provider == "openai-responses"
    assert reasoning.meta == {
        "id": "rs_fake_1_0",
        "summary": ["**Plan** list the files"],
        "encrypted_content": "gAAAA-encrypted",
    }
    assert message == TextPart(text="Listing.")
    assert call == ToolCallPart(
        id="call_r1",
        name="exec_command",
        arguments={"cmd": "ls -1"},
        meta={"item_id": "fc_fake_1_2"},
    )
    assert turn.stop_reason == "tool_use"
    assert turn.usage == Usage(
        input_tokens=900, output_tokens=80, cached_input_tokens=512, reasoning_tokens=64
    )

    req = server.requests[0]
    assert req.path == "/v1/responses"
    body = req.body
    assert body["stream"] is True and body["store"] is False
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert body["instructions"] == "Be helpful."
    assert body["max_output_tokens"] == 4000
    assert body["tools"] == [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a command.",
            "parameters": TOOLS[0]["input_schema"],
            "strict": False,
        }
    ]
    assert body["input"] == [{"role": "user", "content": [{"type": "input_text", "text": "ls"}]}]


async def test_round_trip_sends_reasoning_and_function_call_output_back(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn([thinking("think", signature="enc-1"), tool_call("exec_command", {"cmd": "pwd"})]),
        Turn([text("/work")]),
    )
    provider = make(server, retry)
    history = [Message.user("where?")]
    _, first = await collect(provider.stream(None, history, TOOLS, SETTINGS))
    call_id = first.tool_calls[0].id
    history += [
        Message(role="assistant", content=first.content),
        Message(role="tool", content=[ToolResultPart(call_id=call_id, output="/work")]),
    ]
    _, second = await collect(provider.stream(None, history, TOOLS, SETTINGS))
    assert second.text == "/work" and second.stop_reason == "end_turn"
    assert server.requests[1].body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "where?"}]},
        {
            "type": "reasoning",
            "id": "rs_fake_1_0",
            "summary": [{"type": "summary_text", "text": "think"}],
            "encrypted_content": "enc-1",
        },
        {
            "type": "function_call",
            "call_id": call_id,
            "name": "exec_command",
            "arguments": '{"cmd": "pwd"}',
            "id": "fc_fake_1_1",
        },
        {"type": "function_call_output", "call_id": call_id, "output": "/work"},
    ]


async def test_redacted_reasoning_keeps_encrypted_content(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([redacted_thinking("enc-only"), text("ok")]))
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("q")], [], SETTINGS)
    )
    assert not [d for d in deltas if isinstance(d, ThinkingDelta)]
    reasoning = turn.content[0]
    assert isinstance(reasoning, ThinkingPart)
    assert reasoning.thinking == "" and reasoning.meta["encrypted_content"] == "enc-only"


async def test_non_reasoning_model_gets_temperature_not_reasoning(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("hi")]))
    settings = ModelSettings(model="gpt-4.1", max_tokens=100, temperature=0.2)
    await collect(make(server, retry).stream(None, [Message.user("q")], [], settings))
    body = server.requests[0].body
    assert "reasoning" not in body and "include" not in body
    assert body["temperature"] == 0.2


async def test_incomplete_response_is_max_tokens(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("cut sh")], stop_reason="max_tokens"))
    _, turn = await collect(make(server, retry).stream(None, [Message.user("q")], [], SETTINGS))
    assert turn.stop_reason == "max_tokens" and turn.text == "cut sh"


@pytest.mark.parametrize(
    ("fault", "restarts"),
    [
        (HttpError(429, retry_after_ms=1), False),
        (HttpError(500), False),
        (Turn([text("a", "b")], cut_after=6), True),
        (Turn([text("a", "b")], malformed_after=6), True),
        (Turn([text("a", "b")], error_after=6), True),
    ],
    ids=["429", "500", "cut", "malformed", "error-event"],
)
async def test_transient_faults_are_survived(
    server: FakeModelServer, retry: RetryPolicy, fault: HttpError | Turn, restarts: bool
) -> None:
    server.script(fault, Turn([text("fine")]))
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("q")], [], SETTINGS)
    )
    assert turn.text == "fine"
    assert (StreamRestarted in [type(d) for d in deltas]) is restarts
    assert len(server.requests) == 2


async def test_client_error_is_final(server: FakeModelServer, retry: RetryPolicy) -> None:
    server.script(HttpError(404, message="The model `gpt-9` does not exist"))
    with pytest.raises(ModelError) as info:
        await collect(make(server, retry).stream(None, [Message.user("q")], [], SETTINGS))
    assert (info.value.code, info.value.status, info.value.retryable) == ("not_found", 404, False)
    assert "gpt-9" in info.value.message


async def test_routed_from_model_id_with_env(server: FakeModelServer) -> None:
    server.script(Turn([text("routed")]))
    provider, model_id = create_provider("o4-mini", env=server.env())
    assert isinstance(provider, OpenAIResponsesProvider) and model_id == "o4-mini"
    _, turn = await collect(
        provider.stream(None, [Message.user("q")], [], ModelSettings(model=model_id))
    )
    assert turn.text == "routed"
    assert server.requests[0].body["model"] == "o4-mini"
    await provider.aclose()


async def test_missing_openai_key_names_the_variable() -> None:
    provider, _ = create_provider("gpt-5", env={})
    with pytest.raises(ModelError) as info:
        await collect(provider.stream(None, [Message.user("q")], [], SETTINGS))
    assert info.value.code == "missing_api_key" and "OPENAI_API_KEY" in info.value.message


@pytest.mark.parametrize(
    ("model", "reasons"),
    [
        ("o3", True),
        ("o4-mini", True),
        ("gpt-5", True),
        ("gpt-5.5", True),
        ("gpt-6.2-sol", True),
        ("codex-mini", True),
        ("gpt-5-chat-latest", False),
        ("gpt-4.1", False),
        ("gpt-4o", False),
    ],
)
def test_which_models_are_asked_for_reasoning(model: str, reasons: bool) -> None:
    from runtime.providers.capabilities import is_reasoning_model

    assert is_reasoning_model(model) is reasons
