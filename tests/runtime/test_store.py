"""The SQLite store: round trips of every record kind, versioning, pagination, reopening."""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from runtime.agents import AgentSpec
from runtime.events import Event
from runtime.messages import Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from runtime.providers.base import Usage
from runtime.store import (
    LastThreadEvent,
    RunRecord,
    Store,
    StoreClosed,
    StoreFull,
    StoreLocked,
)
from runtime.thread_events import PersistedThreadEvent


def conversation() -> list[Message]:
    return [
        Message.user("list the files"),
        Message(
            role="assistant",
            content=[
                ThinkingPart(thinking="use list_dir", signature="sig-1"),
                TextPart(text="Looking."),
                ToolCallPart(id="c1", name="list_dir", arguments={"path": "."}),
            ],
        ),
        Message(role="tool", content=[ToolResultPart(call_id="c1", output="a.txt\nb.txt")]),
        Message.assistant("Two files: a.txt and b.txt."),
    ]


def event(run_id: str, id: int, type: str = "text", **payload: object) -> Event:
    return Event(
        id=id,
        run_id=run_id,
        thread_id="thr_1",
        type=type,
        ts="2025-01-01T00:00:00.000Z",
        payload=payload or {"content": f"part {id}"},
    )


def thread_event(
    thread_id: str, sequence: int, *, rollout_id: str = "rol_1"
) -> PersistedThreadEvent:
    return PersistedThreadEvent(
        sequence=sequence,
        rollout_id=rollout_id,
        thread_id=thread_id,
        run_id="run_1",
        type="user_message",
        payload=Message.user(f"message {sequence}").model_dump(),
        created_at="2026-01-01T00:00:00.000Z",
    )


async def test_database_is_sqlite_in_wal_mode_under_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    store = await Store.open(state)
    await store.close()
    assert store.path == state / "agentd.db"
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"agents", "agent_versions", "threads", "runs", "messages", "events"} <= tables
    finally:
        conn.close()


async def test_calls_run_off_the_event_loop_thread(store: Store) -> None:
    loop_thread = threading.get_ident()
    used: list[int] = []
    original = store._writer

    class Spy:
        def __getattr__(self, name: str) -> object:
            used.append(threading.get_ident())
            return getattr(original, name)

    store._writer = Spy()  # type: ignore[assignment]
    try:
        await store.create_thread("helper")
    finally:
        store._writer = original
    assert used and loop_thread not in used


async def test_agent_upsert_versions_and_rollback(store: Store) -> None:
    first, action = await store.upsert_agent(AgentSpec(slug="helper", model="m1"))
    assert action == "created" and first.version == 1 and first.id.startswith("agt_")

    same, action = await store.upsert_agent(AgentSpec(slug="helper", model="m1"))
    assert action == "unchanged" and same == first

    second, action = await store.upsert_agent(
        AgentSpec(slug="helper", model="m2", system_prompt="be brief")
    )
    assert action == "updated" and second.version == 2 and second.id == first.id
    assert second.created_at == first.created_at

    assert (await store.get_agent("helper")) == second
    assert (await store.get_agent("helper", 1)) == first
    assert await store.get_agent("helper", 7) is None
    assert [r.version for r in (await store.list_agent_versions("helper"))[0]] == [1, 2]

    rolled = await store.rollback_agent("helper", 1)
    assert rolled.version == 3 and rolled.spec == first.spec
    assert (await store.get_agent("helper")).spec.model == "m1"  # type: ignore[union-attr]
    versions, _ = await store.list_agent_versions("helper")
    assert [r.spec.model for r in versions] == ["m1", "m2", "m1"]

    with pytest.raises(KeyError):
        await store.rollback_agent("helper", 9)
    with pytest.raises(KeyError):
        await store.rollback_agent("nobody", 1)


async def test_agents_list_and_delete(store: Store) -> None:
    await store.upsert_agent(AgentSpec(slug="zeta", model="m"))
    await store.upsert_agent(AgentSpec(slug="alpha", model="m"))
    assert [a.slug for a in (await store.list_agents())[0]] == ["alpha", "zeta"]

    original = await store.get_agent("zeta")
    assert await store.delete_agent("zeta") is True
    assert await store.delete_agent("zeta") is False
    assert await store.get_agent("zeta") is None
    assert (await store.list_agent_versions("zeta"))[0] == []
    assert [a.slug for a in (await store.list_agents())[0]] == ["alpha"]

    # Re-creating the slug keeps its id and continues the version numbers, so runs of the
    # old versions stay unambiguous.
    again, action = await store.upsert_agent(AgentSpec(slug="zeta", model="m"))
    assert action == "created" and again.version == 2
    assert original is not None and again.id == original.id


