"""The Anthropic adapter, driven through the real `anthropic` SDK against the fake server."""

from __future__ import annotations

import httpx
import pytest

from runtime.messages import Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from runtime.providers.anthropic import AnthropicProvider
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
from runtime.providers.retry import RetryPolicy
from tests.fakes.model_server import (
    FakeModelServer,
    Gate,
    HttpError,
    Turn,
    TurnUsage,
    redacted_thinking,
    text,
    thinking,
    tool_call,
)
from tests.providers.conftest import SleepRecorder, collect

TOOLS = [
    {
        "name": "exec_command",
        "description": "Run a command.",
        "input_schema": {
            "type": "object",
            "properties": {"cmd": {"type": "string"}},
            "required": ["cmd"],
        },
    },
    {
        "name": "read_file",
        "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
]
SETTINGS = ModelSettings(model="claude-sonnet-4-6", max_tokens=2048)


def make(server: FakeModelServer, retry: RetryPolicy, **kw: object) -> AnthropicProvider:
    return AnthropicProvider(api_key="test-key", base_url=server.url, retry=retry, **kw)  # type: ignore[arg-type]


async def test_streams_thinking_text_and_tool_calls(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn(
            [
                thinking("Let me ", "look.", signature="sig-abc"),
                text("I'll ", "list ", "files."),
                tool_call("exec_command", {"cmd": "ls -la"}, id="toolu_1", chunks=5),
                tool_call("read_file", {"path": "a.txt"}, id="toolu_2", chunks=2),
            ],
            usage=TurnUsage(
                input_tokens=1000,
                cached_input_tokens=600,
                cache_creation_input_tokens=300,
                output_tokens=42,
                reasoning_tokens=20,
            ),
        )
    )
    provider = make(server, retry)
    deltas, turn = await collect(
        provider.stream("You are terse.", [Message.user("list files")], TOOLS, SETTINGS)
    )

    assert [d.text for d in deltas if isinstance(d, ThinkingDelta)] == ["Let me ", "look."]
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["I'll ", "list ", "files."]
    starts = [d for d in deltas if isinstance(d, ToolCallStart)]
    assert [(s.index, s.id, s.name) for s in starts] == [
        (0, "toolu_1", "exec_command"),
        (1, "toolu_2", "read_file"),
    ]
    arg_chunks = [d.arguments for d in deltas if isinstance(d, ToolCallArgumentsDelta)]
    assert len(arg_chunks) == 7  # the arguments arrived split across many deltas
    assert "".join(arg_chunks) == '{"cmd": "ls -la"}{"path": "a.txt"}'
    ends = [d for d in deltas if isinstance(d, ToolCallEnd)]
    assert [e.call.arguments for e in ends] == [{"cmd": "ls -la"}, {"path": "a.txt"}]

    assert turn.stop_reason == "tool_use"
    assert turn.content == [
        ThinkingPart(thinking="Let me look.", signature="sig-abc", provider="anthropic"),
        TextPart(text="I'll list files."),
        ToolCallPart(id="toolu_1", name="exec_command", arguments={"cmd": "ls -la"}),
        ToolCallPart(id="toolu_2", name="read_file", arguments={"path": "a.txt"}),
    ]
    # Anthropic's input_tokens excludes cache reads and writes; ours counts every input token.
    assert turn.usage == Usage(
        input_tokens=1000, output_tokens=42, cached_input_tokens=600, reasoning_tokens=20
    )
    assert turn.model == "claude-sonnet-4-6"


async def test_request_carries_tools_cache_control_and_thinking(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("ok")]))
    provider = make(server, retry)
    settings = ModelSettings(model="claude-opus-4", max_tokens=1000, thinking_budget=4000)
    await collect(provider.stream("SYSTEM", [Message.user("hi")], TOOLS, settings))

    req = server.requests[0]
    assert req.path == "/v1/messages"
    assert req.headers["authorization"] == "Bearer test-key"
    assert "anthropic-version" in req.headers
    body = req.body
    assert body["stream"] is True
    assert body["model"] == "claude-opus-4"
    assert body["system"] == [
        {"type": "text", "text": "SYSTEM", "cache_control": {"type": "ephemeral"}}
    ]
    assert [t["name"] for t in body["tools"]] == ["exec_command", "read_file"]
    assert body["tools"][0]["input_schema"] == TOOLS[0]["input_schema"]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
        }
    ]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4000}
    assert body["max_tokens"] == 5024  # room for an answer after the thinking budget
    assert "temperature" not in body


async def test_models_that_deprecate_budgets_get_adaptive_thinking(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("ok")]))
    settings = ModelSettings(model="claude-opus-4-6", max_tokens=1000, thinking_budget=4000)
    await collect(make(server, retry).stream(None, [Message.user("hi")], [], settings))
    assert server.requests[0].body["thinking"] == {"type": "adaptive"}


