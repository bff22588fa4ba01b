"""How runs' conversations are stored: only new messages are written, a thread's messages once
for the thread and all its runs, and nothing a finished step added is lost to a crash."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError

from runtime.agents import AgentRecord, AgentSpec
from runtime.messages import Message
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes.scripted_provider import Gate, ScriptedFactory, call, text_turn, tool_turn


async def make_agent(store: Store) -> AgentRecord:
    agent, _ = await store.upsert_agent(AgentSpec(slug="helper", model="scripted-1", tools=[]))
    return agent


def stored_rows(store: Store) -> dict[str, int]:
    """How many message rows the database holds, by scope (read beside the store)."""
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT scope, COUNT(*) FROM messages GROUP BY scope").fetchall()
    return dict(rows)


def two_turns(n: int) -> list[list[object]]:
    """A tool turn (an unknown tool: an assistant and a tool message) and a text answer."""
    return [tool_turn(call(f"c{n}", "not_a_tool", {"n": n})), text_turn(f"answer {n}")]


async def test_a_thread_with_many_runs_stores_each_message_once(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    runs = []
    thread_id = None
    for n in range(6):
        factory.add(*two_turns(n))
        run = await manager.start(agent, prompt=f"task {n}", thread_id=thread_id)
        assert (await manager.wait(run.run_id)).status == "completed"
        thread_id = run.thread_id
        runs.append(run.run_id)

    assert thread_id is not None
    thread = await store.thread_messages(thread_id)
    assert len(thread) == 6 * 4
    assert stored_rows(store) == {"thread": 24}  # no run keeps a copy of its own
    for n, run_id in enumerate(runs):
        # each run's conversation is the thread as that run left it, however far it went on
        conversation = await store.run_messages(run_id)
        assert conversation == thread[: 4 * (n + 1)]
        assert conversation[-4:][0] == Message.user(f"task {n}")
        assert conversation[-1] == Message.assistant(f"answer {n}")
        detail = await manager.detail(run_id)
        assert [c["callId"] for c in detail["toolCalls"]] == [f"c{i}" for i in range(n + 1)]

    # a fork reads the run's stored conversation: the cut is the thread's first messages
    factory.add(text_turn("forked"))
    fork = await manager.fork(runs[2], 8, prompt="instead")
    assert (await manager.wait(fork.run_id)).status == "completed"
    assert await store.run_messages(fork.run_id) == [
        *thread[:8],
        Message.user("instead"),
        Message.assistant("forked"),
    ]


async def test_runs_without_a_thread_append_to_their_own_log(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    history = [Message.user("a"), Message.assistant("b")]
    provider = factory.add(*two_turns(0))
    run = await manager.start(agent, messages=history, prompt="and?")
    assert (await manager.wait(run.run_id)).status == "completed"
    assert run.thread_id is None
    stored = await store.run_messages(run.run_id)
    assert stored == [*provider.calls[1].messages, Message.assistant("answer 0")]
    assert len(stored) == 6 and stored_rows(store) == {"run": 6}


async def test_a_deleted_thread_keeps_its_runs_conversations(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    agent = await make_agent(store)
    factory.add(text_turn("one"))
    factory.add(text_turn("two"))
    first = await manager.start(agent, prompt="x", thread_id="thr_reused1")
    await manager.wait(first.run_id)
    second = await manager.start(agent, prompt="y", thread_id="thr_reused1")
    await manager.wait(second.run_id)
    before = [await store.run_messages(r.run_id) for r in (first, second)]
    assert [len(m) for m in before] == [2, 4]

    # as DELETE /v1/run/threads/{id} does it: the rollout file, then the store's thread
    await manager.release_thread("thr_reused1")
    await manager.thread_events.delete("thr_reused1")
    assert await store.delete_thread("thr_reused1")
    assert await store.thread_messages("thr_reused1") == []
    assert [await store.run_messages(r.run_id) for r in (first, second)] == before

    # The id starts an empty thread again; the old runs' conversations are not its messages.
    factory.add(text_turn("three"))
    third = await manager.start(agent, prompt="z", thread_id="thr_reused1")
    await manager.wait(third.run_id)
    assert await store.thread_messages("thr_reused1") == [
        Message.user("z"),
        Message.assistant("three"),
    ]
    assert await store.run_messages(third.run_id) == await store.thread_messages("thr_reused1")
    assert [await store.run_messages(r.run_id) for r in (first, second)] == before
    # forking a run whose thread is gone still works from its conversation
    factory.add(text_turn("again"))
    fork = await manager.fork(second.run_id, 3)
    assert (await manager.wait(fork.run_id)).status == "completed"
    assert await store.run_messages(fork.run_id) == [*before[1][:3], Message.assistant("again")]
    # a thread no run used leaves nothing behind
    unused = await store.create_thread("helper")
    await store.append_thread_messages(unused.id, [Message.user("lonely")])
    rows = stored_rows(store)
    assert await store.delete_thread(unused.id)
    assert stored_rows(store) == {**rows, "thread": rows["thread"] - 1}


async def test_a_thread_written_to_during_a_run_leaves_the_run_its_own_copy(
    manager: RunManager, store: Store, factory: ScriptedFactory
) -> None:
    """Nothing in the daemon appends to a thread while one of its runs is active, but if
    something did, the run's stored conversation must still be the run's, not the thread's."""
    agent = await make_agent(store)
    gate = Gate()
    factory.add(
        tool_turn(call("c1", "not_a_tool")),
        tool_turn(call("c2", "not_a_tool"), text="second", gate=gate),
        text_turn("done"),
    )
    run = await manager.start(agent, prompt="go")
    assert run.thread_id is not None
    with anyio.fail_after(30):
        await gate.wait_reached()
    await store.append_thread_messages(run.thread_id, [Message.user("from elsewhere")])
    gate.open()
    assert (await manager.wait(run.run_id)).status == "completed"

    stored = await store.run_messages(run.run_id)
    roles = ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [m.role for m in stored] == roles
    assert Message.user("from elsewhere") not in stored and stored[-1].text == "done"
    thread = await store.thread_messages(run.thread_id)
    assert thread == [*stored[:3], Message.user("from elsewhere"), *stored[3:]]