async def test_threads_and_their_messages(store: Store) -> None:
    thread = await store.create_thread("helper", metadata={"user": "u1"})
    assert thread.id.startswith("thr_") and thread.message_count == 0
    named = await store.create_thread("other", thread_id="thr_mine")
    with pytest.raises(ValueError):
        await store.create_thread("other", thread_id="thr_mine")

    messages = conversation()
    await store.append_thread_messages(thread.id, messages[:2])
    await store.append_thread_messages(thread.id, messages[2:])
    assert await store.thread_messages(thread.id) == messages
    loaded = await store.get_thread(thread.id)
    assert loaded is not None and loaded.message_count == 4 and loaded.metadata == {"user": "u1"}
    assert loaded.updated_at >= thread.updated_at

    # Newest update first; two updates in the same millisecond fall back to the id order.
    named_now = await store.get_thread(named.id)
    assert named_now is not None
    newest_first = sorted([loaded, named_now], key=lambda t: (t.updated_at, t.id), reverse=True)
    assert [t.id for t in (await store.list_threads())[0]] == [t.id for t in newest_first]
    assert [t.id for t in (await store.list_threads(agent="other"))[0]] == [named.id]

    with pytest.raises(KeyError):
        await store.append_thread_messages("thr_missing", messages)
    assert await store.delete_thread(thread.id) is True
    assert await store.delete_thread(thread.id) is False
    assert await store.get_thread(thread.id) is None
    assert await store.thread_messages(thread.id) == []


async def test_run_records_round_trip_and_update(store: Store) -> None:
    record = RunRecord(
        run_id="run_1",
        agent="helper",
        agent_version=2,
        thread_id="thr_1",
        status="queued",
        prompt="hi",
        metadata={"ticket": 7},
        config={"maxTurns": 3},
        model="claude-x",
    )
    await store.insert_run(record)
    assert await store.get_run("run_1") == record
    with pytest.raises(ValueError):
        await store.insert_run(record)

    updated = await store.update_run(
        "run_1",
        status="completed",
        result="done",
        usage=Usage(input_tokens=10, output_tokens=4),
        iterations=2,
        finishedAt="2025-01-01T00:00:01.000Z",
    )
    assert updated.status == "completed" and updated.finished_at == "2025-01-01T00:00:01.000Z"
    assert await store.get_run("run_1") == updated
    assert updated.usage.input_tokens == 10 and updated.metadata == {"ticket": 7}

    with pytest.raises(KeyError):
        await store.update_run("run_missing", status="failed")
    with pytest.raises(TypeError):
        await store.update_run("run_1", colour="blue")
    with pytest.raises(ValueError):
        await store.update_run("run_1", status="exploded")
    assert (await store.get_run("run_1")) == updated  # a refused update changes nothing

    messages = conversation()
    await store.set_run_messages("run_1", messages)
    assert await store.run_messages("run_1") == messages
    await store.set_run_messages("run_1", messages[:1])
    assert await store.run_messages("run_1") == messages[:1]


