"""The link's outbox on its own: a real store, a real HTTP session, the fake control plane on
loopback. It pushes what is pending on every thread once, then only the threads the store says
got events: an idle daemon reads nothing, however many threads it holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest

from runtime.agents import AgentSpec
from runtime.link.outbox import BATCH, JOURNAL_FOLD_MIN, OutboxState, ThreadEventOutbox
from runtime.store import Store
from runtime.thread_events import PersistedThreadEvent
from tests.fakes.control_plane import FakeControlPlane

TOKEN = "cp-token"


def thread_events(thread_id: str, first: int, last: int) -> list[PersistedThreadEvent]:
    return [
        PersistedThreadEvent(
            sequence=sequence,
            rollout_id="rol_1",
            thread_id=thread_id,
            run_id="run_1",
            type="user_message",
            payload={"role": "user", "content": [{"type": "text", "text": f"m{sequence}"}]},
            created_at="2026-01-01T00:00:00.000Z",
        )
        for sequence in range(first, last + 1)
    ]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "state")
    await store.upsert_agent(AgentSpec(slug="helper", model="m"))
    yield store
    await store.close()


@asynccontextmanager
async def outbox_running(
    store: Store, state_dir: Path, cp: FakeControlPlane
) -> AsyncIterator[ThreadEventOutbox]:
    async with aiohttp.ClientSession() as session:
        outbox = ThreadEventOutbox(store, state_dir, session, cp.url, TOKEN)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(outbox.run)
            yield outbox
            tasks.cancel_scope.cancel()


async def test_every_pending_thread_is_pushed_then_only_threads_that_get_events(
    store: Store, tmp_path: Path
) -> None:
    threads = [(await store.create_thread("helper")).id for _ in range(30)]
    for thread_id in threads:
        await store.append_thread_events(thread_events(thread_id, 1, 3))
    for _ in range(20):  # threads with no events yet
        await store.create_thread("helper")
    async with (
        FakeControlPlane(TOKEN) as cp,
        outbox_running(store, tmp_path / "state", cp) as outbox,
    ):
        with anyio.fail_after(30):
            for thread_id in threads:
                await cp.wait_pushed(thread_id, 3)
        assert outbox.pages_read == 30  # a page of each thread with events, none of the others
        read_before = outbox.pages_read
        await store.append_thread_events(thread_events(threads[7], 4, 5))
        with anyio.fail_after(30):
            await cp.wait_pushed(threads[7], 5)
        # one page of the thread that got events; no look at the 29 others
        assert outbox.pages_read - read_before == 1
    assert all(
        [e["sequence"] for e in cp.pushed[t]] == ([1, 2, 3, 4, 5] if t == threads[7] else [1, 2, 3])
        for t in threads
    )


async def test_events_stored_while_a_batch_is_on_its_way_go_out_next(
    store: Store, tmp_path: Path
) -> None:
    thread_id = (await store.create_thread("helper")).id
    async with FakeControlPlane(TOKEN) as cp:
        held = cp.hold_pushes = asyncio.Event()
        async with outbox_running(store, tmp_path / "state", cp):
            await store.append_thread_events(thread_events(thread_id, 1, BATCH + 5))
            with anyio.fail_after(30):
                await cp.wait_push_requests(1)  # the first batch is on its way, unanswered
            await store.append_thread_events(thread_events(thread_id, BATCH + 6, BATCH + 9))
            cp.hold_pushes = None
            held.set()
            with anyio.fail_after(30):
                await cp.wait_pushed(thread_id, BATCH + 9)
    assert [e["sequence"] for e in cp.pushed[thread_id]] == list(range(1, BATCH + 10))
    assert cp.push_batches == 2  # a full batch, then the rest


async def test_a_restarted_outbox_pushes_what_every_thread_got_meanwhile(
    store: Store, tmp_path: Path
) -> None:
    first, second = [(await store.create_thread("helper")).id for _ in range(2)]
    await store.append_thread_events(thread_events(first, 1, 2))
    async with FakeControlPlane(TOKEN) as cp:
        async with outbox_running(store, tmp_path / "state", cp):
            with anyio.fail_after(30):
                await cp.wait_pushed(first, 2)
        # stored while no outbox ran (agentd stopped, or the link was down)
        await store.append_thread_events(thread_events(first, 3, 4))
        await store.append_thread_events(thread_events(second, 1, 1))
        async with outbox_running(store, tmp_path / "state", cp):
            with anyio.fail_after(30):
                await cp.wait_pushed(first, 4)
                await cp.wait_pushed(second, 1)
    # The first outbox may have stopped before it recorded the control plane's answer: a batch
    # is then sent again, which the control plane dedupes by (threadId, sequence).
    assert sorted({e["sequence"] for e in cp.pushed[first]}) == [1, 2, 3, 4]
    assert [e["sequence"] for e in cp.pushed[first]][-2:] == [3, 4]
    assert [e["sequence"] for e in cp.pushed[second]] == [1]


def test_an_acknowledged_batch_costs_a_journal_line_not_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    for n in range(50):
        state.record_pushed(f"thr_{n}", 3)
    state.save()  # a snapshot of 50 threads
    snapshot = path.read_bytes()
    state.record_pushed("thr_7", 9)
    state.record_parked("thr_8", {"from": 4, "status": 422, "detail": "no"})
    assert path.read_bytes() == snapshot  # every thread's cursor is not written again
    assert len(state.journal.read_text().splitlines()) == 2
    again = OutboxState.load(path)
    assert again.pushed == {**{f"thr_{n}": 3 for n in range(50)}, "thr_7": 9}
    assert again.parked == {"thr_8": {"from": 4, "status": 422, "detail": "no"}}


def test_the_journal_is_folded_into_the_snapshot_once_it_is_longer(tmp_path: Path) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    for sequence in range(1, JOURNAL_FOLD_MIN + 2):
        state.record_pushed("thr_1", sequence)
    assert state.journal_lines < JOURNAL_FOLD_MIN
    assert len(state.journal.read_text().splitlines()) == state.journal_lines
    assert json.loads(path.read_text())["pushed"]["thr_1"] >= JOURNAL_FOLD_MIN
    assert OutboxState.load(path).pushed == {"thr_1": JOURNAL_FOLD_MIN + 1}


def test_a_torn_journal_line_costs_only_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    state.record_pushed("thr_1", 200)
    state.record_pushed("thr_2", 5)
    with open(state.journal, "a") as journal:
        journal.write('{"thread":"thr_1","pu')  # the crash came mid-line
    again = OutboxState.load(path)
    assert again.pushed == {"thr_1": 200, "thr_2": 5}  # that batch is sent again
    again.record_pushed("thr_1", 400)
    assert OutboxState.load(path).pushed == {"thr_1": 400, "thr_2": 5}


def test_a_crash_between_the_snapshot_and_emptying_the_journal_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    state.record_pushed("thr_1", 10)
    state.record_parked("thr_2", {"from": 1, "status": 400, "detail": "bad"})
    journal = state.journal.read_text()
    state.save()
    state.journal.write_text(journal)  # as if the journal had not been emptied
    again = OutboxState.load(path)
    assert again.pushed == {"thr_1": 10}
    assert again.parked == {"thr_2": {"from": 1, "status": 400, "detail": "bad"}}


def test_a_snapshot_written_before_the_journal_existed_loads(tmp_path: Path) -> None:
    path = tmp_path / "link-outbox.json"
    path.write_text(json.dumps({"version": 1, "pushed": {"thr_1": 7}, "parked": {}}))
    assert OutboxState.load(path).pushed == {"thr_1": 7}