async def test_append_run_messages_checks_where_the_conversation_ends(store: Store) -> None:
    thread = await store.create_thread("helper")
    one, two, three = Message.user("1"), Message.assistant("2"), Message.user("3")
    # a thread's run: the conversation is the thread's first messages
    assert await store.append_run_messages("run_t", [one, two], thread_id=thread.id, length=2)
    assert await store.run_messages("run_t") == [one, two]
    # an empty step still records where the run is (a run that adds nothing yet)
    assert await store.append_run_messages("run_u", [], thread_id=thread.id, length=2)
    assert await store.run_messages("run_u") == [one, two]
    # the caller's conversation is longer than what the thread holds: refused, but the
    # thread has the messages and the run's conversation is as it was
    assert not await store.append_run_messages("run_t", [three], thread_id=thread.id, length=4)
    assert await store.thread_messages(thread.id) == [one, two, three]
    assert await store.run_messages("run_t") == [one, two]
    # stored whole, the run has its own log from then on, and the thread still gets messages
    await store.set_run_messages("run_t", [one, two, Message.user("mine")])
    assert await store.append_run_messages("run_t", [three], thread_id=thread.id, length=4)
    assert await store.run_messages("run_t") == [one, two, Message.user("mine"), three]
    assert await store.thread_messages(thread.id) == [one, two, three, three]
    # no thread: the run's own log, from empty
    assert not await store.append_run_messages("run_o", [one], thread_id=None, length=3)
    assert await store.run_messages("run_o") == []
    assert await store.append_run_messages("run_o", [one, two], thread_id=None, length=2)
    assert await store.append_run_messages("run_o", [three], thread_id=None, length=3)
    assert await store.run_messages("run_o") == [one, two, three]
    with pytest.raises(KeyError):
        await store.append_run_messages("run_x", [one], thread_id="thr_missing", length=1)
    assert await store.run_messages("run_x") == []


V2_SCHEMA = """
CREATE TABLE threads (id TEXT PRIMARY KEY, agent TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, metadata TEXT NOT NULL, message_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE messages (scope TEXT NOT NULL, owner TEXT NOT NULL, seq INTEGER NOT NULL,
    role TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (scope, owner, seq)) WITHOUT ROWID;
"""