async def test_run_listing_pages_newest_first_with_filters(store: Store) -> None:
    for i in range(7):
        await store.insert_run(
            RunRecord(
                run_id=f"run_{i}",
                agent="a" if i % 2 else "b",
                status="completed" if i < 5 else "running",
                prompt=str(i),
            )
        )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = await store.list_runs(limit=3, cursor=cursor)
        seen += [r.run_id for r in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [f"run_{i}" for i in reversed(range(7))] and pages == 3

    page, cursor = await store.list_runs(agent="a", limit=2)
    assert [r.run_id for r in page] == ["run_5", "run_3"] and cursor is not None
    page, cursor = await store.list_runs(agent="a", limit=2, cursor=cursor)
    assert [r.run_id for r in page] == ["run_1"] and cursor is None

    page, _ = await store.list_runs(status="running")
    assert [r.run_id for r in page] == ["run_6", "run_5"]
    page, _ = await store.list_runs(agent="b", status="completed")
    assert [r.run_id for r in page] == ["run_4", "run_2", "run_0"]

    # A run inserted between pages does not shift the next page.
    first, cursor = await store.list_runs(limit=2)
    await store.insert_run(RunRecord(run_id="run_new", agent="a"))
    second, _ = await store.list_runs(limit=2, cursor=cursor)
    assert [r.run_id for r in first + second] == ["run_6", "run_5", "run_4", "run_3"]

    with pytest.raises(ValueError):
        await store.list_runs(cursor="not-a-cursor")
    with pytest.raises(ValueError):
        await store.list_runs(limit=0)


async def test_unfinished_runs_are_the_queued_running_and_paused_ones(store: Store) -> None:
    statuses = ["queued", "running", "paused", "completed", "failed", "cancelled", "interrupted"]
    for status in statuses:
        await store.insert_run(RunRecord(run_id=f"run_{status}", agent="a", status=status))
    unfinished = await store.unfinished_runs()
    assert [r.run_id for r in unfinished] == ["run_queued", "run_running", "run_paused"]
    await store.update_run("run_running", status="interrupted")
    assert [r.run_id for r in await store.unfinished_runs()] == ["run_queued", "run_paused"]


async def test_events_append_and_read_after_an_id(store: Store) -> None:
    await store.append_events([event("run_a", i) for i in range(1, 6)])
    await store.append_event(event("run_b", 1, "error", message="boom", code="tool_error"))
    assert [e.id for e in await store.events_after("run_a")] == [1, 2, 3, 4, 5]
    assert [e.id for e in await store.events_after("run_a", after=3)] == [4, 5]
    assert [e.id for e in await store.events_after("run_a", after=1, limit=2)] == [2, 3]
    assert await store.events_after("run_a", after=5) == []
    [stored] = await store.events_after("run_b")
    assert stored == event("run_b", 1, "error", message="boom", code="tool_error")
    assert await store.last_event_id("run_a") == 5
    assert await store.last_event_id("run_none") == 0
    with pytest.raises(ValueError):
        await store.append_event(event("run_a", 3))
    assert [e.payload["content"] for e in await store.events_after("run_a", 2, 1)] == ["part 3"]


async def test_readers_asking_for_the_same_page_at_once_share_one_read(store: Store) -> None:
    """Clients catching up on a run together ask for the same pages at the same time: one
    read (and one decoding of the rows) answers all of them, each with its own list."""
    await store.append_events([event("run_a", i) for i in range(1, 301)])
    pages: list[list[Event]] = []

    async def read_page(after: int) -> None:
        pages.append(await store.events_after("run_a", after, limit=100))

    reads = store.event_page_reads
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(read_page, 100)
    assert store.event_page_reads == reads + 1
    assert all(page == pages[0] for page in pages)
    assert [e.id for e in pages[0]] == list(range(101, 201))
    pages[0].clear()  # a caller's list is its own
    assert len(pages[1]) == 100
    # other pages, or one asked for after the read is over, are read for themselves
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_page, 0)
        tg.start_soon(read_page, 200)
    await read_page(100)
    assert store.event_page_reads == reads + 4


async def test_thread_page_reads_are_shared_only_when_the_caller_says_the_page_is_stored(
    store: Store,
) -> None:
    """A subscription reading its backlog marks its page reads shared; every other reader of
    a thread's events (the outbox, a rollout being filled in, the HTTP listing) may be
    following appends and reads for itself."""
    thread = await store.create_thread("helper")
    await store.append_thread_events([thread_event(thread.id, i) for i in range(1, 31)])
    pages: list[list[int]] = []

    async def read_page(*, shared: bool) -> None:
        page = await store.thread_events_after(thread.id, 10, limit=10, shared=shared)
        pages.append([e.sequence for e in page])

    reads = store.thread_event_page_reads
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(functools.partial(read_page, shared=True))
    assert store.thread_event_page_reads == reads + 1
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(functools.partial(read_page, shared=False))
    assert store.thread_event_page_reads == reads + 1  # not counted: not shareable
    assert pages == [list(range(11, 21))] * 10


async def test_a_thread_event_watch_notes_the_threads_that_get_events(store: Store) -> None:
    """What the link's outbox waits on instead of reading every thread in turn: the threads
    whose events were stored (appended, or imported with a thread) since it last asked."""
    first, second, quiet = [(await store.create_thread("helper")).id for _ in range(3)]
    with store.watch_thread_events() as watch:
        await store.append_thread_events([thread_event(first, 1)])
        await store.append_thread_events([thread_event(second, 1), thread_event(second, 2)])
        await store.thread_events_after(quiet)  # reads are not noted
        with anyio.fail_after(5):
            assert await watch.changed() == {first, second}
        template = await store.get_thread(quiet)
        assert template is not None
        record = template.model_copy(update={"id": "thr_imported"})
        await store.import_thread(record, [], [thread_event("thr_imported", 1)])
        with anyio.fail_after(5):
            assert await watch.changed() == {"thr_imported"}
        waiting: list[set[str]] = []

        async def wait_for_next() -> None:
            waiting.append(await watch.changed())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_next)
                await anyio.lowlevel.checkpoint()  # it waits: nothing was stored since
                assert waiting == []
                await store.append_thread_events([thread_event(quiet, 1)])
        assert waiting == [{quiet}]


