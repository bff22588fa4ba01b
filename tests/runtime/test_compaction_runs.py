"""Long runs stay inside the context window: real adapters and SDKs against the fake model
server, which reports usage from each request's real size and refuses any request larger than
the window, as the APIs do."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.agents import AgentRecord, AgentSpec
from runtime.compaction import SUMMARY_PREFIX, SUMMARY_REQUEST
from runtime.events import Event
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes import model_server as fake

WINDOW = 8_000
TURNS = 60
FILE_CHARS = 5_000  # one read_file result: ~1,300 tokens, so 60 of them are ~10x the window
SUMMARY_MARK = SUMMARY_REQUEST.split("\n", 1)[0][:40]


def is_summary_request(request: fake.RecordedRequest) -> bool:
    return SUMMARY_MARK in json.dumps(request.body)


def long_task(count: int = TURNS) -> Callable[[fake.RecordedRequest], fake.ScriptItem]:
    """A model that reads `count` files one per turn, then answers; and summarises when asked."""
    seen = {"turns": 0, "summaries": 0}

    def respond(request: fake.RecordedRequest) -> fake.ScriptItem:
        if is_summary_request(request):
            seen["summaries"] += 1
            return fake.Turn(
                [fake.text(f"SUMMARY {seen['summaries']}: read files 0..n, all fine so far.")]
            )
        turn = seen["turns"]
        seen["turns"] += 1
        if turn < count:
            call = fake.tool_call("read_file", {"path": f"src/f{turn}.txt"}, id=f"call_{turn}")
            return fake.Turn([fake.text(f"Reading file {turn}."), call])
        return fake.Turn([fake.text("All files read.")])

    return respond


def write_files(workspace: Path, count: int = TURNS) -> None:
    (workspace / "src").mkdir()
    for i in range(count):
        line = f"file {i}: " + "abcdefghij" * 7 + "\n"
        (workspace / "src" / f"f{i}.txt").write_text(line * (FILE_CHARS // len(line)))


def assert_tool_calls_paired(request: fake.RecordedRequest) -> None:
    """Every tool call is answered by exactly one result, right after it; no orphan result."""
    body = request.body
    if request.api == "anthropic":
        messages = body["messages"]
        for index, message in enumerate(messages):
            blocks = message["content"] if isinstance(message["content"], list) else []
            calls = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            if message["role"] == "user":
                results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
                before = messages[index - 1]["content"] if index else []
                asked = [
                    b["id"] for b in before if isinstance(b, dict) and b.get("type") == "tool_use"
                ]
                assert sorted(results) == sorted(asked), (index, results, asked)
            elif calls:
                following = messages[index + 1]["content"]
                answered = [b["tool_use_id"] for b in following if b.get("type") == "tool_result"]
                assert sorted(answered) == sorted(calls)
    elif request.api == "chat":
        pending: list[str] = []
        for message in body["messages"]:
            if message["role"] == "tool":
                assert pending and message["tool_call_id"] == pending.pop(0)
                continue
            assert not pending, f"calls without results: {pending}"
            pending = [c["id"] for c in message.get("tool_calls") or []]
        assert not pending
    else:
        calls = [i["call_id"] for i in body["input"] if i.get("type") == "function_call"]
        outputs = [i["call_id"] for i in body["input"] if i.get("type") == "function_call_output"]
        assert calls == outputs


async def reader_agent(store: Store, model: str = "claude-sonnet-4-6") -> AgentRecord:
    """The agent of these tests: it reads files, in a small window."""
    agent, _ = await store.upsert_agent(
        AgentSpec(
            slug="reader",
            model=model,
            tools=["read_file"],
            maxIterations=100,
            contextWindow=WINDOW,
        )
    )
    return agent


async def run_to_end(manager: RunManager, agent: Any, **kw: Any) -> tuple[Any, list[Event]]:
    run = await manager.start(agent, **kw)
    with anyio.fail_after(240):
        result = await manager.wait(run.run_id)
        events = [event async for event in manager.subscribe(run.run_id)]
    return result, events


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gpt-5", "openai-chat:gpt-4o"])
async def test_a_run_ten_times_the_window_completes_inside_it(
    store: Store, workspace: Path, model: str
) -> None:
    write_files(workspace)
    async with fake.FakeModelServer(
        responder=long_task(), context_limit=WINDOW, usage_from_request=True
    ) as server:
        agent = await reader_agent(store, model)
        async with RunManager(store, workspace, env=server.env()) as manager:
            result, events = await run_to_end(manager, agent, prompt="Read every file in src/.")

    assert result.status == "completed", result.error
    assert result.iterations == TURNS + 1 and result.result == "All files read."
    turns = [r for r in server.requests if not is_summary_request(r)]
    summaries = [r for r in server.requests if is_summary_request(r)]
    assert len(turns) == TURNS + 1
    # Every request stayed inside the window (the fake refuses larger ones), and together
    # they would not have fitted many times over.
    assert max(r.tokens for r in server.requests) <= WINDOW
    assert sum(len(json.dumps(e.payload)) for e in events if e.type == "tool_result") / 4 > (
        7 * WINDOW
    )
    started = [e for e in events if e.type == "compaction_started"]
    completed = [e for e in events if e.type == "compaction_completed"]
    assert started and len(started) == len(completed)
    assert len(summaries) == sum(e.payload["summarized"] for e in completed) >= 1
    for event in completed:
        assert event.payload["tokensAfter"] < event.payload["tokensBefore"]
        assert event.payload["messagesReplaced"] > 0
    # No summary request offers tools; the summary reached the model with the first message.
    for request in summaries:
        assert not request.body.get("tools")
    text = json.dumps(turns[-1].body)
    assert "Read every file in src/." in text and SUMMARY_PREFIX[:40] in text
    for request in turns:
        assert_tool_calls_paired(request)
    # Nothing was deleted: the stored conversation has every call and its full output.
    stored = await store.run_messages(result.run_id)
    assert sum(len(m.tool_calls) for m in stored) == TURNS
    assert any(m.role == "compaction" for m in stored)
    assert all(
        len(part.output) > FILE_CHARS for m in stored if m.role == "tool" for part in m.tool_results
    )


async def test_a_thread_continues_compacted_across_runs_and_a_restart(
    tmp_path: Path, workspace: Path
) -> None:
    write_files(workspace, 30)
    state = tmp_path / "state"
    respond = long_task(15)
    async with fake.FakeModelServer(
        responder=respond, context_limit=WINDOW, usage_from_request=True
    ) as server:
        store = await Store.open(state)
        try:
            agent = await reader_agent(store)
            async with RunManager(store, workspace, env=server.env()) as manager:
                first, events = await run_to_end(manager, agent, prompt="Read files 0-14.")
            assert first.status == "completed", first.error
            assert any(e.type == "compaction_completed" for e in events)
        finally:
            await store.close()

        # A new daemon on the same state: the thread goes on from its compacted view.
        server.responder = long_task(3)
        store = await Store.open(state)
        try:
            agent = await store.get_agent("reader")
            assert agent is not None
            async with RunManager(store, workspace, env=server.env()) as manager:
                second, _ = await run_to_end(
                    manager, agent, prompt="Now three more.", thread_id=first.thread_id
                )
            assert second.status == "completed", second.error
            thread = await store.thread_messages(first.thread_id)
        finally:
            await store.close()

        continued = [r for r in server.requests if not is_summary_request(r)][-1]
        text = json.dumps(continued.body)
        assert "Read files 0-14." in text and "Now three more." in text
        # The second daemon sent the compacted view, not the whole stored thread.
        assert "removed to keep the conversation inside the context window" in text
        assert max(r.tokens for r in server.requests) <= WINDOW
        assert_tool_calls_paired(continued)
        assert any(m.role == "compaction" for m in thread)

        # A third daemon with only the workspace: the rollout's compaction events rebuild the
        # same compacted conversation, so the model is sent the same view.
        server.responder = long_task(0)
        store = await Store.open(tmp_path / "fresh-state")
        try:
            agent = await reader_agent(store)
            async with RunManager(store, workspace, env=server.env()) as manager:
                third, _ = await run_to_end(
                    manager, agent, prompt="Anything left?", thread_id=first.thread_id
                )
                events = await store.thread_events_after(first.thread_id)
        finally:
            await store.close()
    assert third.status == "completed", third.error
    types = [e.type for e in events]
    assert "compaction_started" in types and "compaction_completed" in types
    last = json.dumps(server.requests[-1].body)
    assert "Anything left?" in last and "Now three more." in last
    assert "removed to keep the conversation inside the context window" in last
    assert server.requests[-1].tokens <= WINDOW


def failing_summaries(summary: Callable[[], fake.ScriptItem]) -> Callable[..., fake.ScriptItem]:
    """`long_task`, but every summary request gets `summary()`."""
    task = long_task()

    def respond(request: fake.RecordedRequest) -> fake.ScriptItem:
        return summary() if is_summary_request(request) else task(request)

    return respond


def assert_compactions_closed(events: list[Event]) -> list[Event]:
    """Each `compaction_started` is followed by its `compaction_completed` or
    `compaction_failed` before anything else of the compaction's kind; the closings in order."""
    closings: list[Event] = []
    open_started: Event | None = None
    for event in events:
        if event.type == "compaction_started":
            assert open_started is None, "a compaction started before the last one ended"
            open_started = event
        elif event.type in {"compaction_completed", "compaction_failed"}:
            assert open_started is not None, f"{event.type} without compaction_started"
            assert event.payload["reason"] == open_started.payload["reason"]
            assert event.payload["tokensBefore"] == open_started.payload["tokensBefore"]
            open_started = None
            closings.append(event)
    assert open_started is None, "a compaction_started was never closed"
    return closings


