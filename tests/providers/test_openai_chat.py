"""The Chat Completions adapter (OpenAI, Gemini, custom endpoints) through the real `openai`
SDK against the fake server."""

from __future__ import annotations

import pytest

from runtime.messages import (
    ImagePart,
    Message,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)
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
from runtime.providers.openai_chat import OpenAIChatProvider
from runtime.providers.registry import create_provider
from runtime.providers.retry import RetryPolicy
from tests.fakes.model_server import FakeModelServer, HttpError, Turn, TurnUsage, text, thinking
from tests.fakes.model_server import tool_call as tc
from tests.providers.conftest import collect

TOOLS = [
    {
        "name": "exec_command",
        "description": "Run a command.",
        "input_schema": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    },
    {
        "name": "read_file",
        "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
]
SETTINGS = ModelSettings(model="gpt-4.1", max_tokens=1000)


def make(server: FakeModelServer, retry: RetryPolicy) -> OpenAIChatProvider:
    return OpenAIChatProvider(api_key="test-key", base_url=server.url + "/v1", retry=retry)


async def test_streams_text_and_parallel_tool_calls(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn(
            [
                text("Checking ", "both."),
                tc("exec_command", {"cmd": "ls"}, id="call_a", chunks=4),
                tc("read_file", {"path": "README.md"}, id="call_b", chunks=6),
            ],
            usage=TurnUsage(
                input_tokens=500, cached_input_tokens=384, output_tokens=30, reasoning_tokens=12
            ),
        )
    )
    deltas, turn = await collect(
        make(server, retry).stream("Be brief.", [Message.user("go")], TOOLS, SETTINGS)
    )
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["Checking ", "both."]
    starts = [(d.index, d.id, d.name) for d in deltas if isinstance(d, ToolCallStart)]
    assert starts == [(0, "call_a", "exec_command"), (1, "call_b", "read_file")]
    per_call: dict[int, list[str]] = {}
    for d in deltas:
        if isinstance(d, ToolCallArgumentsDelta):
            per_call.setdefault(d.index, []).append(d.arguments)
    assert len(per_call[0]) == 4 and len(per_call[1]) == 6
    assert "".join(per_call[1]) == '{"path": "README.md"}'
    ends = [d.call for d in deltas if isinstance(d, ToolCallEnd)]
    assert ends == turn.tool_calls
    assert turn.content == [
        TextPart(text="Checking both."),
        ToolCallPart(id="call_a", name="exec_command", arguments={"cmd": "ls"}),
        ToolCallPart(id="call_b", name="read_file", arguments={"path": "README.md"}),
    ]
    assert turn.stop_reason == "tool_use"
    # prompt_tokens already includes the cached tokens.
    assert turn.usage == Usage(
        input_tokens=500, output_tokens=30, cached_input_tokens=384, reasoning_tokens=12
    )

    body = server.requests[0].body
    assert server.requests[0].path == "/v1/chat/completions"
    assert server.requests[0].headers["authorization"] == "Bearer test-key"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 1000
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "exec_command",
            "description": "Run a command.",
            "parameters": TOOLS[0]["input_schema"],
        },
    }


async def test_round_trip_of_tool_calls_results_and_images(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("ok")]))
    history = [
        Message(
            role="user",
            content=[
                TextPart(text="what is this?"),
                ImagePart(media_type="image/png", data="iVBO"),
            ],
        ),
        Message(
            role="assistant",
            content=[
                ThinkingPart(thinking="hmm", signature="sig", provider="anthropic"),
                TextPart(text="Let me run it."),
                ToolCallPart(id="call_1", name="exec_command", arguments={"cmd": "file x"}),
                ToolCallPart(id="call_2", name="exec_command", raw_arguments="{oops"),
            ],
        ),
        Message(
            role="tool",
            content=[
                ToolResultPart(call_id="call_1", output="PNG image"),
                ToolResultPart(call_id="call_2", output="invalid JSON", is_error=True),
            ],
        ),
    ]
    await collect(make(server, retry).stream(None, history, TOOLS, SETTINGS))
    sent = server.requests[0].body["messages"]
    assert sent == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me run it.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd": "file x"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": "{oops"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "PNG image"},
        {"role": "tool", "tool_call_id": "call_2", "content": "invalid JSON"},
    ]


async def test_reasoning_content_becomes_thinking(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([thinking("step 1, ", "step 2"), text("answer")]))
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("q")], [], SETTINGS)
    )
    assert [d.text for d in deltas if isinstance(d, ThinkingDelta)] == ["step 1, ", "step 2"]
    assert turn.thinking == "step 1, step 2"
    assert turn.text == "answer" and turn.stop_reason == "end_turn"