async def test_the_last_event_of_every_thread_with_events(store: Store) -> None:
    first, second, empty = [(await store.create_thread("helper")).id for _ in range(3)]
    assert await store.last_thread_events() == {}
    await store.append_thread_events([thread_event(first, i) for i in range(1, 4)])
    await store.append_thread_events([thread_event(second, 1, rollout_id="rol_2")])
    assert await store.last_thread_events() == {
        first: LastThreadEvent(3, "rol_1"),
        second: LastThreadEvent(1, "rol_2"),
    }
    await store.delete_thread(first)
    assert await store.last_thread_events() == {second: LastThreadEvent(1, "rol_2")}
    assert empty not in await store.last_thread_events()


async def test_a_reader_waiting_on_a_cancelled_page_read_gets_its_page(store: Store) -> None:
    """The first of two readers of a page is cancelled while the second waits for its read:
    the second gets the page all the same (it reads it itself)."""
    await store.append_events([event("run_a", i) for i in range(1, 11)])
    pages: list[list[int]] = []
    first = anyio.CancelScope()

    async def first_reader() -> None:
        with first:
            await store.events_after("run_a", 0, limit=5)

    async def second_reader() -> None:
        pages.append([e.id for e in await store.events_after("run_a", 0, limit=5)])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first_reader)
            tg.start_soon(second_reader)
            await anyio.lowlevel.checkpoint()  # both are waiting: the first on its read
            first.cancel()
    assert pages == [[1, 2, 3, 4, 5]]


