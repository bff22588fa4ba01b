"""Thread events of real runs: the exact persisted sequence through the real adapters against
the fake model server, two runs on one thread, a thread continued by a second daemon that
has only the workspace, and a daemon SIGKILLed mid-run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.agents import AgentSpec
from runtime.rollout import rollout_path
from runtime.runs import RunManager
from runtime.store import Store
from runtime.thread_events import LiveThreadEvent, PersistedThreadEvent
from tests.fakes import model_server as fake
from tests.fakes.scripted_provider import ScriptedFactory, text_turn
from tests.runtime.crash_daemon import crash_mid_run

MODELS = ["claude-sonnet-4-6", "gpt-5", "openai-chat:gpt-4o"]
SECRET = "sk-live-0123456789abcdef"


def rollout_lines(workspace: Path, thread_id: str) -> list[dict[str, Any]]:
    text = rollout_path(workspace, thread_id).read_text()
    return [json.loads(line) for line in text.splitlines()]


def script_tool_run(server: fake.FakeModelServer) -> None:
    server.script(
        fake.Turn(
            [
                fake.thinking("Look first.", signature="sig-1"),
                fake.text("Reading."),
                fake.tool_call("read_file", {"path": "notes.txt"}, id="call_1", chunks=3),
            ],
            usage=fake.TurnUsage(input_tokens=20, output_tokens=5),
        ),
        fake.Turn(
            [fake.text("It says ", "hello.")],
            usage=fake.TurnUsage(input_tokens=50, output_tokens=4, cached_input_tokens=10),
        ),
    )


@pytest.mark.parametrize("model", MODELS)
async def test_the_exact_persisted_sequence_of_two_runs_on_one_thread(
    store: Store, workspace: Path, model: str
) -> None:
    (workspace / "notes.txt").write_text("hello\n")
    async with fake.FakeModelServer() as server:
        script_tool_run(server)
        agent, _ = await store.upsert_agent(
            AgentSpec(slug="reader", model=model, tools=["read_file"])
        )
        async with RunManager(store, workspace, env=server.env()) as manager:
            first = await manager.start(agent, prompt="What do the notes say?")
            live: list[LiveThreadEvent] = []
            log = await manager.thread_events.log(first.thread_id)
            subscription = log.subscribe()

            async def follow() -> None:
                async for event in subscription:
                    if isinstance(event, LiveThreadEvent):
                        live.append(event)
                    elif event.type == "run_completed":
                        return

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    assert (await manager.wait(first.run_id)).status == "completed"
            server.script(fake.Turn([fake.text("You're welcome.")]))
            second = await manager.start(agent, prompt="Thanks", thread_id=first.thread_id)
            assert (await manager.wait(second.run_id)).status == "completed"
            events = await store.thread_events_after(first.thread_id)

    assert [(e.sequence, e.type) for e in events] == list(
        enumerate(
            [
                "run_started",
                "user_message",
                "assistant_message",
                "tool_call",
                "tool_result",
                "assistant_message",
                "run_completed",
                "run_started",
                "user_message",
                "assistant_message",
                "run_completed",
            ],
            start=1,
        )
    )
    assert {e.run_id for e in events[:7]} == {first.run_id}
    assert {e.run_id for e in events[7:]} == {second.run_id}
    rollouts = [e.rollout_id for e in events]
    assert len(set(rollouts[:7])) == 1 and len(set(rollouts[7:])) == 1
    assert rollouts[0] != rollouts[7] and rollouts[0].startswith("rol_")
    assert {e.thread_id for e in events} == {first.thread_id}

    started = events[0].payload
    assert started["agent"] == "reader" and started["version"] == 1 and started["model"]
    assert events[1].payload == {
        "role": "user",
        "content": [{"type": "text", "text": "What do the notes say?"}],
    }
    assistant = events[2].payload
    kinds = [part["type"] for part in assistant["content"]]
    assert assistant["role"] == "assistant" and kinds == ["thinking", "text", "tool_call"]
    assert assistant["content"][0]["thinking"] == "Look first."
    assert assistant["content"][2]["arguments"] == {"path": "notes.txt"}
    if model == "claude-sonnet-4-6":
        assert assistant["content"][0]["signature"] == "sig-1"
    assert events[3].payload == {
        "callId": "call_1",
        "tool": "read_file",
        "input": {"path": "notes.txt"},
    }
    result = events[4].payload
    assert result["callId"] == "call_1" and result["tool"] == "read_file"
    assert "hello" in result["output"] and result["isError"] is False
    assert result["durationMs"] > 0
    assert events[5].payload["content"] == [{"type": "text", "text": "It says hello."}]
    assert events[6].payload == {
        "status": "completed",
        "usage": {
            "inputTokens": 70,
            "outputTokens": 9,
            "cachedInputTokens": 10,
            "reasoningTokens": 0,
        },
        "iterations": 2,
        "result": "It says hello.",
        "error": None,
    }
    assert events[10].payload["status"] == "completed"
    assert events[10].payload["result"] == "You're welcome."

    # Live-only events of the first run, in order, without sequences.
    live_types = [e.type for e in live]
    assert "assistant_thinking_delta" in live_types and "assistant_message_delta" in live_types
    assert live_types.index("tool_call_started") < live_types.index("tool_call_completed")
    text = "".join(e.payload["text"] for e in live if e.type == "assistant_message_delta")
    assert text == "Reading.It says hello."
    completed = next(e for e in live if e.type == "tool_call_completed")
    assert completed.payload["callId"] == "call_1" and completed.payload["isError"] is False

    # The rollout in the workspace holds exactly the stored events.
    assert rollout_lines(workspace, first.thread_id) == [e.to_dict() for e in events]


async def test_a_second_daemon_with_only_the_workspace_continues_the_thread(
    tmp_path: Path, workspace: Path
) -> None:
    """The same thread continued by the daemon that ran it and by a new daemon (empty state
    dir, a copy of the workspace): the model receives the same conversation from both."""
    (workspace / "notes.txt").write_text(f"hello, the key is {SECRET}\n")
    other_workspace = tmp_path / "mounted-elsewhere"
    spec = AgentSpec(slug="reader", model="claude-sonnet-4-6", tools=["read_file"], secrets=["KEY"])
    async with fake.FakeModelServer() as server:
        env = {**server.env(), "KEY": SECRET}
        script_tool_run(server)
        first_store = await Store.open(tmp_path / "state-a")
        try:
            agent, _ = await first_store.upsert_agent(spec)
            async with RunManager(first_store, workspace, env=env) as manager:
                run = await manager.start(agent, prompt=f"Read the notes (key {SECRET})")
                assert (await manager.wait(run.run_id)).status == "completed"
                thread_id = run.thread_id
                shutil.copytree(workspace, other_workspace)
                server.script(fake.Turn([fake.text("Again: hello.")]))
                again = await manager.start(agent, prompt="And again?", thread_id=thread_id)
                assert (await manager.wait(again.run_id)).status == "completed"
                on_first = server.requests[-1].body
                first_events = await first_store.thread_events_after(thread_id)
        finally:
            await first_store.close()

        rollout = rollout_path(other_workspace, thread_id).read_text()
        assert SECRET not in rollout and "[REDACTED]" in rollout

        second_store = await Store.open(tmp_path / "state-b")  # a new sandbox: nothing stored
        try:
            assert await second_store.get_thread(thread_id) is None
            agent, _ = await second_store.upsert_agent(spec)  # agents are defined again
            async with RunManager(second_store, other_workspace, env=env) as manager:
                server.script(fake.Turn([fake.text("Again: hello.")]))
                again = await manager.start(agent, prompt="And again?", thread_id=thread_id)
                assert (await manager.wait(again.run_id)).status == "completed"
                on_second = server.requests[-1].body
                second_events = await second_store.thread_events_after(thread_id)
                thread = await second_store.get_thread(thread_id)
        finally:
            await second_store.close()

    assert on_second["messages"] == on_first["messages"]
    assert on_second == on_first  # the whole request: same conversation, tools and settings
    assert SECRET not in json.dumps(on_second)
    assert thread is not None and thread.agent == "reader"
    # The sequence continues where the rollout stopped, exactly as on the first daemon.
    assert [e.sequence for e in second_events] == list(range(1, 12))
    assert [e.type for e in second_events] == [e.type for e in first_events]
    assert [e.to_dict() for e in second_events[:7]] == [e.to_dict() for e in first_events[:7]]
    assert rollout_lines(other_workspace, thread_id) == [e.to_dict() for e in second_events]


async def test_an_unknown_thread_id_starts_that_thread_and_is_never_a_path(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    from runtime.runs import InvalidRequest

    agent, _ = await store.upsert_agent(AgentSpec(slug="a", model="scripted-1", tools=[]))
    factory.add(text_turn("hi"))
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        # A caller-chosen id starts that thread (issue 12); one that could be a path is
        # refused before any file is looked at.
        for thread_id in ("../../etc/passwd", ".agentd", "a/b"):
            with pytest.raises(InvalidRequest):
                await manager.start(agent, prompt="x", thread_id=thread_id)
        run = await manager.start(agent, prompt="x", thread_id="thr_nope")
        await manager.wait(run.run_id)
        assert run.thread_id == "thr_nope" and len(await store.thread_messages("thr_nope")) == 2


async def test_a_deleted_thread_does_not_come_back_from_its_rollout(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent, _ = await store.upsert_agent(AgentSpec(slug="a", model="scripted-1", tools=[]))
    factory.add(text_turn("hi"))
    factory.add(text_turn("again"))
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        run = await manager.start(agent, prompt="x")
        await manager.wait(run.run_id)
        assert rollout_path(workspace, run.thread_id).exists()
        await manager.thread_events.delete(run.thread_id)
        await store.delete_thread(run.thread_id)
        assert not rollout_path(workspace, run.thread_id).exists()
        assert await store.thread_events_after(run.thread_id) == []
        # Reusing the id starts a new, empty thread: the old history does not come back.
        again = await manager.start(agent, prompt="y", thread_id=run.thread_id)
        await manager.wait(again.run_id)
        assert [m.text for m in await store.thread_messages(run.thread_id)] == ["y", "again"]


async def test_sigkill_mid_run_then_restart_continues_the_sequence(
    tmp_path: Path, workspace: Path, factory: ScriptedFactory
) -> None:
    state = tmp_path / "crash-state"
    started = await crash_mid_run(state, workspace)
    thread_id = started["threadId"]
    before = rollout_lines(workspace, thread_id)
    assert [e["type"] for e in before] == ["run_started", "user_message"]
    # The crash also tore a line the daemon was writing.
    with rollout_path(workspace, thread_id).open("a") as f:
        f.write('{"sequence": 3, "rolloutId": "rol_x", "thr')

    store = await Store.open(state)
    try:
        async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
            assert (await manager.get(started["runId"])).status == "interrupted"
            factory.add(text_turn("picking up"))
            run = await manager.start("crashy", prompt="continue", thread_id=thread_id)
            assert (await manager.wait(run.run_id)).status == "completed"
            events = await store.thread_events_after(thread_id)
    finally:
        await store.close()
    assert [(e.sequence, e.type, e.run_id) for e in events] == [
        (1, "run_started", started["runId"]),
        (2, "user_message", started["runId"]),
        (3, "run_completed", started["runId"]),
        (4, "run_started", run.run_id),
        (5, "user_message", run.run_id),
        (6, "assistant_message", run.run_id),
        (7, "run_completed", run.run_id),
    ]
    interrupted = events[2]
    assert interrupted.rollout_id == events[0].rollout_id
    assert interrupted.payload["status"] == "interrupted"
    assert interrupted.payload["error"]["code"] == "interrupted"
    assert rollout_lines(workspace, thread_id) == [e.to_dict() for e in events]


async def test_sigkill_mid_run_then_a_fresh_daemon_on_the_workspace(
    tmp_path: Path, workspace: Path, factory: ScriptedFactory
) -> None:
    started = await crash_mid_run(tmp_path / "crash-state", workspace)
    thread_id = started["threadId"]
    store = await Store.open(tmp_path / "fresh-state")
    try:
        await store.upsert_agent(AgentSpec(slug="crashy", model="scripted-1", tools=[]))
        async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
            follow_up = factory.add(text_turn("picking up"))
            run = await manager.start("crashy", prompt="continue", thread_id=thread_id)
            assert (await manager.wait(run.run_id)).status == "completed"
            events = await store.thread_events_after(thread_id)
    finally:
        await store.close()
    assert [(e.sequence, e.type) for e in events] == [
        (1, "run_started"),
        (2, "user_message"),
        (3, "run_completed"),
        (4, "run_started"),
        (5, "user_message"),
        (6, "assistant_message"),
        (7, "run_completed"),
    ]
    assert events[2].run_id == started["runId"] and events[2].payload["status"] == "interrupted"
    from runtime.messages import Message

    assert follow_up.calls[0].messages == [
        Message.user("do something long"),
        Message.user("continue"),
    ]
    assert all(isinstance(e, PersistedThreadEvent) for e in events)


async def test_a_fork_is_a_new_thread_with_its_own_rollout_and_sequence(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    from tests.fakes.scripted_provider import call, tool_turn

    agent, _ = await store.upsert_agent(AgentSpec(slug="a", model="scripted-1", tools=[]))
    factory.add(tool_turn(call("c1", "nope"), text="trying"), text_turn("done"))
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        source = await manager.start(agent, prompt="go")
        await manager.wait(source.run_id)
        factory.add(text_turn("different ending"))
        fork = await manager.fork(source.run_id, 3)
        await manager.wait(fork.run_id)
        original = await store.thread_events_after(source.thread_id)
        forked = await store.thread_events_after(fork.thread_id)
    assert [e.type for e in original] == [
        "run_started",
        "user_message",
        "assistant_message",
        "tool_call",
        "tool_result",
        "assistant_message",
        "run_completed",
    ]
    # The fork's thread starts at 1 with the messages it was cut from, under a new rollout.
    assert [(e.sequence, e.type) for e in forked] == list(
        enumerate(
            [
                "run_started",
                "user_message",
                "assistant_message",
                "tool_call",
                "tool_result",
                "assistant_message",
                "run_completed",
            ],
            start=1,
        )
    )

    # The same messages (a copied tool result has no measured duration of its own).
    def without_duration(events: list[PersistedThreadEvent]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.payload.items() if k != "durationMs"} for e in events]

    assert without_duration(forked[1:5]) == without_duration(original[1:5])
    assert forked[4].payload["durationMs"] is None
    assert {e.rollout_id for e in forked}.isdisjoint({e.rollout_id for e in original})
    assert forked[-1].payload["result"] == "different ending"
    assert rollout_lines(workspace, fork.thread_id) == [e.to_dict() for e in forked]
