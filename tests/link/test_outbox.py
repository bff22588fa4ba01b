"""The link's outbox on its own: a real store, a real HTTP session, the fake control plane on
loopback. It pushes what is pending on every thread once, then only the threads the store says
got events: an idle daemon reads nothing, however many threads it holds."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest

from runtime.agents import AgentSpec
from runtime.link.outbox import (
    BATCH,
    JOURNAL_FOLD_MIN,
    PUSH_TIMEOUT,
    PUSHES_AT_ONCE,
    LinkRefused,
    OutboxState,
    ThreadEventOutbox,
)
from runtime.store import Store
from runtime.thread_events import PersistedThreadEvent
from tests.fakes.control_plane import FakeControlPlane

TOKEN = "cp-token"


def thread_events(
    thread_id: str, first: int, last: int, *, rollout_id: str = "rol_1"
) -> list[PersistedThreadEvent]:
    return [
        PersistedThreadEvent(
            sequence=sequence,
            rollout_id=rollout_id,
            thread_id=thread_id,
            run_id="run_1",
            type="user_message",
            payload={"role": "user", "content": [{"type": "text", "text": f"m{sequence}"}]},
            created_at="2026-01-01T00:00:00.000Z",
        )
        for sequence in range(first, last + 1)
    ]


def event_at(sequence: int, rollout_id: str = "rol_1") -> PersistedThreadEvent:
    """An event the control plane acknowledged (for `OutboxState.record_pushed`)."""
    return thread_events("thr", sequence, sequence, rollout_id=rollout_id)[0]


async def new_threads(store: Store, *thread_ids: str, events: int) -> None:
    """Threads of these ids (a caller may choose them), each with `events` events."""
    for thread_id in thread_ids:
        await store.create_thread("helper", thread_id)
        await store.append_thread_events(thread_events(thread_id, 1, events, rollout_id="rol_old"))


async def make_again(store: Store, thread_id: str, *, events: int) -> None:
    """Delete the thread and make a new one of the same id, with `events` new events (1, 2,
    … again, from rollout `rol_new`)."""
    await store.delete_thread(thread_id)
    await store.create_thread("helper", thread_id)
    await store.append_thread_events(thread_events(thread_id, 1, events, rollout_id="rol_new"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "state")
    await store.upsert_agent(AgentSpec(slug="helper", model="m"))
    yield store
    await store.close()


@asynccontextmanager
async def outbox_running(
    store: Store,
    state_dir: Path,
    cp: FakeControlPlane,
    *,
    rng: random.Random | None = None,
    push_timeout: float = PUSH_TIMEOUT,
) -> AsyncIterator[ThreadEventOutbox]:
    async with aiohttp.ClientSession() as session:
        outbox = await ThreadEventOutbox.open(
            store, state_dir, session, cp.url, TOKEN, rng=rng, push_timeout=push_timeout
        )
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


async def test_a_thread_deleted_and_made_again_is_pushed_from_its_start(
    store: Store, tmp_path: Path
) -> None:
    """A caller may choose a thread's id, delete the thread and use the id again: the new
    thread's events count from 1 again, so a cursor past them must not hide them."""
    shorter, longer = "chat-1", "chat-2"
    await new_threads(store, shorter, longer, events=3)
    async with FakeControlPlane(TOKEN) as cp:
        async with outbox_running(store, tmp_path / "state", cp):
            with anyio.fail_after(30):
                await cp.wait_pushed(shorter, 3)
                await cp.wait_pushed(longer, 3)
            await make_again(store, shorter, events=2)
            await make_again(store, longer, events=5)
            with anyio.fail_after(30):
                await cp.wait_pushed(longer, 5)
                await cp.wait_pushed_from(shorter, "rol_new", 2)
    for thread_id, count in ((shorter, 2), (longer, 5)):
        new = [e["sequence"] for e in cp.pushed[thread_id] if e["rolloutId"] == "rol_new"]
        assert new == list(range(1, count + 1))


