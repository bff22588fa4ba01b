"""Record a run's model turns to a cassette, replay them, and fail clearly on divergence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.messages import Message, ToolResultPart
from runtime.providers.anthropic import AnthropicProvider
from runtime.providers.base import AssistantTurn, ModelError, ModelSettings, StreamRestarted
from runtime.providers.openai_chat import OpenAIChatProvider
from runtime.providers.registry import create_provider
from runtime.providers.replay import (
    CASSETTE_HEADER,
    RecordingProvider,
    ReplayProvider,
    request_hash,
)
from runtime.providers.retry import RetryPolicy
from tests.fakes.model_server import FakeModelServer, Turn, text, thinking, tool_call
from tests.providers.conftest import collect

TOOLS = [{"name": "exec_command", "description": "Run.", "input_schema": {"type": "object"}}]
SETTINGS = ModelSettings(model="claude-sonnet-4-6")


def script_two_turns(server: FakeModelServer) -> None:
    server.script(
        Turn(
            [
                thinking("I should ", "look.", signature="sig-rec"),
                text("Looking", " now."),
                tool_call("exec_command", {"cmd": "ls"}, id="toolu_r", chunks=3),
            ]
        ),
        Turn([text("There are ", "two files.")]),
    )


async def run_conversation(provider: object, *, tool_output: str = "a\nb") -> list[tuple]:
    """Two model turns with a tool result in between; returns (deltas, turn) per turn."""
    history = [Message.user("what is here?")]
    out = []
    deltas, turn = await collect(provider.stream("sys", history, TOOLS, SETTINGS))  # type: ignore[attr-defined]
    out.append((deltas, turn))
    history += [
        Message(role="assistant", content=turn.content),
        Message(role="tool", content=[ToolResultPart(call_id="toolu_r", output=tool_output)]),
    ]
    deltas, turn = await collect(provider.stream("sys", history, TOOLS, SETTINGS))  # type: ignore[attr-defined]
    out.append((deltas, turn))
    return out


async def record(server: FakeModelServer, retry: RetryPolicy, path: Path) -> list[tuple]:
    script_two_turns(server)
    inner = AnthropicProvider(api_key="k", base_url=server.url, retry=retry)
    recorder = RecordingProvider(inner, path)
    try:
        return await run_conversation(recorder)
    finally:
        await recorder.aclose()


async def test_record_then_replay_reproduces_the_turns(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    cassette = tmp_path / "run.jsonl"
    recorded = await record(server, retry, cassette)

    lines = cassette.read_text().splitlines()
    assert lines[0] == CASSETTE_HEADER
    first = json.loads(lines[1])
    assert first["turn"] == 1 and first["stop_reason"] == "tool_use"
    assert first["request"]["messages"] == [first["request"]["messages"][0]]
    assert first["request"]["hash"] == request_hash("sys", [Message.user("what is here?")], TOOLS)
    assert first["content"][0]["signature"] == "sig-rec"
    assert first["content"][1] == {
        "type": "text",
        "text": "Looking now.",
        "stream": ["Looking", " now."],
    }

    # Replay: no server involved, the same deltas and turns come back (tool output may differ).
    replayed = await run_conversation(ReplayProvider(cassette), tool_output="a\nb\n(wall time 3s)")
    assert replayed == recorded


async def test_recording_keeps_only_the_attempt_that_completed(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    server.script(Turn([text("Hel", "lo th", "ere")], cut_after=5), Turn([text("Hi", " again")]))
    cassette = tmp_path / "c.jsonl"
    recorder = RecordingProvider(
        AnthropicProvider(api_key="k", base_url=server.url, retry=retry), cassette
    )
    deltas, _ = await collect(recorder.stream(None, [Message.user("x")], [], SETTINGS))
    assert any(isinstance(d, StreamRestarted) for d in deltas)
    (line,) = [json.loads(raw) for raw in cassette.read_text().splitlines()[1:]]
    assert line["content"] == [{"type": "text", "text": "Hi again", "stream": ["Hi", " again"]}]


async def test_divergent_user_prompt_is_reported_with_the_turn(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    cassette = tmp_path / "run.jsonl"
    await record(server, retry, cassette)
    replay = ReplayProvider(cassette)
    with pytest.raises(ModelError) as info:
        await collect(replay.stream("sys", [Message.user("delete everything")], TOOLS, SETTINGS))
    assert info.value.code == "divergence"
    message = info.value.message
    assert "model turn 1" in message and "line 2" in message
    assert "message 1 (user: 'delete everything') differs" in message


async def test_divergent_tool_result_and_tools_are_named(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    cassette = tmp_path / "run.jsonl"
    await record(server, retry, cassette)
    replay = ReplayProvider(cassette)
    history = [Message.user("what is here?")]
    _, turn = await collect(replay.stream("sys", history, TOOLS, SETTINGS))
    history += [
        Message(role="assistant", content=turn.content),
        Message(
            role="tool",
            content=[ToolResultPart(call_id="toolu_r", output="denied", is_error=True)],
        ),
    ]
    other_tools = [*TOOLS, {"name": "read_file", "description": "", "input_schema": {}}]
    with pytest.raises(ModelError) as info:
        await collect(replay.stream("sys", history, other_tools, SETTINGS))
    message = info.value.message
    assert "model turn 2" in message
    assert "message 3 (tool results for toolu_r) differs" in message
    assert "the tools differ" in message and "read_file" in message


async def test_running_past_the_end_of_the_cassette(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    cassette = tmp_path / "run.jsonl"
    await record(server, retry, cassette)
    replay = ReplayProvider(cassette)
    await run_conversation(replay)
    with pytest.raises(ModelError) as info:
        await collect(replay.stream("sys", [Message.user("more?")], TOOLS, SETTINGS))
    assert "has only 2 turn(s)" in info.value.message


async def test_lenient_replay_ignores_divergence(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    cassette = tmp_path / "run.jsonl"
    await record(server, retry, cassette)
    provider, model_id = create_provider(f"replay:{cassette}", env={"AGENTD_REPLAY_STRICT": "0"})
    assert isinstance(provider, ReplayProvider) and not provider.strict and model_id == "replay"
    _, turn = await collect(provider.stream(None, [Message.user("something else")], [], SETTINGS))
    assert turn.tool_calls[0].arguments == {"cmd": "ls"}
    strict, _ = create_provider(f"replay:{cassette}", env={})
    assert isinstance(strict, ReplayProvider) and strict.strict


async def test_a_second_run_can_start_mid_cassette(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    cassette = tmp_path / "run.jsonl"
    recorded = await record(server, retry, cassette)
    # A fresh provider (e.g. the next run of a thread) asked the second question directly.
    history = [
        Message.user("what is here?"),
        Message(role="assistant", content=recorded[0][1].content),
        Message(role="tool", content=[ToolResultPart(call_id="toolu_r", output="x")]),
    ]
    _, turn = await collect(ReplayProvider(cassette).stream("sys", history, TOOLS, SETTINGS))
    assert turn.text == "There are two files."


async def test_hand_edited_cassette(tmp_path: Path) -> None:
    """Comments, blank lines, edited text with a stale `stream`, and a turn without `request`."""
    cassette = tmp_path / "demo.jsonl"
    first = {
        "turn": 1,
        "request": {"hash": request_hash(None, [Message.user("hi")], [])},
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Edited reply here.", "stream": ["Original", " reply"]},
            {"type": "tool_call", "id": "c1", "name": "exec_command", "arguments": {"cmd": "pwd"}},
        ],
    }
    second = {"turn": 2, "content": [{"type": "text", "text": "Done."}]}
    cassette.write_text(
        "# the offline demo\n\n" + json.dumps(first) + "\n# then\n" + json.dumps(second) + "\n"
    )
    replay = ReplayProvider(cassette)
    deltas, turn = await collect(replay.stream(None, [Message.user("hi")], [], SETTINGS))
    assert [getattr(d, "text", None) for d in deltas[:3]] == ["Edited ", "reply ", "here."]
    assert turn.stop_reason == "tool_use" and turn.tool_calls[0].arguments == {"cmd": "pwd"}
    assert turn.usage.input_tokens == 0
    _, last = await collect(replay.stream(None, [Message.user("anything")], [], SETTINGS))
    assert last == AssistantTurn(content=last.content, stop_reason="end_turn")
    assert last.text == "Done."


async def test_bad_cassette_line_is_named(tmp_path: Path) -> None:
    cassette = tmp_path / "bad.jsonl"
    cassette.write_text(
        '# ok\n{"turn": 1, "content": []}\n{"turn": 2, "content": [{"type": "nope"}]}\n'
    )
    with pytest.raises(ModelError) as info:
        await collect(ReplayProvider(cassette).stream(None, [], [], SETTINGS))
    assert info.value.code == "bad_cassette" and "line 3" in info.value.message
    with pytest.raises(ModelError) as missing:
        await collect(ReplayProvider(tmp_path / "none.jsonl").stream(None, [], [], SETTINGS))
    assert missing.value.code == "bad_cassette"


async def test_recording_round_trips_provider_meta_and_appends(
    server: FakeModelServer, retry: RetryPolicy, tmp_path: Path
) -> None:
    server.script(
        Turn([tool_call("exec_command", {"cmd": "date"}, id="g1", thought_signature="T1")]),
        Turn([text("again")]),
    )
    cassette = tmp_path / "gemini.jsonl"
    inner = OpenAIChatProvider(api_key="k", base_url=server.url + "/v1", retry=retry)
    _, live = await collect(
        RecordingProvider(inner, cassette).stream(None, [Message.user("d")], TOOLS, SETTINGS)
    )
    again = RecordingProvider(inner, cassette, append=True)
    await collect(again.stream(None, [Message.user("e")], TOOLS, SETTINGS))
    turns = [json.loads(x) for x in cassette.read_text().splitlines() if not x.startswith("#")]
    assert [t["turn"] for t in turns] == [1, 2]
    _, replayed = await collect(
        ReplayProvider(cassette).stream(None, [Message.user("d")], TOOLS, SETTINGS)
    )
    assert replayed == live
    assert replayed.tool_calls[0].meta == {"extra_content": {"google": {"thought_signature": "T1"}}}


async def test_create_provider_records_runs_into_one_cassette(
    server: FakeModelServer, tmp_path: Path
) -> None:
    server.script(Turn([text("first run")]), Turn([text("second run")]))
    cassette = tmp_path / "daemon.jsonl"
    for prompt in ("one", "two"):
        provider, model_id = create_provider("claude-sonnet-4-6", env=server.env(), record=cassette)
        assert isinstance(provider, RecordingProvider) and model_id == "claude-sonnet-4-6"
        await collect(provider.stream(None, [Message.user(prompt)], [], SETTINGS))
        await provider.aclose()
    lines = cassette.read_text().splitlines()
    assert lines[0] == CASSETTE_HEADER and len(lines) == 3
    assert [json.loads(x)["turn"] for x in lines[1:]] == [1, 2]
    replay, _ = create_provider(f"replay:{cassette}")
    _, turn = await collect(replay.stream(None, [Message.user("two")], [], SETTINGS))
    assert turn.text == "second run"