async def test_a_compaction_whose_summary_fails_is_closed_before_the_run_fails(
    store: Store, workspace: Path
) -> None:
    write_files(workspace)
    refused = failing_summaries(lambda: fake.HttpError(400, "the summary was refused"))
    async with fake.FakeModelServer(
        responder=refused, context_limit=WINDOW, usage_from_request=True
    ) as server:
        agent = await reader_agent(store)
        async with RunManager(store, workspace, env=server.env()) as manager:
            result, events = await run_to_end(manager, agent, prompt="Read every file in src/.")

    assert result.status == "failed" and result.error["code"] == "model_error"
    assert any(is_summary_request(r) for r in server.requests)
    failed = assert_compactions_closed(events)[-1]
    assert failed.type == "compaction_failed"
    assert failed.payload["code"] == "model_error"
    assert "the summary was refused" in failed.payload["message"]
    types = [e.type for e in events]
    assert types[types.index("compaction_failed") :][-2:] == ["error", "complete"]
    assert events[-2].payload["code"] == "model_error"


async def test_a_run_cancelled_while_summarising_closes_its_compaction(
    store: Store, workspace: Path
) -> None:
    write_files(workspace)
    gate = fake.Gate()
    held = failing_summaries(lambda: fake.Turn([fake.text("SUMMARY: never sent")], hold=gate))
    async with fake.FakeModelServer(
        responder=held, context_limit=WINDOW, usage_from_request=True
    ) as server:
        agent = await reader_agent(store)
        async with RunManager(store, workspace, env=server.env()) as manager:
            run = await manager.start(agent, prompt="Read every file in src/.")
            try:
                with anyio.fail_after(240):
                    await gate.reached.wait()
                    await manager.cancel(run.run_id)
                    result = await manager.wait(run.run_id)
                    events = [event async for event in manager.subscribe(run.run_id)]
            finally:
                gate.open()

    assert result.status == "cancelled"
    failed = assert_compactions_closed(events)[-1]
    assert failed.type == "compaction_failed" and failed.payload["code"] == "cancelled"
    assert events[-1].type == "complete" and events[-1].payload["status"] == "cancelled"