async def test_conversation_round_trips_thinking_signatures_and_tool_results(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn(
            [
                thinking("Plan.", signature="sig-1"),
                redacted_thinking("opaque-redacted-blob"),
                tool_call("exec_command", {"cmd": "pwd"}, id="toolu_a"),
            ]
        ),
        Turn([text("You are in /w.")]),
    )
    provider = make(server, retry)
    history = [Message.user("where am I?")]
    _, first = await collect(provider.stream("sys", history, TOOLS, SETTINGS))
    history.append(Message(role="assistant", content=first.content))
    history.append(
        Message(
            role="tool",
            content=[ToolResultPart(call_id="toolu_a", output="bad flag", is_error=True)],
        )
    )
    history.append(Message.user("and then?"))
    _, second = await collect(provider.stream("sys", history, TOOLS, SETTINGS))
    assert second.text == "You are in /w."

    sent = server.requests[1].body["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Plan.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque-redacted-blob"},
            {"type": "tool_use", "id": "toolu_a", "name": "exec_command", "input": {"cmd": "pwd"}},
        ],
    }
    # The tool message and the next user message merge into one user turn, results first.
    assert sent[2]["role"] == "user"
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_a",
        "content": "bad flag",
        "is_error": True,
    }
    assert sent[2]["content"][1]["text"] == "and then?"
    assert len(sent) == 3


async def test_empty_tool_result_is_sent_without_content(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("ok")]))
    history = [
        Message.user("touch it"),
        Message(role="assistant", content=[ToolCallPart(id="t1", name="exec_command")]),
        Message(role="tool", content=[ToolResultPart(call_id="t1", output="")]),
    ]
    await collect(make(server, retry).stream(None, history, TOOLS, SETTINGS))
    result = server.requests[0].body["messages"][2]["content"][0]
    assert result == {
        "type": "tool_result",
        "tool_use_id": "t1",
        "cache_control": {"type": "ephemeral"},
    }


async def test_thinking_from_another_provider_is_not_sent(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("ok")]))
    history = [
        Message.user("q"),
        Message(
            role="assistant",
            content=[
                ThinkingPart(thinking="x", provider="openai-responses", meta={"id": "rs_1"}),
                TextPart(text="a"),
            ],
        ),
        Message.user("q2"),
    ]
    await collect(make(server, retry).stream(None, history, [], SETTINGS))
    body = server.requests[0].body
    assert body["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    assert "system" not in body and "tools" not in body


async def test_pause_turn_continues_with_the_partial_content(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn(
            [thinking("Searching.", signature="sig-p"), text("Part one. ")],
            stop_reason="pause_turn",
            usage=TurnUsage(input_tokens=10, output_tokens=5),
        ),
        Turn([text("Part two.")], usage=TurnUsage(input_tokens=20, output_tokens=6)),
    )
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("go")], [], SETTINGS)
    )
    assert [d.text for d in deltas if isinstance(d, TextDelta)] == ["Part one. ", "Part two."]
    assert turn.stop_reason == "end_turn"
    assert turn.text == "Part one. Part two."
    assert turn.usage == Usage(input_tokens=30, output_tokens=11)
    continued = server.requests[1].body["messages"]
    assert continued[-1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Searching.", "signature": "sig-p"},
            {"type": "text", "text": "Part one. "},
        ],
    }


async def test_malformed_tool_arguments_are_kept_raw(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([tool_call("exec_command", '{"cmd": "ls', id="toolu_bad")]))
    _, turn = await collect(make(server, retry).stream(None, [Message.user("x")], TOOLS, SETTINGS))
    (call,) = turn.tool_calls
    assert call.arguments == {}
    assert call.raw_arguments == '{"cmd": "ls'
    assert turn.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (HttpError(429, retry_after_ms=3), "rate_limited"),
        (HttpError(529), "overloaded"),
        (HttpError(500), "server_error"),
        (HttpError(503, retry_after="0"), "server_error"),
    ],
)
async def test_transient_http_errors_are_retried(
    server: FakeModelServer,
    retry: RetryPolicy,
    sleeps: SleepRecorder,
    fault: HttpError,
    code: str,
) -> None:
    server.script(fault, fault, Turn([text("recovered")]))
    _, turn = await collect(make(server, retry).stream(None, [Message.user("x")], [], SETTINGS))
    assert turn.text == "recovered"
    assert len(server.requests) == 3
    assert len(sleeps.waits) == 2
    if fault.retry_after_ms is not None:
        assert sleeps.waits == [0.003, 0.003]  # honoured instead of the 0.25 s backoff
    if fault.retry_after == "0":
        assert sleeps.waits == [0.0, 0.0]


async def test_backoff_grows_without_retry_after(
    server: FakeModelServer, sleeps: SleepRecorder
) -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, jitter=0.0, sleep=sleeps)
    server.script(HttpError(529), HttpError(529), HttpError(529), Turn([text("ok")]))
    await collect(make(server, policy).stream(None, [Message.user("x")], [], SETTINGS))
    assert sleeps.waits == [1.0, 2.0, 4.0]