async def test_runs_stored_by_an_older_daemon_keep_their_conversations(tmp_path: Path) -> None:
    """A version 2 database (each run's whole conversation under its own id) migrates."""
    state = tmp_path / "state"
    store = await Store.open(state)
    await store.close()
    messages = [Message.user("old"), Message.assistant("stored whole")]
    with sqlite3.connect(state / "agentd.db") as conn:
        # what version 2 kept for a run, and its own version number
        conn.execute("DROP TABLE run_conversations")
        conn.execute("DROP TABLE webhook_deliveries")  # version 4's
        conn.executemany(
            "INSERT INTO messages (scope, owner, seq, role, data) VALUES ('run', ?, ?, ?, ?)",
            [("run_old", i, m.role, m.model_dump_json()) for i, m in enumerate(messages)],
        )
        conn.execute("PRAGMA user_version = 2")
    reopened = await Store.open(state)
    try:
        assert await reopened.run_messages("run_old") == messages
        assert await reopened.append_run_messages(
            "run_old", [Message.user("more")], thread_id=None, length=3
        )
        assert await reopened.run_messages("run_old") == [*messages, Message.user("more")]
    finally:
        await reopened.close()


async def test_a_daemon_killed_between_turns_loses_no_finished_step(
    tmp_path: Path, workspace: Path, factory: ScriptedFactory
) -> None:
    """SIGKILL while the model streams the run's fourth turn: the thread and the run's
    conversation hold every message of the three finished turns, and the thread goes on."""
    from tests.runtime.crash_daemon import TOOL_TURNS, crash_mid_run

    state = tmp_path / "crash-state"
    started = await crash_mid_run(state, workspace, "turns", timeout=60)

    store = await Store.open(state)
    try:
        kept = await store.thread_messages(started["threadId"])
        assert [m.role for m in kept] == ["user", "assistant", "user"] + [
            "assistant",
            "tool",
        ] * TOOL_TURNS
        first_run = [Message.user("first"), Message.assistant("one")]
        assert kept[:3] == [*first_run, Message.user("do something long")]
        assert [m.tool_calls[0].arguments for m in kept[3::2]] == [
            {"turn": i} for i in range(TOOL_TURNS)
        ]
        assert await store.run_messages(started["runId"]) == kept
        assert await store.run_messages(started["firstRunId"]) == kept[:2]
        assert stored_rows(store) == {"thread": len(kept)}
        async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
            assert (await manager.get(started["runId"])).status == "interrupted"
            assert await store.run_messages(started["runId"]) == kept
            follow_up = factory.add(text_turn("picking up"))
            run = await manager.start("crashy", prompt="continue", thread_id=started["threadId"])
            assert (await manager.wait(run.run_id)).status == "completed"
            assert follow_up.calls[0].messages == [*kept, Message.user("continue")]
            assert await store.run_messages(run.run_id) == [
                *kept,
                Message.user("continue"),
                Message.assistant("picking up"),
            ]
    finally:
        await store.close()


async def test_reading_a_conversation_leaves_the_collector_as_it_found_it(store: Store) -> None:
    """Reads pause the cyclic collector while they decode (every object they build outlives
    the read); afterwards it runs again, and one paused by someone else stays paused."""
    thread = await store.create_thread("helper")
    messages = [Message.user(str(i)) for i in range(50)]
    assert await store.append_run_messages("run_r", messages, thread_id=thread.id, length=50)
    assert gc.isenabled()
    assert await store.thread_messages(thread.id) == messages
    assert await store.run_messages("run_r") == messages
    assert gc.isenabled()
    gc.disable()
    try:
        assert await store.thread_messages(thread.id) == messages
        assert await store.run_messages("run_r") == messages
        assert not gc.isenabled()
    finally:
        gc.enable()
    # a read that fails mid-way (a damaged row) resumes the collector too
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            'UPDATE messages SET data = \'{"role": "user"\' WHERE owner = ? AND seq = 25',
            (thread.id,),
        )
    with pytest.raises(ValidationError):
        await store.thread_messages(thread.id)
    assert gc.isenabled()