async def test_a_summary_that_is_none_fails_the_run_as_a_model_error(
    store: Store, workspace: Path
) -> None:
    write_files(workspace)
    empty = failing_summaries(lambda: fake.Turn([fake.text("")], usage=fake.TurnUsage(0, 11)))
    async with fake.FakeModelServer(
        responder=empty, context_limit=WINDOW, usage_from_request=True
    ) as server:
        agent = await reader_agent(store)
        async with RunManager(store, workspace, env=server.env()) as manager:
            result, events = await run_to_end(manager, agent, prompt="Read every file in src/.")

    # The model's failure, not a conversation too large to fit (`context_overflow`).
    assert result.status == "failed" and result.error["code"] == "model_error", result.error
    assert "no usable summary" in result.error["message"]
    failed = assert_compactions_closed(events)[-1]
    assert failed.type == "compaction_failed" and failed.payload["code"] == "model_error"
    assert "no usable summary" in failed.payload["message"]
    # Its tokens were spent all the same: counted, between the compaction's start and end.
    types = [e.type for e in events]
    summary_usage = events[types.index("compaction_failed") - 1]
    assert summary_usage.type == "usage" and summary_usage.payload["compaction"] is True
    assert summary_usage.payload["outputTokens"] == 11
    assert result.usage.output_tokens == sum(
        e.payload["outputTokens"] for e in events if e.type == "usage"
    )