async def test_gives_up_after_max_attempts(server: FakeModelServer, retry: RetryPolicy) -> None:
    server.script(*[HttpError(429, retry_after_ms=1, message="slow down")] * 4)
    with pytest.raises(ModelError) as info:
        await collect(make(server, retry).stream(None, [Message.user("x")], [], SETTINGS))
    err = info.value
    assert (err.code, err.status, err.retryable) == ("rate_limited", 429, True)
    assert "slow down" in err.message and "4 attempts" in err.message
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_request"), (401, "authentication"), (403, "permission"), (404, "not_found")],
)
async def test_client_errors_are_not_retried(
    server: FakeModelServer, retry: RetryPolicy, status: int, code: str
) -> None:
    server.script(HttpError(status, message=f"nope {status}"), Turn([text("unused")]))
    with pytest.raises(ModelError) as info:
        await collect(make(server, retry).stream(None, [Message.user("x")], [], SETTINGS))
    assert (info.value.code, info.value.status, info.value.retryable) == (code, status, False)
    assert f"nope {status}" in info.value.message
    assert len(server.requests) == 1


async def test_stream_cut_midway_restarts_the_turn(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(
        Turn([text("Hel", "lo wor", "ld")], cut_after=5),
        Turn([text("Hello ", "world")]),
    )
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("x")], [], SETTINGS)
    )
    kinds = [type(d).__name__ for d in deltas]
    assert kinds == ["TextDelta", "TextDelta", "StreamRestarted", "TextDelta", "TextDelta"]
    restart = deltas[2]
    assert isinstance(restart, StreamRestarted) and restart.attempt == 2
    assert turn.text == "Hello world"
    assert len(server.requests) == 2


async def test_overloaded_error_event_midstream_is_retried(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("a", "b")], error_after=4), Turn([text("fine")]))
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("x")], [], SETTINGS)
    )
    assert any(isinstance(d, StreamRestarted) for d in deltas)
    assert turn.text == "fine"


async def test_malformed_json_frame_is_retried(server: FakeModelServer, retry: RetryPolicy) -> None:
    server.script(Turn([text("a", "b")], malformed_after=2), Turn([text("clean")]))
    deltas, turn = await collect(
        make(server, retry).stream(None, [Message.user("x")], [], SETTINGS)
    )
    # Nothing was yielded before the broken frame, so no restart marker is needed.
    assert not any(isinstance(d, StreamRestarted) for d in deltas)
    assert turn.text == "clean"
    assert len(server.requests) == 2


async def test_slow_first_byte_times_out_and_is_retried(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("late")], first_byte_delay=1.0), Turn([text("on time")]))
    provider = make(server, retry, timeout=0.2)
    _, turn = await collect(provider.stream(None, [Message.user("x")], [], SETTINGS))
    assert turn.text == "on time"


async def test_slow_first_byte_within_timeout_is_awaited(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    server.script(Turn([text("late but fine")], first_byte_delay=0.2))
    _, turn = await collect(make(server, retry).stream(None, [Message.user("x")], [], SETTINGS))
    assert turn.text == "late but fine"
    assert len(server.requests) == 1


async def test_missing_api_key_names_the_variable() -> None:
    provider = AnthropicProvider(api_key=None)
    with pytest.raises(ModelError) as info:
        await collect(provider.stream(None, [Message.user("x")], [], SETTINGS))
    assert info.value.code == "missing_api_key"
    assert "ANTHROPIC_API_KEY" in info.value.message


async def test_fake_server_accepts_x_api_key_and_bearer(retry: RetryPolicy) -> None:
    async with FakeModelServer(api_key="sekret", default_turn=Turn([text("hi")])) as server:
        _, turn = await collect(
            AnthropicProvider(api_key="sekret", base_url=server.url + "/v1", retry=retry).stream(
                None, [Message.user("x")], [], SETTINGS
            )
        )
        assert turn.text == "hi"
        async with httpx.AsyncClient() as client:
            body = {"model": "m", "max_tokens": 5, "stream": True, "messages": []}
            ok = await client.post(
                f"{server.url}/v1/messages", json=body, headers={"x-api-key": "sekret"}
            )
            assert ok.status_code == 200 and "event: message_start" in ok.text
            bad = await client.post(
                f"{server.url}/v1/messages", json=body, headers={"x-api-key": "wrong"}
            )
            assert bad.status_code == 401
            assert bad.json()["error"]["type"] == "authentication_error"
        wrong = AnthropicProvider(api_key="wrong", base_url=server.url, retry=retry)
        with pytest.raises(ModelError) as info:
            await collect(wrong.stream(None, [Message.user("x")], [], SETTINGS))
        assert (info.value.code, info.value.status) == ("authentication", 401)


async def test_abandoning_a_stream_midway_leaves_the_provider_usable(
    server: FakeModelServer, retry: RetryPolicy
) -> None:
    gate = Gate()
    server.script(Turn([text("first ", "never")], hold=gate, hold_after=4), Turn([text("next")]))
    provider = make(server, retry)
    stream = provider.stream(None, [Message.user("x")], [], SETTINGS)
    first = await anext(stream)
    assert first == TextDelta(text="first ")
    await stream.aclose()  # the consumer (e.g. a cancelled run) walks away mid-stream
    gate.open()
    _, turn = await collect(provider.stream(None, [Message.user("y")], [], SETTINGS))
    assert turn.text == "next"
    await provider.aclose()