async def test_a_restarted_outbox_pushes_a_thread_made_again_meanwhile(
    store: Store, tmp_path: Path
) -> None:
    same, deleted = "chat-1", "chat-2"
    await new_threads(store, same, deleted, events=2)
    async with FakeControlPlane(TOKEN) as cp:
        async with outbox_running(store, tmp_path / "state", cp) as outbox:
            with anyio.fail_after(30):
                await outbox.wait_acknowledged(same, 2)
                await outbox.wait_acknowledged(deleted, 2)
        # while no outbox ran: made again with as many events, so only which events differs
        await make_again(store, same, events=2)
        await store.delete_thread(deleted)
        async with outbox_running(store, tmp_path / "state", cp) as outbox:
            with anyio.fail_after(30):
                await outbox.wait_acknowledged(same, 2, "rol_new")
            assert deleted not in outbox.state.pushed  # a deleted thread's cursor is dropped
    new = [e["sequence"] for e in cp.pushed[same] if e["rolloutId"] == "rol_new"]
    assert new == [1, 2]
    state = OutboxState.load(tmp_path / "state" / "link-outbox.json")
    assert state.pushed == {same: 2}
    assert state.rollouts == {same: "rol_new"}


async def test_a_refused_thread_is_parked_until_it_is_made_again(
    store: Store, tmp_path: Path
) -> None:
    refused, fine = "chat-1", "chat-2"
    await new_threads(store, refused, fine, events=2)
    async with FakeControlPlane(TOKEN) as cp:
        cp.refuse_threads[refused] = 422
        async with outbox_running(store, tmp_path / "state", cp) as outbox:
            with anyio.fail_after(30):
                await cp.wait_pushed(fine, 2)
            await store.append_thread_events(thread_events(refused, 3, 3, rollout_id="rol_old"))
            await store.append_thread_events(thread_events(fine, 3, 3, rollout_id="rol_old"))
            with anyio.fail_after(30):  # a round after the first, which parked the thread
                await cp.wait_pushed(fine, 3)
            assert outbox.state.parked[refused]["from"] == 1
            assert outbox.state.parked[refused]["status"] == 422
            assert cp.push_requests == 3  # the parked thread was not tried again
            del cp.refuse_threads[refused]
            await make_again(store, refused, events=1)
            with anyio.fail_after(30):
                await cp.wait_pushed_from(refused, "rol_new", 1)
            assert refused not in outbox.state.parked
    assert [e["rolloutId"] for e in cp.pushed[refused]] == ["rol_new"]


class ShortBackoff(random.Random):
    """Backoff waits of 10 ms: a failing thread is retried many times in a short test."""

    def uniform(self, a: float, b: float) -> float:
        return min(b, 0.01)


async def test_a_thread_whose_pushes_keep_failing_holds_up_no_other_thread(
    store: Store, tmp_path: Path
) -> None:
    """A push that fails (here a 503 for one thread only) is retried with the backoff; it
    used to be retried in place, so no other thread was pushed until it went through."""
    failing, fine = "chat-1", "chat-2"
    await new_threads(store, failing, events=BATCH + 5)
    async with FakeControlPlane(TOKEN) as cp:
        cp.refuse_threads[failing] = 503  # a failure retried, not a refusal that parks
        async with outbox_running(store, tmp_path / "state", cp, rng=ShortBackoff()) as outbox:
            with anyio.fail_after(30):
                await cp.wait_push_requests(3)  # the failing thread is being retried
            await new_threads(store, fine, events=3)
            with anyio.fail_after(30):
                await cp.wait_pushed(fine, 3)
            requests = cp.push_requests
            with anyio.fail_after(30):
                await cp.wait_push_requests(requests + 3)  # and it is still retried
            assert failing not in cp.pushed and failing not in outbox.state.parked
            del cp.refuse_threads[failing]
            with anyio.fail_after(30):
                await cp.wait_pushed(failing, BATCH + 5)
    # each thread's events in order, without a gap, once (a refused batch is not recorded)
    assert [e["sequence"] for e in cp.pushed[failing]] == list(range(1, BATCH + 6))
    assert [e["sequence"] for e in cp.pushed[fine]] == [1, 2, 3]