async def test_malformed_arguments_and_length_stop(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([tc("exec_command", '{"cmd": "ls', id="call_x")], stop_reason="max_tokens"))
    _, turn = await collect(make(server, retry).stream(None, [Message.user("q")], TOOLS, SETTINGS))
    (call,) = turn.tool_calls
    assert (call.arguments, call.raw_arguments) == ({}, '{"cmd": "ls')
    assert turn.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("fault", "restarts"),
    [
        (HttpError(429, retry_after_ms=2), False),
        (HttpError(500), False),
        (HttpError(503, retry_after="0"), False),
        (Turn([text("par", "tial")], cut_after=3), True),
        (Turn([text("par", "tial")], malformed_after=2), True),
        (Turn([text("par", "tial")], error_after=3), True),
    ],
    ids=["429", "500", "503", "cut", "malformed", "error-chunk"],
)
async def test_transient_faults_are_survived(
    server: FakeModelServer, retry: RetryPolicy, fault: HttpError | Turn, restarts: bool
) -> None:
    server.script(fault, Turn([text("fine")]))
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("q")], [], SETTINGS)
    )
    assert turn.text == "fine"
    assert len(server.requests) == 2
    kinds = [type(d) for d in deltas]
    assert (StreamRestarted in kinds) is restarts
    # Consumers drop what came before the marker; after it, the turn is whole.
    after = deltas[kinds.index(StreamRestarted) + 1 :] if restarts else deltas
    assert [d.text for d in after if isinstance(d, TextDelta)] == ["fine"]


async def test_quota_429_is_not_retried(server: FakeModelServer, retry: RetryPolicy) -> None:
    server.script(
        HttpError(429, message="You exceeded your current quota", error_type="insufficient_quota")
    )
    # The fake puts error_type in "type"; OpenAI sends it as "code" too — both are honoured.
    with pytest.raises(ModelError) as info:
        await collect(make(server, retry).stream(None, [Message.user("q")], [], SETTINGS))
    assert info.value.status == 429
    assert len(server.requests) == 1
    assert not info.value.retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_fail_at_once(
    server: FakeModelServer, retry: RetryPolicy, status: int
) -> None:
    server.script(HttpError(status, message="no good"))
    with pytest.raises(ModelError) as info:
        await collect(make(server, retry).stream(None, [Message.user("q")], [], SETTINGS))
    assert info.value.status == status and not info.value.retryable
    assert "no good" in info.value.message
    assert len(server.requests) == 1


async def test_gemini_thought_signatures_and_stop_with_tool_calls(server: FakeModelServer) -> None:
    server.script(
        Turn(
            [tc("exec_command", {"cmd": "date"}, id="call_g", thought_signature="c2lnbmF0dXJl")],
            wire_stop="stop",  # Gemini ends tool-call turns with "stop"
        ),
        Turn([text("It is today.")]),
    )
    provider, model_id = create_provider("gemini-2.5-pro", env=server.env())
    assert model_id == "gemini-2.5-pro"
    settings = ModelSettings(model=model_id, max_tokens=500)
    history = [Message.user("what date?")]
    _, first = await collect(provider.stream(None, history, TOOLS, settings))
    assert first.stop_reason == "tool_use"
    (call,) = first.tool_calls
    assert call.meta == {"extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}}}

    history += [
        Message(role="assistant", content=first.content),
        Message(role="tool", content=[ToolResultPart(call_id="call_g", output="Tue")]),
    ]
    _, second = await collect(provider.stream(None, history, TOOLS, settings))
    assert second.text == "It is today."
    first_req, second_req = server.requests
    assert first_req.path == "/v1beta/openai/chat/completions"
    assert first_req.body["max_tokens"] == 500
    echoed = second_req.body["messages"][1]["tool_calls"][0]
    assert echoed["extra_content"] == {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    await provider.aclose()


async def test_missing_gemini_key_names_the_variable() -> None:
    provider, _ = create_provider("gemini-2.5-flash", env={})
    with pytest.raises(ModelError) as info:
        await collect(provider.stream(None, [Message.user("q")], [], SETTINGS))
    assert info.value.code == "missing_api_key"
    assert "GEMINI_API_KEY" in info.value.message


async def test_custom_openai_endpoint(server: FakeModelServer) -> None:
    server.script(Turn([text("local says hi")]))
    provider, model_id = create_provider(
        {
            "provider": "custom",
            "endpoint": f"{server.url}/llm/v1/chat/completions",
            "apiKey": "local-key",
            "format": "openai",
            "model": "qwen3-coder",
        },
        env={},
    )
    assert model_id == "qwen3-coder"
    _, turn = await collect(
        provider.stream(None, [Message.user("hi")], [], ModelSettings(model=model_id))
    )
    assert turn.text == "local says hi"
    req = server.requests[0]
    assert req.path == "/llm/v1/chat/completions"
    assert req.api_key == "local-key"
    assert req.body["model"] == "qwen3-coder"
    await provider.aclose()


async def test_slow_first_byte_past_the_timeout_is_retried(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("late")], first_byte_delay=1.0), Turn([text("prompt")]))
    provider = OpenAIChatProvider(
        api_key="k", base_url=server.url + "/v1", retry=retry, timeout=0.2
    )
    _, turn = await collect(provider.stream(None, [Message.user("q")], [], SETTINGS))
    assert turn.text == "prompt"
    assert len(server.requests) == 2
