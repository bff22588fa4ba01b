"""The thread event log, its rollout file and the hub: sequences without gaps across runs,
the rollout written before subscribers hear of an event, torn lines, reconciliation after a
crash between the two writes, bounded subscribers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import pytest

from runtime.messages import Message, TextPart, ThinkingPart, ToolCallPart, ToolResultPart
from runtime.rollout import RolloutFile, rollout_path
from runtime.store import Store
from runtime.thread_events import (
    LiveThreadEvent,
    PersistedThreadEvent,
    ThreadEventError,
    conversation_from_events,
    message_events,
)
from runtime.thread_log import ThreadEventHub, ThreadSubscriberDropped

THREAD = "thr_test"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_sequences_continue_across_runs_and_reopen_without_gap(
    store: Store, workspace: Path
) -> None:
    hub = ThreadEventHub(store, workspace)
    log = await hub.log(THREAD)
    first = await log.append(
        "run_1", "rol_1", [("run_started", {"agent": "a", "version": 1, "model": "m"})]
    )
    more = await log.append(
        "run_1",
        "rol_1",
        [
            ("user_message", Message.user("hi").model_dump()),
            ("run_completed", {"status": "completed", "result": "ok", "error": None}),
        ],
    )
    assert [e.sequence for e in first + more] == [1, 2, 3]
    await log.sync()
    # A second hub (a restarted daemon) continues the numbering from what is stored.
    del log
    again = await ThreadEventHub(store, workspace).log(THREAD)
    assert again.last_sequence == 3
    nxt = await again.append(
        "run_2", "rol_2", [("run_started", {"agent": "a", "version": 1, "model": "m"})]
    )
    assert nxt[0].sequence == 4 and nxt[0].rollout_id == "rol_2"
    stored = await store.thread_events_after(THREAD)
    assert [e.sequence for e in stored] == [1, 2, 3, 4]
    assert lines(rollout_path(workspace, THREAD)) == [e.to_dict() for e in stored]
    assert stored[2].payload == {
        "status": "completed",
        "usage": {
            "inputTokens": 0,
            "outputTokens": 0,
            "cachedInputTokens": 0,
            "reasoningTokens": 0,
        },
        "iterations": 0,
        "result": "ok",
        "error": None,
    }


async def test_bad_events_are_refused_and_take_no_sequence(store: Store, workspace: Path) -> None:
    log = await ThreadEventHub(store, workspace).log(THREAD)
    with pytest.raises(ThreadEventError):
        await log.append("run_1", "rol_1", [("assistant_message_delta", {"text": "x"})])
    with pytest.raises(ThreadEventError):
        await log.append("run_1", "rol_1", [("run_completed", {"status": "weird"})])
    with pytest.raises(ThreadEventError):
        await log.append("run_1", "rol_1", [("user_message", Message.assistant("x").model_dump())])
    with pytest.raises(ThreadEventError):
        log.publish("run_1", "tool_result", {"callId": "c", "output": ""})
    assert log.last_sequence == 0
    assert await store.thread_events_after(THREAD) == []


def test_a_conversation_round_trips_through_its_events() -> None:
    conversation = [
        Message.user("list files"),
        Message(
            role="assistant",
            content=[
                ThinkingPart(thinking="look", signature="sig-1"),
                TextPart(text="Looking."),
                ToolCallPart(id="c1", name="read_file", arguments={"path": "a"}),
                ToolCallPart(id="c2", name="exec_command", raw_arguments="{bad"),
            ],
        ),
        Message(
            role="tool",
            content=[
                ToolResultPart(call_id="c1", output="A", name="read_file"),
                ToolResultPart(call_id="c2", output="bad json", is_error=True, name="exec_command"),
            ],
        ),
        Message.assistant("done"),
    ]
    drafts = message_events(conversation, {"c1": 1.5})
    assert [t for t, _ in drafts] == [
        "user_message",
        "assistant_message",
        "tool_call",
        "tool_call",
        "tool_result",
        "tool_result",
        "assistant_message",
    ]
    assert drafts[3][1] == {
        "callId": "c2",
        "tool": "exec_command",
        "input": {"rawArguments": "{bad"},
    }
    assert drafts[4][1]["durationMs"] == 1.5 and drafts[5][1]["durationMs"] is None
    events = [
        PersistedThreadEvent(
            sequence=i,
            rollout_id="r",
            thread_id="t",
            run_id="x",
            type=t,  # type: ignore[arg-type]
            payload=p,
            created_at="2026-01-01T00:00:00.000Z",
        )
        for i, (t, p) in enumerate(drafts, start=1)
    ]
    assert conversation_from_events(events) == conversation


async def test_the_rollout_line_exists_before_a_subscriber_sees_the_event(
    store: Store, workspace: Path
) -> None:
    log = await ThreadEventHub(store, workspace).log(THREAD)
    subscription = log.subscribe()
    path = rollout_path(workspace, THREAD)
    seen_in_file: list[int] = []

    async def follow() -> None:
        async for event in subscription:
            assert isinstance(event, PersistedThreadEvent)
            seen_in_file.append(len(lines(path)))
            if event.sequence == 3:
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        for _ in range(3):
            await log.append("run_1", "rol_1", [("user_message", Message.user("x").model_dump())])
    assert len(seen_in_file) == 3
    assert all(count >= index for index, count in enumerate(seen_in_file, start=1))


async def test_a_torn_last_line_is_reported_skipped_and_cut_before_the_next_append(
    store: Store, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = ThreadEventHub(store, workspace)
    log = await hub.log(THREAD)
    await log.append("run_1", "rol_1", [("user_message", Message.user("one").model_dump())])
    await log.sync()
    path = rollout_path(workspace, THREAD)
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"sequence":2,"rolloutId":"rol_1","thr')  # a crash mid-write
    rollout = RolloutFile(path)
    assert [e.sequence for e in await rollout.read()] == [1]
    assert (await rollout.last()).sequence == 1  # type: ignore[union-attr]
    assert rollout.damage and rollout.damage[0].torn
    assert "torn last line" in caplog.text
    # The next append cuts the torn bytes off first: the file stays one event per line.
    await log.append("run_1", "rol_1", [("user_message", Message.user("two").model_dump())])
    await log.sync()
    data = path.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n")
    assert [e["sequence"] for e in lines(path)] == [1, 2]


async def test_an_unreadable_line_in_the_middle_is_reported_and_skipped(workspace: Path) -> None:
    path = rollout_path(workspace, THREAD)
    path.parent.mkdir(parents=True)
    good = PersistedThreadEvent(
        sequence=1,
        rollout_id="r",
        thread_id=THREAD,
        run_id="x",
        type="user_message",
        payload=Message.user("a").model_dump(),
        created_at="2026-01-01T00:00:00.000Z",
    )
    path.write_text(good.json_text + "\nnot json at all\n")
    rollout = RolloutFile(path)
    assert await rollout.read() == [good]
    assert await rollout.last() == good
    assert [d.torn for d in rollout.damage] == [False]


async def test_a_crash_between_rollout_and_store_is_reconciled_on_open(
    store: Store, workspace: Path
) -> None:
    hub = ThreadEventHub(store, workspace)
    log = await hub.log(THREAD)
    await log.append("run_1", "rol_1", [("user_message", Message.user("a").model_dump())])
    await log.sync()
    # The rollout got event 2 but the daemon died before the store did.
    orphan = PersistedThreadEvent(
        sequence=2,
        rollout_id="rol_1",
        thread_id=THREAD,
        run_id="run_1",
        type="user_message",
        payload=Message.user("b").model_dump(),
        created_at="2026-01-01T00:00:00.000Z",
    )
    await RolloutFile(rollout_path(workspace, THREAD)).append([orphan])
    del log
    reopened = await ThreadEventHub(store, workspace).log(THREAD)
    assert reopened.last_sequence == 2
    assert (await store.thread_events_after(THREAD, 1)) == [orphan]
    # And a rollout that was lost is written again from the store.
    rollout_path(workspace, THREAD).unlink()
    del reopened
    await ThreadEventHub(store, workspace).log(THREAD)
    assert [e["sequence"] for e in lines(rollout_path(workspace, THREAD))] == [1, 2]


async def test_rollouts_off_writes_no_file(store: Store, workspace: Path) -> None:
    log = await ThreadEventHub(store, workspace, rollouts=False).log(THREAD)
    await log.append("run_1", "rol_1", [("user_message", Message.user("a").model_dump())])
    assert not (workspace / ".agentd").exists()
    assert len(await store.thread_events_after(THREAD)) == 1


async def test_subscribers_get_stored_then_live_events_in_order(
    store: Store, workspace: Path
) -> None:
    log = await ThreadEventHub(store, workspace).log(THREAD)
    for text in "abc":
        await log.append("run_1", "rol_1", [("user_message", Message.user(text).model_dump())])
    subscription = log.subscribe(after=1)
    log.publish("run_1", "assistant_message_delta", {"text": "he"})
    await log.append(
        "run_1", "rol_1", [("assistant_message", Message.assistant("hey").model_dump())]
    )
    got = []
    with anyio.fail_after(5):
        async for event in subscription:
            got.append(event)
            if len(got) == 4:
                break
    assert [getattr(e, "sequence", e.type) for e in got] == [2, 3, "assistant_message_delta", 4]
    # Persisted-only subscribers (a forwarder) do not see live events.
    quiet = log.subscribe(after=3, live=False)
    log.publish("run_1", "assistant_message_delta", {"text": "x"})
    await log.append("run_1", "rol_1", [("user_message", Message.user("d").model_dump())])
    with anyio.fail_after(5):
        first = await quiet.__anext__()
        second = await quiet.__anext__()
    assert isinstance(first, PersistedThreadEvent) and first.sequence == 4
    assert isinstance(second, PersistedThreadEvent) and second.sequence == 5


async def test_subscribers_catching_up_from_one_point_share_the_page_reads(
    store: Store, workspace: Path
) -> None:
    """Every stream of a long thread reconnecting at once asks for the same stored pages: one
    read of each page answers them all, in snapshots (`catch_up`) and in iteration alike, and
    each subscriber gets every event once, in order."""
    log = await ThreadEventHub(store, workspace, rollouts=False).log(THREAD)
    for batch in range(4):
        texts = range(batch * 300, (batch + 1) * 300)
        await log.append(
            "run_1", "rol_1", [("user_message", Message.user(str(i)).model_dump()) for i in texts]
        )
    snapshots: list[list[int]] = []
    iterated: list[list[int]] = []

    async def snapshot() -> None:
        subscription = log.subscribe(after=100)
        snapshots.append([e.sequence for e in await subscription.catch_up()])
        subscription.close()

    async def iterate() -> None:
        subscription = log.subscribe(after=100)
        seen = []
        async for event in subscription:
            seen.append(event.sequence)
            if event.sequence == 1200:
                break
        subscription.close()
        iterated.append(seen)

    async def page_reads_of_twenty_at_once(subscriber: Callable[[], Awaitable[None]]) -> int:
        reads = store.thread_event_page_reads
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(subscriber)
        return store.thread_event_page_reads - reads

    assert await page_reads_of_twenty_at_once(snapshot) == 1  # one page of up to 5,000
    assert snapshots == [list(range(101, 1201))] * 20
    # pages of 500: 101-600, -1100, -1200
    assert await page_reads_of_twenty_at_once(iterate) == 3
    assert iterated == [list(range(101, 1201))] * 20


async def test_a_subscriber_that_falls_behind_is_dropped_and_resumes_without_loss(
    store: Store, workspace: Path
) -> None:
    log = await ThreadEventHub(store, workspace, queue_size=5).log(THREAD)
    slow = log.subscribe()
    for i in range(8):
        await log.append("run_1", "rol_1", [("user_message", Message.user(str(i)).model_dump())])
        log.publish("run_1", "assistant_message_delta", {"text": str(i)})
    assert slow.dropped and log.subscriber_count == 0
    with pytest.raises(ThreadSubscriberDropped) as dropped:
        async for _ in slow:
            pass
    resumed = log.subscribe(after=dropped.value.last_sequence)
    assert [e.sequence for e in await resumed.catch_up()] == list(range(1, 9))
    # Byte bounds drop too: a live burst larger than the byte budget.
    small = log.subscribe(after=8, max_queued_bytes=1000)
    for _ in range(10):
        log.publish("run_1", "tool_output_delta", {"callId": "c", "chunk": "x" * 200})
    assert small.dropped and "bytes" in (small.drop_reason or "")


async def test_one_log_per_thread_while_in_use_even_when_opened_concurrently(
    store: Store, workspace: Path
) -> None:
    hub = ThreadEventHub(store, workspace)
    opened = []

    async def open_one() -> None:
        opened.append(await hub.log(THREAD))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(open_one)
    assert all(o is opened[0] for o in opened)

    async def append_many(n: int) -> None:
        for _ in range(n):
            await opened[0].append("run_1", "rol_1", [("tool_call", {"callId": "c", "tool": "t"})])

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(append_many, 10)
    stored = await store.thread_events_after(THREAD)
    assert [e.sequence for e in stored] == list(range(1, 41))


async def test_live_events_have_no_sequence(store: Store, workspace: Path) -> None:
    log = await ThreadEventHub(store, workspace).log(THREAD)
    subscription = log.subscribe()
    event = log.publish("run_1", "tool_call_completed", {"callId": "c", "tool": "t"})
    assert isinstance(event, LiveThreadEvent)
    assert set(json.loads(event.json_text)) == {"type", "threadId", "runId", "payload", "createdAt"}
    log.unsubscribe(subscription)


async def test_live_events_are_made_only_for_subscribers_that_take_them(
    store: Store, workspace: Path
) -> None:
    log = await ThreadEventHub(store, workspace).log(THREAD)
    assert log.publish("run_1", "tool_output_delta", {"callId": "c", "chunk": "x"}) is None
    persisted_only = log.subscribe(live=False)
    assert log.publish("run_1", "tool_output_delta", {"callId": "c", "chunk": "x"}) is None
    watching = log.subscribe()
    assert log.publish("run_1", "tool_output_delta", {"callId": "c", "chunk": "y"}) is not None
    assert watching.queued == 1 and persisted_only.queued == 0
    with pytest.raises(ThreadEventError):  # a wrong type is refused, listener or not
        log.publish("run_1", "user_message", {})


class FailingOnce:
    """A thread event store whose next append fails (a full disk, a locked database)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fail_next = False

    async def append_thread_events(self, events: Sequence[PersistedThreadEvent]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        await self.store.append_thread_events(events)

    async def thread_events_after(
        self, thread_id: str, after: int = 0, limit: int | None = None, *, shared: bool = False
    ) -> list[PersistedThreadEvent]:
        return await self.store.thread_events_after(thread_id, after, limit, shared=shared)

    async def last_thread_sequence(self, thread_id: str) -> int:
        return await self.store.last_thread_sequence(thread_id)


async def test_a_failed_store_write_takes_the_rollout_lines_back(
    store: Store, workspace: Path
) -> None:
    flaky = FailingOnce(store)
    log = await ThreadEventHub(flaky, workspace).log(THREAD)
    subscription = log.subscribe()
    await log.append("run_1", "rol_1", [("user_message", Message.user("a").model_dump())])
    flaky.fail_next = True
    with pytest.raises(OSError):
        await log.append(
            "run_1",
            "rol_1",
            [("user_message", Message.user(t).model_dump()) for t in ("lost", "too")],
        )
    assert log.last_sequence == 1 and subscription.queued == 1  # nobody heard of them
    await log.append("run_1", "rol_1", [("user_message", Message.user("b").model_dump())])
    await log.sync()
    stored = await store.thread_events_after(THREAD)
    assert [e.sequence for e in stored] == [1, 2]
    assert lines(rollout_path(workspace, THREAD)) == [e.to_dict() for e in stored]


async def test_the_rollout_directory_stays_out_of_a_git_workspace(
    store: Store, workspace: Path
) -> None:
    import subprocess

    from tests.needs import need_program

    git = need_program("git")
    subprocess.run([git, "init", "-q", str(workspace)], check=True)
    log = await ThreadEventHub(store, workspace).log(THREAD)
    await log.append("run_1", "rol_1", [("user_message", Message.user("a").model_dump())])
    await log.sync()
    assert rollout_path(workspace, THREAD).is_file()
    status = subprocess.run(
        [git, "-C", str(workspace), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert status.stdout == ""
