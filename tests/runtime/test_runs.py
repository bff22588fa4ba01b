"""The RunManager with real SQLite, real event logs and a scripted provider."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from pydantic import ConfigDict

from runtime.agents import AgentRecord, AgentSpec, CustomToolSpec
from runtime.daemon import preload_other_sdks
from runtime.events import Event, EventLog
from runtime.events.log import STORE_PAGE
from runtime.messages import Message, TextPart, ThinkingPart
from runtime.providers.base import ModelError, TextDelta
from runtime.runs import (
    Conflict,
    InvalidRequest,
    NotFound,
    QueueFull,
    RunManager,
)
from runtime.runs.run import Run, RunConfig
from runtime.store import RunRecord, Store, ThreadRecord
from runtime.thread_events import PersistedThreadEvent
from tests.fakes.scripted_provider import (
    Gate,
    ScriptedFactory,
    call,
    text_turn,
    tool_turn,
    usage,
)
from tools.base import Tool, ToolArgs, ToolContext, ToolResult


async def make_agent(store: Store, slug: str = "helper", **fields: Any) -> AgentRecord:
    fields.setdefault("tools", [])
    record, _ = await store.upsert_agent(AgentSpec(slug=slug, model="scripted-1", **fields))
    return record


async def collect(manager: RunManager, run_id: str, after: int = 0) -> list[Event]:
    with anyio.fail_after(10):
        return [event async for event in manager.subscribe(run_id, after=after)]


def types(events: list[Event]) -> list[str]:
    """Event types with consecutive text/thinking deltas merged (the log may coalesce)."""
    merged: list[str] = []
    for event in events:
        if event.type in ("text", "thinking") and merged and merged[-1] == event.type:
            continue
        merged.append(event.type)
    return merged


def joined(events: list[Event], type: str) -> str:
    return "".join(e.payload["content"] for e in events if e.type == type)


async def wait_for_event(manager: RunManager, run_id: str, type: str, **match: Any) -> Event:
    with anyio.fail_after(10):
        async for event in manager.subscribe(run_id):
            if event.type == type and all(event.payload.get(k) == v for k, v in match.items()):
                return event
    raise AssertionError(f"the run ended without a {type} event matching {match}")


async def test_a_run_completes_with_its_events_record_and_thread(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store, system_prompt="Be kind.")
    provider = factory.add(text_turn("Hello there", thinking="hm", turn_usage=usage(7, 3)))
    run = await manager.start(agent, prompt="hi", metadata={"ticket": "T-1"})
    record = await manager.wait(run.run_id)

    assert (record.status, record.result, record.iterations) == ("completed", "Hello there", 1)
    assert record.usage.input_tokens == 7 and record.usage.output_tokens == 3
    assert record.metadata == {"ticket": "T-1"} and record.thread_id == run.thread_id
    assert record.started_at and record.finished_at
    events = await collect(manager, run.run_id)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert types(events) == ["run_started", "thinking", "text", "usage", "complete"]
    assert all(e.run_id == run.run_id and e.thread_id == run.thread_id for e in events)
    assert events[0].payload == {
        "agent": "helper",
        "version": 1,
        "threadId": run.thread_id,
        "model": "scripted-1",
    }
    assert joined(events, "text") == "Hello there"
    complete = events[-1].payload
    assert complete["status"] == "completed" and complete["output"] == "Hello there"
    assert complete["iterations"] == 1 and complete["files"] == []
    assert complete["devUrl"] is None and complete["usage"]["inputTokens"] == 7

    assert provider.calls[0].system == "Be kind." and provider.closed
    expected = [
        Message.user("hi"),
        Message(
            role="assistant",
            content=[ThinkingPart(thinking="hm", signature="sig"), TextPart(text="Hello there")],
        ),
    ]
    assert await store.thread_messages(run.thread_id) == expected
    assert await store.run_messages(run.run_id) == expected
    detail = await manager.detail(run.run_id)
    assert detail["output"] == "Hello there" and detail["toolCalls"] == []
    assert len(detail["messages"]) == 2 and detail["status"] == "completed"
    listed, _ = await manager.list_runs(agent="helper")
    assert [r.run_id for r in listed] == [run.run_id]


async def test_tool_calls_are_recorded_in_detail(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    factory.add(tool_turn(call("c1", "no_such_tool", {"x": 1})), text_turn("gave up"))
    run = await manager.start(agent, prompt="go")
    await manager.wait(run.run_id)
    events = await collect(manager, run.run_id)
    assert types(events) == [
        "run_started",
        "usage",
        "tool_call",
        "tool_result",
        "text",
        "usage",
        "complete",
    ]
    detail = await manager.detail(run.run_id)
    [tool_call] = detail["toolCalls"]
    assert tool_call["callId"] == "c1" and tool_call["tool"] == "no_such_tool"
    assert tool_call["isError"] is True and "Unknown tool" in tool_call["output"]


async def test_threads_continue_across_runs(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    factory.add(text_turn("one"))
    second = factory.add(text_turn("two"))
    first_run = await manager.start(agent, prompt="first")
    await manager.wait(first_run.run_id)
    run = await manager.start(agent, prompt="second", thread_id=first_run.thread_id)
    await manager.wait(run.run_id)

    assert run.thread_id == first_run.thread_id
    assert second.calls[0].messages == [
        Message.user("first"),
        Message.assistant("one"),
        Message.user("second"),
    ]
    assert len(await store.thread_messages(run.thread_id)) == 4


async def test_messages_are_the_callers_history_and_make_no_thread(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    provider = factory.add(text_turn("c"))
    history = [Message.user("a"), Message.assistant("b")]
    run = await manager.start(agent, messages=history, prompt="and?")
    record = await manager.wait(run.run_id)
    assert provider.calls[0].messages == [*history, Message.user("and?")]
    assert run.thread_id is None and record.thread_id is None
    assert (await store.list_threads())[0] == []
    assert len(await store.run_messages(run.run_id)) == 4


async def test_a_caller_chosen_thread_id_starts_that_thread(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    factory.add(text_turn("one"))
    factory.add(text_turn("two"))
    first = await manager.start(agent, prompt="x", thread_id="thr_mine1")
    await manager.wait(first.run_id)
    thread = await store.get_thread("thr_mine1")
    assert thread is not None and thread.agent == agent.slug and thread.message_count == 2
    second = await manager.start(agent, prompt="y", thread_id="thr_mine1")
    await manager.wait(second.run_id)
    assert len(await store.thread_messages("thr_mine1")) == 4


async def test_start_refuses_bad_requests(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    other = await make_agent(store, slug="other")
    with pytest.raises(NotFound):
        await manager.start("nobody", prompt="x")
    with pytest.raises(InvalidRequest):
        await manager.start(agent)
    gate = Gate()
    factory.add(text_turn("slow", gate=gate))
    run = await manager.start(agent, prompt="x")
    with pytest.raises(InvalidRequest, match="either"):
        await manager.start(agent, messages=[Message.user("y")], thread_id=run.thread_id)
    with pytest.raises(InvalidRequest, match="belongs to agent"):
        await manager.start(other, prompt="y", thread_id=run.thread_id)
    with pytest.raises(Conflict) as busy:
        await manager.start(agent, prompt="y", thread_id=run.thread_id)
    assert busy.value.status == 409 and run.run_id in busy.value.message
    gate.open()
    await manager.wait(run.run_id)
    with pytest.raises(NotFound):
        await manager.get("run_missing")
    for control in (manager.pause, manager.resume, manager.cancel):
        with pytest.raises(Conflict):
            await control(run.run_id)
        with pytest.raises(NotFound):
            await control("run_missing")
    with pytest.raises(Conflict):
        await manager.send_input(run.run_id, "late")


async def test_wait_until_idle_returns_once_no_run_is_active(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    with anyio.fail_after(10):
        assert await manager.wait_until_idle() == 0  # none active: at once
    agent = await make_agent(store)
    gates = [Gate(), Gate()]
    for gate in gates:
        factory.add(text_turn("held", gate=gate))
    runs = [await manager.start(agent, prompt="x") for _ in gates]
    waited: list[int] = []

    async def one_run_done() -> None:
        """Until either run has ended (which gate a run's turn took is not fixed)."""
        async with anyio.create_task_group() as either:

            async def done(run: Run) -> None:
                await run.done.wait()
                either.cancel_scope.cancel()

            for run in runs:
                either.start_soon(done, run)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                waited.append(await manager.wait_until_idle())

            tg.start_soon(wait)
            gates[1].open()
            await one_run_done()
            await anyio.wait_all_tasks_blocked()
            assert waited == []  # the other run is still active
            gates[0].open()
    assert waited == [2] and manager.active_runs() == []


async def test_the_daemon_preloads_the_other_sdks_once_no_run_is_active(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    """`agentd serve`'s warm-up imports the SDK of its default model first; the others would
    take the interpreter lock from a starting run, so they wait until no run is active."""
    agent = await make_agent(store)
    gate = Gate()
    factory.add(text_turn("held", gate=gate))
    run = await manager.start(agent, prompt="x")
    waited: list[int] = []
    try:
        async with anyio.create_task_group() as tg:

            async def preload() -> None:
                waited.append(await preload_other_sdks(manager))

            tg.start_soon(preload)
            await anyio.wait_all_tasks_blocked()
            assert waited == []  # the run is active
            gate.open()
            await manager.wait(run.run_id)
        assert waited == [1]
        assert await preload_other_sdks(manager) == 0  # none active: at once
        # a daemon that is never idle gets them after a while all the same
        gate = Gate()
        factory.add(text_turn("held", gate=gate))
        run = await manager.start(agent, prompt="y")
        with anyio.fail_after(30):
            await preload_other_sdks(manager, wait_at_most=0.05)
        assert [active.run_id for active in manager.active_runs()] == [run.run_id]
        gate.open()
        await manager.wait(run.run_id)
    finally:
        gc.unfreeze()  # what the preload froze in this test process


async def test_global_cap_queues_runs_and_refuses_beyond_the_queue(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    factory.add(text_turn("first", gate=gate))
    factory.add(text_turn("second"))
    async with RunManager(
        store, workspace, provider_factory=factory, env={}, max_concurrent=1, max_queue=1
    ) as manager:
        first = await manager.start(agent, prompt="1")
        await gate.wait_reached()
        second = await manager.start(agent, prompt="2")
        assert second.status == "queued" and manager.metrics.queued == 1
        with pytest.raises(QueueFull) as full:
            await manager.start(agent, prompt="3")
        assert full.value.status == 429
        assert len(factory.created) == 1  # the queued run has not touched a model
        gate.open()
        assert (await manager.wait(second.run_id)).status == "completed"
        assert (await manager.wait(first.run_id)).status == "completed"
        events = await collect(manager, second.run_id)
        assert types(events) == ["status", "run_started", "text", "usage", "complete"]
        assert events[0].payload == {"status": "queued"}


async def test_per_agent_max_concurrent_queues_only_that_agent(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    limited = await make_agent(store, slug="limited", max_concurrent=1)
    free = await make_agent(store, slug="free")
    gate = Gate()
    factory.add(text_turn("a1", gate=gate))
    a1 = await manager.start(limited, prompt="a1")
    await gate.wait_reached()
    a2 = await manager.start(limited, prompt="a2")
    factory.add(text_turn("b1"))
    b1 = await manager.start(free, prompt="b1")
    assert (await manager.wait(b1.run_id)).status == "completed"
    assert (await manager.get(a2.run_id)).status == "queued"
    factory.add(text_turn("a2"))
    gate.open()
    assert (await manager.wait(a2.run_id)).result == "a2"
    assert (await manager.wait(a1.run_id)).result == "a1"


async def test_pause_resume_and_cancel_while_queued(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    factory.add(text_turn("first", gate=gate))
    async with RunManager(
        store, workspace, provider_factory=factory, env={}, max_concurrent=1
    ) as manager:
        first = await manager.start(agent, prompt="1")
        await gate.wait_reached()
        paused = await manager.start(agent, prompt="2")
        cancelled = await manager.start(agent, prompt="3")
        assert (await manager.pause(paused.run_id)).status == "paused"
        record = await manager.cancel(cancelled.run_id)
        assert record.status == "cancelled"
        events = await collect(manager, cancelled.run_id)
        assert types(events) == ["status", "complete"]
        assert events[-1].payload["status"] == "cancelled"

        later = factory.add(text_turn("second"))
        gate.open()
        await manager.wait(first.run_id)
        # Admitted but paused: it stops before its first model call.
        with anyio.fail_after(10):
            await paused.controls.wait_parked()
        assert later.calls == []
        assert (await manager.resume(paused.run_id)).status == "running"
        assert (await manager.wait(paused.run_id)).status == "completed"
        assert types(await collect(manager, paused.run_id)) == [
            "status",
            "status",
            "run_started",
            "status",
            "text",
            "usage",
            "complete",
        ]
        assert len(factory.created) == 2


async def test_pause_and_input_during_a_model_stream(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    provider = factory.add(
        tool_turn(call("c1", "nope"), text="let me try", gate=gate),
        lambda messages: text_turn(f"noted: {messages[-1].text}"),
    )
    run = await manager.start(agent, prompt="go")
    await gate.wait_reached()
    # The model turn is under way: the run is pausing until it stops at its safe point.
    assert (await manager.pause(run.run_id)).status == "pausing"
    await manager.send_input(run.run_id, "use the other tool")
    gate.open()
    with anyio.fail_after(10):
        await run.controls.wait_parked()
    assert len(provider.calls) == 1
    assert (await manager.get(run.run_id)).status == "paused"
    assert (await manager.resume(run.run_id)).status == "running"
    record = await manager.wait(run.run_id)

    assert record.status == "completed" and record.result == "noted: use the other tool"
    events = await collect(manager, run.run_id)
    assert types(events) == [
        "run_started",
        "text",
        "status",
        "input",
        "usage",
        "status",
        "status",
        "tool_call",
        "tool_result",
        "text",
        "usage",
        "complete",
    ]
    statuses = [e.payload["status"] for e in events if e.type == "status"]
    assert statuses == ["pausing", "paused", "resumed"]
    assert [e.payload for e in events if e.type == "input"] == [{"text": "use the other tool"}]
    # The input reached the model as a user message after the tool results.
    assert [m.role for m in provider.calls[1].messages] == ["user", "assistant", "tool", "user"]


async def test_a_status_event_reaches_clients_after_the_record_says_so(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    """A client that reads the run as soon as a `status` event reaches it reads the status
    the event gave (the viewer shows the event; a control plane may read the run next)."""
    agent = await make_agent(store)
    gate = Gate()
    factory.add(tool_turn(call("c1", "nope"), text="held", gate=gate), text_turn("after"))
    run = await manager.start(agent, prompt="go")
    await gate.wait_reached()
    seen: list[tuple[str, str, str]] = []
    # each control waits until the watcher has read the run for the event before it
    reached = {status: anyio.Event() for status in ("pausing", "paused", "resumed")}

    async def watch() -> None:
        async for event in manager.subscribe(run.run_id):
            if event.type == "status":
                live = (await manager.get(run.run_id)).status
                stored = await store.get_run(run.run_id)
                assert stored is not None
                seen.append((event.payload["status"], live, stored.status))
                reached[event.payload["status"]].set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await manager.pause(run.run_id)
            await reached["pausing"].wait()
            gate.open()
            await reached["paused"].wait()
            await manager.resume(run.run_id)
            await reached["resumed"].wait()
            await manager.wait(run.run_id)
    assert seen == [
        ("pausing", "pausing", "pausing"),
        ("paused", "paused", "paused"),
        ("resumed", "running", "running"),
    ]


async def test_a_finished_runs_events_are_replayed_a_store_page_at_a_time(
    manager: RunManager,
    store: Store,
    factory: ScriptedFactory,
    event_read_limits: list[int | None],
) -> None:
    agent = await make_agent(store)
    factory.add(tool_turn(call("c1", "nope"), text="trying"), text_turn("done"))
    run = await manager.start(agent, prompt="go")
    await manager.wait(run.run_id)
    live = await collect(manager, run.run_id)
    event_read_limits.clear()  # the reads of the replay below only
    with anyio.fail_after(10):
        batches = [b async for b in manager.subscribe_batches(run.run_id, after=1, limit=2)]
    assert [e.id for b in batches for e in b] == [e.id for e in live[1:]]
    assert all(len(b) <= 2 for b in batches)
    assert event_read_limits == [STORE_PAGE]  # one page held it all; never an unbounded read


def test_session_count_while_tools_exec_is_still_being_imported(
    manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/metrics counts sessions without importing the tools; while another thread is still
    importing tools.exec (in sys.modules, its functions not defined yet) the count is 0, not
    an AttributeError (a 500 from /metrics)."""
    monkeypatch.setitem(sys.modules, "tools.exec", ModuleType("tools.exec"))
    assert manager.active_sessions() == 0


async def test_cancel_during_a_model_stream(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    provider = factory.add(text_turn("never finished", chunks=3, gate=gate))
    run = await manager.start(agent, prompt="go")
    await gate.wait_reached()
    record = await manager.cancel(run.run_id)

    assert record.status == "cancelled" and record.finished_at
    assert provider.abandoned == 1 and provider.closed
    events = await collect(manager, run.run_id)
    assert types(events) == ["run_started", "text", "complete"]
    assert events[-1].payload["status"] == "cancelled"
    # The partial turn is not part of the thread.
    assert await store.thread_messages(run.thread_id) == [Message.user("go")]


async def test_timeout_fails_the_run(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store, timeout=30)
    factory.add(text_turn("hang", gate=Gate()))
    run = await manager.start(agent, prompt="go", config=RunConfig(timeout=0.1))
    record = await manager.wait(run.run_id)
    assert record.status == "failed" and record.error is not None
    assert record.error["code"] == "timeout"
    events = await collect(manager, run.run_id)
    assert types(events)[-2:] == ["error", "complete"]
    assert events[-2].payload["code"] == "timeout"
    assert events[-1].payload["status"] == "failed"


async def test_turn_limit_from_config_and_fail_on_limit(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store, max_iterations=5)
    strict = await make_agent(store, slug="strict", fail_on_limit=True, max_iterations=1)
    factory.add(*[tool_turn(call(f"c{i}", "nope")) for i in range(5)])
    run = await manager.start(agent, prompt="go", config=RunConfig(max_turns=2))
    record = await manager.wait(run.run_id)
    assert (record.status, record.iterations) == ("completed", 2)
    assert record.error is not None and record.error["code"] == "max_iterations"

    factory.add(*[tool_turn(call(f"c{i}", "nope")) for i in range(5)])
    record = await manager.wait((await manager.start(strict, prompt="go")).run_id)
    assert (record.status, record.iterations) == ("failed", 1)
    events = await collect(manager, record.run_id)
    assert events[-1].payload["status"] == "failed"


async def test_model_errors_fail_the_run(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    factory.add(ModelError("authentication", "bad key", status=401))
    record = await manager.wait((await manager.start(agent, prompt="go")).run_id)
    assert record.status == "failed" and record.error is not None
    assert record.error["code"] == "model_error" and "authentication" in record.error["message"]


async def test_a_model_that_cannot_be_created_fails_the_run(store: Store, workspace: Path) -> None:
    def broken(model: Any, *, env: Any = None) -> Any:
        raise ValueError("unknown model prefix")

    agent = await make_agent(store)
    async with RunManager(store, workspace, provider_factory=broken, env={}) as manager:
        record = await manager.wait((await manager.start(agent, prompt="go")).run_id)
        assert record.status == "failed" and record.error is not None
        assert "unknown model prefix" in record.error["message"]
        assert types(await collect(manager, record.run_id)) == [
            "run_started",
            "error",
            "complete",
        ]


async def test_secrets_are_redacted_in_events_records_and_messages(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    secret = "sk-test-5ecret-value-42"
    agent = await make_agent(store, env={"DEPLOY_TOKEN": secret}, secrets=["DEPLOY_TOKEN"])
    factory.add(
        [
            TextDelta(text="the token is sk-test-5e"),
            TextDelta(text="cret-value-42, keep it safe"),
            *text_turn(f"the token is {secret}, keep it safe")[-1:],
        ]
    )
    run = await manager.start(agent, prompt=f"remember {secret}")
    record = await manager.wait(run.run_id)

    events = await collect(manager, run.run_id)
    wire = "".join(str(e.to_dict()) for e in events)
    assert secret not in wire and "[REDACTED]" in joined(events, "text")
    assert record.result == "the token is [REDACTED], keep it safe"
    stored = await store.run_messages(run.run_id) + await store.thread_messages(run.thread_id)
    assert secret not in "".join(m.model_dump_json() for m in stored)
    assert secret not in (await store.get_run(run.run_id)).model_dump_json()  # type: ignore[union-attr]


async def test_fork_starts_from_a_cut_of_another_runs_conversation(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    factory.add(tool_turn(call("c1", "nope"), text="trying"), text_turn("done"))
    source = await manager.start(agent, prompt="go")
    await manager.wait(source.run_id)
    assert len(await store.run_messages(source.run_id)) == 4

    with pytest.raises(InvalidRequest, match="tool calls"):
        await manager.fork(source.run_id, 2)
    with pytest.raises(InvalidRequest):
        await manager.fork(source.run_id, 9)
    with pytest.raises(InvalidRequest, match="prompt"):
        await manager.fork(source.run_id, 4)

    replay_from_tool_result = factory.add(text_turn("different ending"))
    fork = await manager.fork(source.run_id, 3)
    record = await manager.wait(fork.run_id)
    assert record.result == "different ending"
    assert (record.parent_run_id, record.fork_step) == (source.run_id, 3)
    assert fork.thread_id != source.thread_id
    assert [m.role for m in replay_from_tool_result.calls[0].messages] == [
        "user",
        "assistant",
        "tool",
    ]

    what_if = factory.add(text_turn("what if"))
    record = await manager.wait((await manager.fork(source.run_id, 1, "ask again")).run_id)
    assert record.status == "completed"
    assert what_if.calls[0].messages == [Message.user("go"), Message.user("ask again")]


async def left_by_a_dead_daemon(
    store: Store, run_id: str, *, status: str, **fields: Any
) -> tuple[ThreadRecord, EventLog]:
    """A run of `helper` on a new thread as a daemon killed mid-run leaves it: its record with
    `status` (and `fields`), and its `run_started` event; the log, to add more."""
    agent = await make_agent(store)
    thread = await store.create_thread("helper")
    await store.insert_run(
        RunRecord(
            run_id=run_id,
            agent="helper",
            agent_version=agent.version,
            thread_id=thread.id,
            status=status,
            prompt="hello",
            **fields,
        )
    )
    log = EventLog(run_id, thread.id, store)
    await log.emit("run_started", agent="helper", version=1, threadId=thread.id, model="m")
    return thread, log


async def test_unfinished_runs_are_interrupted_when_the_manager_starts(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    await left_by_a_dead_daemon(store, "run_left_running", status="running")
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        record = await manager.get("run_left_running")
        assert record.status == "interrupted" and record.error is not None
        assert record.error["code"] == "interrupted"
        events = await collect(manager, "run_left_running")
        assert [(e.id, e.type) for e in events] == [
            (1, "run_started"),
            (2, "error"),
            (3, "complete"),
        ]
        assert events[2].payload["status"] == "interrupted"
        assert await collect(manager, "run_left_running", after=2) == events[2:]


async def test_a_run_killed_while_finishing_gets_its_complete_and_run_completed(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    """The window SIGKILL found: the record says completed, the events do not end yet."""
    thread, log = await left_by_a_dead_daemon(
        store, "run_finishing", status="completed", result="all done", iterations=1
    )
    await log.emit("text", content="all done")
    await log.close()
    started = PersistedThreadEvent(
        sequence=1,
        rollout_id="rol_1",
        thread_id=thread.id,
        run_id="run_finishing",
        type="run_started",
        payload={"agent": "helper", "version": 1, "model": "m"},
        created_at="2026-01-01T00:00:00.000Z",
    )
    await store.append_thread_events([started])
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        record = await manager.get("run_finishing")
        assert record.status == "completed" and record.error is None
        events = await collect(manager, "run_finishing")
        assert [(e.id, e.type) for e in events] == [
            (1, "run_started"),
            (2, "text"),
            (3, "complete"),
        ]
        assert events[2].payload["status"] == "completed"
        assert events[2].payload["output"] == "all done"
    thread_events = await store.thread_events_after(thread.id)
    assert [e.type for e in thread_events] == ["run_started", "run_completed"]
    assert thread_events[1].payload["status"] == "completed"
    assert await store.runs_missing_complete() == []


async def test_shutdown_interrupts_active_runs(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    factory.add(text_turn("forever", gate=gate))
    manager = RunManager(store, workspace, provider_factory=factory, env={})
    await manager.start_background()
    run = await manager.start(agent, prompt="go")
    await gate.wait_reached()
    await manager.shutdown(grace=0)
    record = await store.get_run(run.run_id)
    assert record is not None and record.status == "interrupted"
    events = await store.events_after(run.run_id)
    assert [e.type for e in events][-2:] == ["error", "complete"]
    assert events[-1].payload["status"] == "interrupted"
    with pytest.raises(Conflict):
        await manager.start(agent, prompt="too late")


async def test_subscribers_see_a_live_run_and_can_resume_from_an_id(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    factory.add(tool_turn(call("c1", "nope"), gate=gate), text_turn("done"))
    run = await manager.start(agent, prompt="go")
    seen: list[Event] = []

    async def follow() -> None:
        async for event in manager.subscribe(run.run_id):
            seen.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await gate.wait_reached()
        gate.open()
    everything = await collect(manager, run.run_id)
    assert seen == everything and everything[-1].type == "complete"
    assert await collect(manager, run.run_id, after=3) == everything[3:]
    with pytest.raises(NotFound):
        await collect(manager, "run_missing")


async def test_killed_daemon_leaves_an_interrupted_run_whose_thread_continues(
    tmp_path: Path, workspace: Path, factory: ScriptedFactory
) -> None:
    from tests.runtime.crash_daemon import PARTIAL, crash_mid_run

    state = tmp_path / "crash-state"
    started = await crash_mid_run(state, workspace)

    store = await Store.open(state)
    try:
        assert (await store.get_run(started["runId"])).status == "running"  # type: ignore[union-attr]
        async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
            record = await manager.get(started["runId"])
            assert record.status == "interrupted"
            events = await collect(manager, started["runId"])
            assert types(events) == ["run_started", "text", "error", "complete"]
            assert joined(events, "text") == PARTIAL
            assert events[-2].payload["code"] == "interrupted"
            assert events[-1].payload["status"] == "interrupted"

            follow_up = factory.add(text_turn("picking up"))
            run = await manager.start("crashy", prompt="continue", thread_id=started["threadId"])
            assert (await manager.wait(run.run_id)).status == "completed"
            assert follow_up.calls[0].messages == [
                Message.user("do something long"),
                Message.user("continue"),
            ]
    finally:
        await store.close()


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gpt-5", "openai-chat:gpt-4o"])
async def test_end_to_end_through_real_adapters_and_the_fake_model_server(
    store: Store, workspace: Path, model: str
) -> None:
    from tests.fakes import model_server as fake

    async with fake.FakeModelServer() as server:
        server.script(
            fake.Turn(
                [
                    fake.thinking("Look first.", signature="sig-1"),
                    fake.text("Checking."),
                    fake.tool_call("no_such_tool", {"path": "a.txt"}, id="call_1", chunks=3),
                ]
            ),
            fake.Turn([fake.text("All ", "done.")], usage=fake.TurnUsage(input_tokens=50)),
        )
        record, _ = await store.upsert_agent(
            AgentSpec(slug="e2e", model=model, tools=[], system_prompt="Be exact.")
        )
        async with RunManager(store, workspace, env=server.env()) as manager:
            run = await manager.start(record, prompt="go")
            result = await manager.wait(run.run_id)
            events = await collect(manager, run.run_id)

        assert result.status == "completed", result.error
        assert result.result == "All done." and result.iterations == 2
        assert result.usage.input_tokens == 62  # 12 (the default) + 50
        assert types(events) == [
            "run_started",
            "thinking",
            "text",
            "usage",
            "tool_call",
            "tool_result",
            "text",
            "usage",
            "complete",
        ]
        tool_call = next(e.payload for e in events if e.type == "tool_call")
        assert tool_call == {"callId": "call_1", "tool": "no_such_tool", "input": {"path": "a.txt"}}
        assert joined(events, "text") == "Checking.All done."
        # The second request carried the tool's error result back to the model.
        second = json.dumps(server.requests[1].body)
        assert "call_1" in second and "Unknown tool" in second


async def test_cancel_stops_a_real_model_stream(store: Store, workspace: Path) -> None:
    from tests.fakes import model_server as fake

    gate = fake.Gate()
    async with fake.FakeModelServer() as server:
        server.script(fake.Turn([fake.text("never ", "finished")], hold=gate, hold_after=4))
        record, _ = await store.upsert_agent(
            AgentSpec(slug="e2e", model="claude-sonnet-4-6", tools=[])
        )
        async with RunManager(store, workspace, env=server.env()) as manager:
            run = await manager.start(record, prompt="go")
            with anyio.fail_after(10):
                await gate.reached.wait()
            cancelled = await manager.cancel(run.run_id)
            events = await collect(manager, run.run_id)
        gate.open()
    assert cancelled.status == "cancelled"
    assert types(events)[0] == "run_started" and events[-1].payload["status"] == "cancelled"


async def test_concurrent_starts_respect_the_queue_bound_and_thread_ownership(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    factory.add(text_turn("first", gate=gate))
    async with RunManager(
        store, workspace, provider_factory=factory, env={}, max_concurrent=1, max_queue=2
    ) as manager:
        first = await manager.start(agent, prompt="1")
        await gate.wait_reached()
        outcomes: list[str] = []

        async def attempt(**kwargs: Any) -> None:
            try:
                run = await manager.start(agent, **kwargs)
                outcomes.append(run.status)
            except QueueFull:
                outcomes.append("queue_full")
            except Conflict:
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(lambda i=i: attempt(prompt=f"p{i}"))
        assert sorted(outcomes) == ["queue_full"] * 3 + ["queued"] * 2

        outcomes.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(lambda: attempt(prompt="again", thread_id=first.thread_id))
        assert outcomes == ["conflict"] * 3  # the thread's run is still active
        for queued in manager.active_runs():
            if queued.run_id != first.run_id:
                await manager.cancel(queued.run_id)
        gate.open()
        assert (await manager.wait(first.run_id)).status == "completed"

        # A free thread: exactly one of several simultaneous starts gets it.
        factory.add(text_turn("winner"))
        outcomes.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(lambda: attempt(prompt="again", thread_id=first.thread_id))
        assert sorted(outcomes) == ["conflict", "conflict", "running"]
        for run in manager.active_runs():
            assert (await manager.wait(run.run_id)).result == "winner"


class _LookupArgs(ToolArgs):
    model_config = ConfigDict(extra="allow")


class _CustomTool(Tool):
    """Stands in for an invokeUrl tool: its name and schema come from the agent."""

    description = "custom"
    Args = _LookupArgs

    def __init__(self, spec: CustomToolSpec) -> None:
        self.name = spec.name  # type: ignore[misc]
        self._spec = spec

    def spec(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "name": self._spec.name,
            "description": self._spec.description,
            "input_schema": self._spec.input_schema,
        }

    async def run(self, args: _LookupArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(output=f"{self._spec.invoke_url} got {args.model_dump()}")


@pytest.mark.parametrize("with_factory", [True, False])
async def test_custom_tools_come_from_the_factory_or_are_reported_missing(
    store: Store, workspace: Path, factory: ScriptedFactory, with_factory: bool
) -> None:
    custom = [
        CustomToolSpec(
            name=name,
            description=f"look up {name}",
            input_schema={"type": "object", "properties": {name: {"type": "string"}}},
            invoke_url=f"https://tools.example/{name}",
        )
        for name in ("orders", "users")
    ]
    record, _ = await store.upsert_agent(AgentSpec(slug="crm", model="scripted-1", tools=custom))
    provider = factory.add(tool_turn(call("c1", "users", {"users": "ada"})), text_turn("ok"))
    async with RunManager(
        store,
        workspace,
        provider_factory=factory,
        env={},
        custom_tool_factory=_CustomTool if with_factory else None,
    ) as manager:
        run = await manager.start(record, prompt="who is ada")
        await manager.wait(run.run_id)
        events = await collect(manager, run.run_id)

    result = provider.calls[1].messages[-1].tool_results[0]
    if with_factory:
        assert [t["name"] for t in provider.calls[0].tools] == ["orders", "users"]
        assert provider.calls[0].tools[1]["input_schema"]["properties"] == {
            "users": {"type": "string"}
        }
        assert result.output == "https://tools.example/users got {'users': 'ada'}"
        assert "error" not in types(events)
    else:
        assert provider.calls[0].tools == [] and result.is_error
        [error] = [e.payload for e in events if e.type == "error"]
        assert error["code"] == "custom_tools_unavailable" and "orders, users" in error["message"]


async def test_input_sent_while_queued_reaches_the_first_model_call(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    gate = Gate()
    factory.add(text_turn("first", gate=gate))
    async with RunManager(
        store, workspace, provider_factory=factory, env={}, max_concurrent=1
    ) as manager:
        first = await manager.start(agent, prompt="1")
        await gate.wait_reached()
        queued = await manager.start(agent, prompt="summarise")
        await manager.send_input(queued.run_id, "in French")
        later = factory.add(text_turn("résumé"))
        gate.open()
        await manager.wait(first.run_id)
        assert (await manager.wait(queued.run_id)).status == "completed"
    assert later.calls[0].messages == [Message.user("summarise"), Message.user("in French")]
    assert types(await collect_stored(store, queued.run_id))[:3] == [
        "status",
        "input",
        "run_started",
    ]


async def collect_stored(store: Store, run_id: str) -> list[Event]:
    return await store.events_after(run_id)


async def test_call_tool_runs_a_core_tool_without_a_model(
    manager: RunManager, workspace: Path
) -> None:
    written = await manager.call_tool("write_file", {"path": "notes/a.txt", "content": "hi\n"})
    assert not written.is_error, written.output
    assert (workspace / "notes" / "a.txt").read_text() == "hi\n"
    read = await manager.call_tool("read_file", {"path": "notes/a.txt"})
    assert "hi" in read.output and not read.is_error
    outside = await manager.call_tool("read_file", {"path": "../../etc/passwd"})
    assert outside.is_error
    unknown = await manager.call_tool("no_such_tool", {})
    assert unknown.is_error and "Unknown tool" in unknown.output