async def test_pushes_that_are_never_answered_time_out_and_hold_up_no_other_thread(
    store: Store, tmp_path: Path
) -> None:
    """A control plane that takes a thread's pushes and never answers: each push fails after
    the push timeout and is retried with the backoff, so the silent threads (as many as the
    push slots) do not keep every slot, and another thread's events go out."""
    silent = [f"quiet-{n}" for n in range(PUSHES_AT_ONCE)]
    await new_threads(store, *silent, events=2)
    async with FakeControlPlane(TOKEN) as cp:
        cp.silent_threads.update(silent)
        async with outbox_running(
            store, tmp_path / "state", cp, rng=ShortBackoff(), push_timeout=0.5
        ) as outbox:
            with anyio.fail_after(30):
                await cp.wait_push_requests(PUSHES_AT_ONCE)  # every slot is waiting
            await new_threads(store, "chat-1", events=3)
            with anyio.fail_after(30):
                await cp.wait_pushed("chat-1", 3)
                # and the silent ones are being tried again
                await cp.wait_push_requests(PUSHES_AT_ONCE + 1 + PUSHES_AT_ONCE)
            assert not any(thread in cp.pushed for thread in silent)
            assert not any(thread in outbox.state.parked for thread in silent)
    assert [e["sequence"] for e in cp.pushed["chat-1"]] == [1, 2, 3]


async def test_a_refused_token_on_a_push_ends_the_outbox_with_link_refused(
    store: Store, tmp_path: Path
) -> None:
    """Whichever thread's pusher meets the 401, `run` ends with `LinkRefused` itself (what
    `agentd connect` turns into exit status 1), the other pushers with it."""
    await new_threads(store, "chat-1", "chat-2", "chat-3", events=2)
    async with FakeControlPlane(TOKEN) as cp, aiohttp.ClientSession() as session:
        cp.refuse = True
        outbox = await ThreadEventOutbox.open(store, tmp_path / "state", session, cp.url, TOKEN)
        with anyio.fail_after(30), pytest.raises(LinkRefused, match="refused the token"):
            await outbox.run()
    assert outbox.state.pushed == {} and outbox.state.parked == {}


def test_an_acknowledged_batch_costs_a_journal_line_not_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    for n in range(50):
        state.record_pushed(f"thr_{n}", event_at(3))
    state.save()  # a snapshot of 50 threads
    snapshot = path.read_bytes()
    state.record_pushed("thr_7", event_at(9))
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
        state.record_pushed("thr_1", event_at(sequence))
    assert state.journal_lines < JOURNAL_FOLD_MIN
    assert len(state.journal.read_text().splitlines()) == state.journal_lines
    assert json.loads(path.read_text())["pushed"]["thr_1"] >= JOURNAL_FOLD_MIN
    assert OutboxState.load(path).pushed == {"thr_1": JOURNAL_FOLD_MIN + 1}


def test_a_torn_journal_line_costs_only_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    state.record_pushed("thr_1", event_at(200))
    state.record_pushed("thr_2", event_at(5))
    with open(state.journal, "a") as journal:
        journal.write('{"thread":"thr_1","pu')  # the crash came mid-line
    again = OutboxState.load(path)
    assert again.pushed == {"thr_1": 200, "thr_2": 5}  # that batch is sent again
    again.record_pushed("thr_1", event_at(400))
    assert OutboxState.load(path).pushed == {"thr_1": 400, "thr_2": 5}


def test_a_crash_between_the_snapshot_and_emptying_the_journal_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    state.record_pushed("thr_1", event_at(10))
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
    state = OutboxState.load(path)
    assert state.pushed == {"thr_1": 7}
    assert state.rollouts == {}  # a cursor without its event's rollout id is trusted as it is


def test_a_reset_in_the_journal_drops_the_thread_and_a_later_line_counts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "link-outbox.json"
    state = OutboxState.load(path)
    state.record_pushed("thr_1", event_at(10, "rol_a"))
    state.record_parked("thr_2", {"from": 1, "rollout": "rol_b", "status": 400, "detail": "x"})
    state.save()
    state.record_reset(["thr_1", "thr_2"])
    state.record_pushed("thr_1", event_at(2, "rol_c"))  # made again: a lower cursor counts
    again = OutboxState.load(path)
    assert (again.pushed, again.rollouts, again.parked) == ({"thr_1": 2}, {"thr_1": "rol_c"}, {})
    again.save()
    assert OutboxState.load(path).pushed == {"thr_1": 2}