async def test_everything_survives_reopening_the_store(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = await Store.open(state)
    agent, _ = await store.upsert_agent(AgentSpec(slug="helper", model="m1"))
    await store.upsert_agent(AgentSpec(slug="helper", model="m2"))
    thread = await store.create_thread("helper")
    await store.append_thread_messages(thread.id, conversation())
    run = RunRecord(run_id="run_1", agent="helper", thread_id=thread.id, status="running")
    await store.insert_run(run)
    await store.set_run_messages("run_1", conversation()[:2])
    await store.append_events([event("run_1", i) for i in range(1, 4)])
    await store.close()
    with pytest.raises(StoreClosed):
        await store.get_run("run_1")

    reopened = await Store.open(state)
    try:
        assert [a.version for a in (await reopened.list_agent_versions("helper"))[0]] == [1, 2]
        assert (await reopened.get_agent("helper", 1)) == agent
        assert await reopened.thread_messages(thread.id) == conversation()
        assert await reopened.get_run("run_1") == run
        assert await reopened.run_messages("run_1") == conversation()[:2]
        assert [e.id for e in await reopened.events_after("run_1")] == [1, 2, 3]
        assert [r.run_id for r in await reopened.unfinished_runs()] == ["run_1"]
    finally:
        await reopened.close()


async def test_concurrent_events_are_committed_together_and_each_outcome_is_its_own(
    store: Store,
) -> None:
    """Events of many runs arriving at once share writes (group commit): every one is
    stored, in each run's order, and a duplicate id fails only its own append."""
    await store.append_event(event("run_7", 3))
    outcomes: dict[tuple[str, int], str] = {}

    async def run(n: int) -> None:
        for i in range(1, 11):
            try:
                await store.append_event(event(f"run_{n}", i))
                outcomes[(f"run_{n}", i)] = "stored"
            except ValueError as exc:
                outcomes[(f"run_{n}", i)] = str(exc)

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(run, n)
    refused = {key: why for key, why in outcomes.items() if why != "stored"}
    assert refused == {("run_7", 3): "duplicate event id 3 for run_7"}
    for n in range(40):
        assert ids_of(await store.events_after(f"run_{n}")) == list(range(1, 11))


async def test_a_failed_group_write_fails_every_event_in_it_and_stores_none(
    store: Store,
) -> None:
    def fill(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._write(fill)
    errors: list[BaseException] = []

    async def append(n: int) -> None:
        try:
            await store.append_event(event(f"run_{n}", 1, content="z" * 20_000))
        except StoreFull as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(append, n)
    assert len(errors) == 20 and all("full" in str(e) for e in errors)
    assert [await store.last_event_id(f"run_{n}") for n in range(20)] == [0] * 20
    await store._write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    await store.append_event(event("run_0", 1))
    assert ids_of(await store.events_after("run_0")) == [1]


async def test_concurrent_writers_are_serialised_without_loss(store: Store) -> None:
    thread = await store.create_thread("helper")

    async def writer(n: int) -> None:
        for i in range(10):
            await store.append_thread_messages(thread.id, [Message.user(f"{n}-{i}")])

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(writer, n)
    messages = await store.thread_messages(thread.id)
    assert len(messages) == 50
    assert sorted(m.text for m in messages) == sorted(
        f"{n}-{i}" for n in range(5) for i in range(10)
    )
    for n in range(5):  # each writer's own messages stay in its order
        mine = [m.text for m in messages if m.text.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(10)]


async def test_a_writer_killed_mid_stream_leaves_a_consistent_prefix(tmp_path: Path) -> None:
    """SIGKILL a process that is writing as fast as it can: on reopening, the database is
    intact, the run's events are exactly 1..N, and the thread holds whole messages."""
    state = tmp_path / "state"
    root = Path(__file__).resolve().parents[2]
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.runtime.store_writer", str(state)], cwd=root
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            output = b""
            async for chunk in process.stdout:
                output += chunk
                if b"ready" in output:
                    break
    finally:
        process.kill()
        with anyio.fail_after(10):
            await process.wait()
    assert process.returncode == -signal.SIGKILL

    store = await Store.open(state)
    try:
        check = await store._read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
        assert check == "ok"
        events = await store.events_after("run_crash")
        assert len(events) >= 200
        assert ids_of(events) == list(range(1, len(events) + 1))
        assert all(e.payload["chunk"].startswith(f"{e.id}:") for e in events)
        thread = await store.get_thread("thr_crash")
        messages = await store.thread_messages("thr_crash")
        assert thread is not None and thread.message_count == len(messages)
        assert [m.text for m in messages] == [str(i) for i in range(1, len(messages) + 1)]
        # The writer emits event i, then appends message i: killed between the two at most.
        assert len(events) - 1 <= len(messages) <= len(events)
        run = await store.get_run("run_crash")
        assert run is not None and run.iterations == 10 * (len(messages) // 10)
        # And the store keeps working after the crash.
        await store.append_event(
            event("run_crash", len(events) + 1, "error", message="x", code="interrupted")
        )
        assert await store.last_event_id("run_crash") == len(events) + 1
    finally:
        await store.close()


async def test_a_full_disk_fails_the_write_and_changes_nothing(store: Store) -> None:
    thread = await store.create_thread("helper")
    await store.append_events([event("run_a", 1)])

    def fill(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._write(fill)
    big = "y" * 50_000  # needs new pages
    with pytest.raises(StoreFull, match="out of disk space"):
        await store.append_events([event("run_a", 2, content=big), event("run_a", 3)])
    with pytest.raises(StoreFull, match="out of disk space"):
        await store.append_thread_messages(thread.id, [Message.user(big)])
    assert ids_of(await store.events_after("run_a")) == [1]
    assert (await store.get_thread(thread.id)).message_count == 0  # type: ignore[union-attr]

    await store._write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    await store.append_events([event("run_a", 2, content=big)])
    await store.append_thread_messages(thread.id, [Message.user(big)])
    assert ids_of(await store.events_after("run_a")) == [1, 2]
    assert await store.thread_messages(thread.id) == [Message.user(big)]


def ids_of(events: list[Event]) -> list[int]:
    return [e.id for e in events]


async def test_one_store_per_state_dir_at_a_time(tmp_path: Path) -> None:
    first = await Store.open(tmp_path)
    try:
        with pytest.raises(StoreLocked) as refused:
            await Store.open(tmp_path)
        assert refused.value.pid == os.getpid()
        assert f"in use by process {os.getpid()}" in str(refused.value)
    finally:
        await first.close()
    second = await Store.open(tmp_path)  # the lock went with the first store
    await second.close()


async def test_agents_are_found_by_slug_or_id(store: Store) -> None:
    record, _ = await store.upsert_agent(AgentSpec(slug="named", model="m"))
    by_id = await store.get_agent(record.id)
    assert by_id is not None and by_id.slug == "named"
    assert (await store.get_agent(record.id, 1)) == by_id
    assert await store.get_agent("agt_nobody") is None
