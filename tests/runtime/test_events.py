"""The event log: ids, storage before fan-out, subscribers (replay, live, drop), coalescing,
redaction."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.events.log
from runtime.events import (
    EVENT_TYPES,
    PAYLOAD_MODELS,
    Event,
    EventLog,
    EventLogClosed,
    EventPayloadError,
    Redactor,
    SubscriberDropped,
)
from runtime.store import Store, StoreFull

RUN = "run_test"
THREAD = "thr_test"


async def read_all(subscription: Any, limit: float = 10) -> list[Event]:
    with anyio.fail_after(limit):
        return [event async for event in subscription]


def ids(events: list[Event]) -> list[int]:
    return [e.id for e in events]


def text_of(events: list[Event], type: str = "text") -> str:
    return "".join(e.payload["content"] for e in events if e.type == type)


# -- payloads and the wire form ------------------------------------------------------------


def test_every_documented_type_has_a_payload_model() -> None:
    assert set(EVENT_TYPES) == {
        "run_started",
        "status",
        "thinking",
        "text",
        "tool_call",
        "tool_output",
        "tool_result",
        "file_edit",
        "dev_url",
        "port_closed",
        "input",
        "usage",
        "error",
        "compaction_started",
        "compaction_completed",
        "compaction_failed",
        "complete",
    }
    assert set(PAYLOAD_MODELS) == set(EVENT_TYPES)
    schema = PAYLOAD_MODELS["tool_result"].model_json_schema()
    assert {"callId", "tool", "output", "isError", "durationMs"} <= set(schema["properties"])


async def test_payloads_are_validated_and_normalised_to_wire_names() -> None:
    log = EventLog(RUN, THREAD, None)
    event = await log.emit("tool_result", callId="c1", tool="grep", output="x", isError=True)
    assert event.payload == {
        "callId": "c1",
        "tool": "grep",
        "output": "x",
        "isError": True,
        "durationMs": 0,
    }
    with pytest.raises(EventPayloadError, match="unknown event type"):
        await log.emit("explosion", size=3)
    with pytest.raises(EventPayloadError, match="file_edit"):
        await log.emit("file_edit", path="a", action="shred")
    with pytest.raises(EventPayloadError, match="envelope"):
        await log.emit("text", content="x", id=99)
    with pytest.raises(EventPayloadError, match="threadId"):
        await log.emit("run_started", agent="a", version=1, threadId="thr_other")
    assert log.last_id == 1  # refused events take no id


async def test_wire_form_is_flat_and_round_trips() -> None:
    log = EventLog(RUN, THREAD, None)
    started = await log.emit("run_started", agent="helper", version=2, model="m")
    complete = await log.emit(
        "complete", status="completed", output="hi", usage={"inputTokens": 3}, iterations=1
    )
    wire = started.to_dict()
    assert wire == {
        "id": 1,
        "runId": RUN,
        "threadId": THREAD,
        "type": "run_started",
        "ts": started.ts,
        "agent": "helper",
        "version": 2,
        "model": "m",
    }
    assert started.payload["threadId"] == THREAD
    assert started.ts.endswith("Z") and len(started.ts) == len("2025-01-01T00:00:00.000Z")
    assert complete.to_dict()["usage"] == {
        "inputTokens": 3,
        "outputTokens": 0,
        "cachedInputTokens": 0,
        "reasoningTokens": 0,
    }
    for event in (started, complete):
        assert Event.from_dict(event.to_dict()) == event
    assert Event.from_dict(json.loads(complete.to_json())) == complete


# -- ids, storage, concurrency -------------------------------------------------------------


async def test_ids_count_from_one_and_continue_from_start_id(store: Store) -> None:
    log = EventLog(RUN, THREAD, store)
    for i in range(3):
        assert (await log.emit("text", content=str(i))).id == i + 1
    assert log.last_id == 3 and ids(log.events) == [1, 2, 3]
    later = EventLog(RUN, THREAD, store, start_id=await store.last_event_id(RUN))
    assert (await later.emit("error", message="gone", code="interrupted")).id == 4
    assert ids(await store.events_after(RUN)) == [1, 2, 3, 4]
    assert ids(await store.events_after(RUN, after=2)) == [3, 4]


async def test_an_event_is_stored_before_any_subscriber_sees_it(store: Store) -> None:
    log = EventLog(RUN, THREAD, store)
    checked: list[int] = []

    async def follow() -> None:
        async for event in log.subscribe():
            stored = await store.events_after(RUN, event.id - 1, limit=1)
            assert stored == [event]
            checked.append(event.id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        for i in range(20):
            await log.emit("tool_output", callId="c", chunk=f"line {i}\n")
        await log.close()
    assert checked == list(range(1, 21))


async def test_concurrent_emitters_get_increasing_ids_stored_in_order(store: Store) -> None:
    log = EventLog(RUN, THREAD, store)

    async def emitter(n: int) -> None:
        for i in range(30):
            await log.emit("tool_output", callId=f"c{n}", chunk=str(i))

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(emitter, n)
    stored = await store.events_after(RUN)
    assert ids(stored) == list(range(1, 241)) and stored == log.events
    for n in range(8):
        mine = [e.payload["chunk"] for e in stored if e.payload["callId"] == f"c{n}"]
        assert mine == [str(i) for i in range(30)]


class GatedStore(Store):
    """A real store whose event writes wait for `gate` (to cancel an emit mid-write)."""

    gate: anyio.Event
    writing: anyio.Event

    async def append_event(self, event: Event) -> None:
        self.writing.set()
        await self.gate.wait()
        await super().append_event(event)


async def test_a_cancelled_emit_still_lands_everywhere_or_nowhere(tmp_path: Path) -> None:
    store = await GatedStore.open(tmp_path / "state")
    try:
        store.gate, store.writing = anyio.Event(), anyio.Event()
        log = EventLog(RUN, THREAD, store)
        subscription = log.subscribe()
        async with anyio.create_task_group() as tg:

            async def emit() -> None:
                await log.emit("input", text="hello")

            tg.start_soon(emit)
            await store.writing.wait()
            tg.cancel_scope.cancel()
            store.gate.set()
        store.gate.set()
        assert ids(log.events) == [1]
        assert ids(await store.events_after(RUN)) == [1]
        await log.emit("input", text="again")
        await log.close()
        assert ids(await read_all(subscription)) == [1, 2]
    finally:
        await store.close()


# -- subscribers ---------------------------------------------------------------------------


async def test_subscribers_from_any_id_get_exactly_the_missing_events(store: Store) -> None:
    log = EventLog(RUN, THREAD, store)
    for i in range(5):
        await log.emit("text", content=str(i))
    from_start, from_3, from_future = log.subscribe(), log.subscribe(after=3), log.subscribe(7)
    for i in range(5, 10):
        await log.emit("text", content=str(i))
    await log.close()
    assert ids(await read_all(from_start)) == list(range(1, 11))
    assert ids(await read_all(from_3)) == list(range(4, 11))
    assert ids(await read_all(from_future)) == [8, 9, 10]
    # After the run: replay, then the iteration ends at once.
    assert ids(await read_all(log.subscribe(after=8))) == [9, 10]
    assert await read_all(log.subscribe(after=10)) == []
    with pytest.raises(EventLogClosed):
        await log.emit("text", content="late")


@pytest.mark.parametrize("memory_limit", [10_000, 16], ids=["in-memory", "store-backfill"])
async def test_subscribers_joining_while_events_are_emitted_miss_and_repeat_nothing(
    store: Store, memory_limit: int
) -> None:
    """Subscriptions taken at random moments (racing with two emitting tasks) and from random
    ids each see exactly ids after..last, in order — also when the early part must be read
    from the store while memory is being trimmed."""
    rng = random.Random(5)
    log = EventLog(RUN, THREAD, store, memory_limit=memory_limit)
    total = 300
    results: list[tuple[int, list[int]]] = []

    async def emitter(name: str, count: int) -> None:
        for i in range(count):
            await log.emit("tool_output", callId=name, chunk=str(i))
            if rng.random() < 0.3:
                await anyio.sleep(0)

    async def joiner() -> None:
        async with anyio.create_task_group() as readers:
            while log.last_id < total:
                after = rng.randint(0, log.last_id + 2)
                subscription = log.subscribe(after=after)

                async def read(after: int = after, subscription: Any = subscription) -> None:
                    results.append((after, ids(await read_all(subscription))))

                readers.start_soon(read)
                target = log.last_id + rng.randint(0, 6)
                while log.last_id < min(target, total):
                    await anyio.sleep(0)
                if log.last_id >= total:
                    break

    async with anyio.create_task_group() as tg:
        tg.start_soon(joiner)
        async with anyio.create_task_group() as emitters:
            emitters.start_soon(emitter, "a", total // 2)
            emitters.start_soon(emitter, "b", total // 2)
        await log.close()
    assert len(results) > 20
    for after, seen in results:
        assert seen == list(range(after + 1, total + 1)), f"subscribed after {after}"


async def test_a_subscriber_resuming_from_the_store_after_a_restart(store: Store) -> None:
    first = EventLog(RUN, THREAD, store)
    for i in range(4):
        await first.emit("text", content=str(i))
    # A new log for the same run (a new daemon), knowing only the store.
    second = EventLog(RUN, THREAD, store, start_id=await store.last_event_id(RUN))
    from_two = second.subscribe(after=2)
    await second.emit("error", message="daemon restarted", code="interrupted")
    await second.emit("complete", status="interrupted")
    await second.close()
    assert ids(await read_all(from_two)) == [3, 4, 5, 6]
    assert [e.type for e in await read_all(second.subscribe())][-2:] == ["error", "complete"]


async def test_memory_keeps_a_bounded_tail_and_the_store_fills_in(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, memory_limit=10)
    early = log.subscribe()
    for i in range(60):
        await log.emit("tool_output", callId="c", chunk=str(i))
    assert len(log.events) <= 13 and log.events[-1].id == 60
    late = log.subscribe(after=5)
    await log.close()
    assert ids(await read_all(late)) == list(range(6, 61))
    assert ids(await read_all(early)) == list(range(1, 61))


async def test_the_store_gap_is_read_a_page_at_a_time_in_order(
    store: Store, monkeypatch: pytest.MonkeyPatch, event_read_limits: list[int | None]
) -> None:
    """A subscriber from far behind the memory tail reads the store a page at a time (never
    the whole gap at once), and still gets every event once, in order, before memory's and
    the live ones."""
    monkeypatch.setattr(runtime.events.log, "STORE_PAGE", 7)
    log = EventLog(RUN, THREAD, store, memory_limit=10)
    for i in range(60):
        await log.emit("tool_output", callId="c", chunk=str(i))
    behind = log.subscribe(after=3)
    with anyio.fail_after(10):
        first = await behind.next_batch(100)
        assert ids(first) == list(range(4, 11))  # one page: the rest is not read yet
        await log.emit("tool_output", callId="c", chunk="live")
        await log.close()
        assert ids(first + await read_all(behind)) == list(range(4, 62))
    assert event_read_limits
    assert all(limit is not None and limit <= 7 for limit in event_read_limits)


async def test_replay_pages_yields_a_run_a_page_at_a_time(store: Store) -> None:
    log = EventLog(RUN, THREAD, store)
    for i in range(21):
        await log.emit("tool_output", callId="c", chunk=str(i))
    await log.close()
    pages = [ids(page) async for page in EventLog.replay_pages(store, RUN, after=0, page=7)]
    assert pages == [list(range(1, 8)), list(range(8, 15)), list(range(15, 22))]
    pages = [ids(page) async for page in EventLog.replay_pages(store, RUN, after=5, page=7)]
    assert [len(page) for page in pages] == [7, 7, 2]
    assert [i for page in pages for i in page] == list(range(6, 22))
    assert [page async for page in EventLog.replay_pages(store, RUN, after=21)] == []


async def test_a_subscriber_that_falls_behind_is_dropped_and_can_resume(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, queue_size=5)
    reader_seen: list[int] = []
    laggard = log.subscribe()
    await log.emit("tool_output", callId="c", chunk="0")
    first = await anext(laggard)  # reads one, then stops reading

    async def reader() -> None:
        async for event in log.subscribe():
            reader_seen.append(event.id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        for i in range(1, 30):  # never blocks on the laggard's full queue
            await log.emit("tool_output", callId="c", chunk=str(i))
        await log.close()
    assert reader_seen == list(range(1, 31))
    assert laggard.dropped and log.subscriber_count == 0
    with pytest.raises(SubscriberDropped) as info:
        async for _ in laggard:
            pass
    assert info.value.last_id == first.id == 1
    assert ids(await read_all(log.subscribe(after=info.value.last_id))) == list(range(2, 31))


async def test_a_batch_is_everything_ready_at_once_in_order_up_to_its_limit(
    store: Store,
) -> None:
    """A reader that fell behind gets the waiting events in one batch: those the store alone
    has, those in memory, then the live queue, at most `limit` at a time, each once."""
    log = EventLog(RUN, THREAD, store, memory_limit=4)
    for i in range(10):  # memory keeps the last few; ids 1.. are in the store only
        await log.emit("tool_output", callId="c", chunk=str(i))
    subscription = log.subscribe(after=2)
    for i in range(10, 13):  # queued live while the reader is away
        await log.emit("tool_output", callId="c", chunk=str(i))
    with anyio.fail_after(10):
        assert ids(await subscription.next_batch(8)) == list(range(3, 11))
        assert ids(await subscription.next_batch(100)) == [11, 12, 13]
        assert subscription.last_id == 13

        async def emit_later() -> None:
            await log.emit("tool_output", callId="c", chunk="late")
            await log.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(emit_later)
            assert ids(await subscription.next_batch(100)) == [14]  # waits for the next one
        assert await subscription.next_batch(100) == []  # closed and read
    assert log.subscriber_count == 0
    with pytest.raises(ValueError):
        await log.subscribe().next_batch(0)


async def test_batches_end_with_a_drop_after_what_was_read_and_close_the_subscription(
    store: Store,
) -> None:
    log = EventLog(RUN, THREAD, store, queue_size=3)
    laggard = log.subscribe()
    batches = laggard.batches(limit=2)
    await log.emit("tool_output", callId="c", chunk="0")
    await log.emit("tool_output", callId="c", chunk="1")
    with anyio.fail_after(10):
        assert ids(await anext(batches)) == [1, 2]
        for i in range(2, 9):  # overflows the laggard's queue of 3
            await log.emit("tool_output", callId="c", chunk=str(i))
        with pytest.raises(SubscriberDropped) as info:
            await anext(batches)
    assert info.value.last_id == 2 and log.subscriber_count == 0
    reader = log.subscribe(after=2).batches()
    with anyio.fail_after(10):
        assert ids(await anext(reader)) == list(range(3, 10))
        await reader.aclose()  # closing the iterator unsubscribes
    assert log.subscriber_count == 0


async def test_two_hundred_subscribers_never_hold_up_emission(store: Store) -> None:
    """Emitting never waits for subscribers: all events go out while no subscriber has read
    anything; the readers then get everything and one that never reads is dropped."""
    log = EventLog(RUN, THREAD, store, queue_size=100)
    subscriptions = [log.subscribe() for _ in range(200)]
    idle = subscriptions.pop()
    for i in range(100):
        await log.emit("tool_output", callId="c", chunk=str(i))
    assert all(not s.dropped for s in subscriptions)
    results: dict[int, list[int]] = {}

    async def read(n: int) -> None:
        results[n] = ids(await read_all(subscriptions[n]))

    async with anyio.create_task_group() as tg:
        for n in range(len(subscriptions)):
            tg.start_soon(read, n)
        for i in range(100, 150):
            await log.emit("tool_output", callId="c", chunk=str(i))
        await log.close()
    assert idle.dropped
    assert len(results) == 199
    assert all(seen == list(range(1, 151)) for seen in results.values())


async def test_abandoned_subscriptions_are_forgotten(store: Store) -> None:
    import gc

    log = EventLog(RUN, THREAD, store)
    subscription = log.subscribe()
    assert log.subscriber_count == 1
    del subscription
    gc.collect()
    assert log.subscriber_count == 0
    kept = log.subscribe()
    await kept.aclose()
    assert log.subscriber_count == 0


# -- coalescing ----------------------------------------------------------------------------


async def test_deltas_are_coalesced_without_losing_or_reordering_text(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, coalesce_window=3600)  # only explicit flushes
    await log.emit_delta("thinking", "Let me ")
    await log.emit_delta("thinking", "think.")
    for word in ["Hello", ", ", "wor", "ld", "!"]:
        await log.emit_delta("text", word)
    await log.emit("tool_call", callId="c1", tool="grep", input={"pattern": "x"})
    await log.emit_delta("text", "Found ")
    await log.emit_delta("text", "it.")
    await log.close()
    events = await store.events_after(RUN)
    assert [(e.type, e.payload.get("content")) for e in events] == [
        ("thinking", "Let me "),  # the first delta goes out at once
        ("thinking", "think."),  # switching type flushes
        ("text", "Hello, world!"),
        ("tool_call", None),
        ("text", "Found it."),  # close flushes
    ]


async def test_pending_deltas_are_flushed_by_the_timer(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, coalesce_window=0.01)
    subscription = log.subscribe()
    await log.emit_delta("text", "a")
    await log.emit_delta("text", "b")
    await log.emit_delta("text", "c")
    received = ""
    with anyio.fail_after(5):  # no further emit: only the timer can deliver "bc"
        async for event in subscription:
            received += event.payload["content"]
            if received == "abc":
                break
    await log.close()
    assert text_of(await store.events_after(RUN)) == "abc"


async def test_concurrent_deltas_and_events_keep_every_character(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, coalesce_window=0.001)
    chunks = [f"<{i}>" for i in range(400)]

    async def stream() -> None:
        for chunk in chunks:
            await log.emit_delta("text", chunk)
            await anyio.sleep(0)

    async def other() -> None:
        for i in range(50):
            await log.emit("input", text=f"input {i}")
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(stream)
        tg.start_soon(other)
    await log.close()
    events = await store.events_after(RUN)
    assert text_of(events) == "".join(chunks)
    assert [e.payload["text"] for e in events if e.type == "input"] == [
        f"input {i}" for i in range(50)
    ]
    assert ids(events) == list(range(1, len(events) + 1))


# -- redaction -----------------------------------------------------------------------------


def test_redactor_replaces_every_secret_and_ignores_short_values() -> None:
    redactor = Redactor(["sk-live-abc123", "", "ab", 'pa"ss\\word'])
    assert redactor.redact("key=sk-live-abc123; again sk-live-abc123") == (
        "key=[REDACTED]; again [REDACTED]"
    )
    assert redactor.redact("ab stays") == "ab stays"
    # The JSON-escaped form of a secret is a secret too.
    assert redactor.redact('{"p": "pa\\"ss\\\\word"}') == '{"p": "[REDACTED]"}'
    nested = {"a": ["x sk-live-abc123", ("sk-live-abc123",)], "n": 3, "sk-live-abc123": None}
    assert redactor.redact_obj(nested) == {
        "a": ["x [REDACTED]", ("[REDACTED]",)],
        "n": 3,
        "[REDACTED]": None,
    }
    assert not Redactor([]) and Redactor([]).redact_obj(nested) is nested
    accented = Redactor(["clé-secrète"])
    assert accented.redact(json.dumps({"k": "clé-secrète"})) == '{"k": "[REDACTED]"}'


def test_longer_secret_wins_over_its_prefix() -> None:
    redactor = Redactor(["token", "token-extended"])
    assert redactor.redact("a token-extended b token c") == "a [REDACTED] b [REDACTED] c"
    stream = redactor.stream()
    out = stream.feed("a tok") + stream.feed("en-ext") + stream.feed("ended b") + stream.flush()
    assert out == "a [REDACTED] b"


def test_stream_redactor_holds_back_only_a_possible_secret_prefix() -> None:
    stream = Redactor(["SECRET-VALUE"]).stream()
    assert stream.feed("plain text ") == "plain text "
    assert stream.feed("then SEC") == "then "
    assert stream.pending == "SEC"
    assert stream.feed("RET-VAL") == ""
    assert stream.feed("UE and more") == "[REDACTED] and more"
    assert stream.feed("SECRET-") == ""
    assert stream.flush() == "SECRET-"  # the end: a prefix alone is not a secret


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(st.text(alphabet="abc", min_size=4, max_size=7), min_size=1, max_size=3),
    text=st.text(alphabet="abcx", max_size=80),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_stream_redaction_equals_redacting_the_whole_text(
    secrets: list[str], text: str, cuts: list[int]
) -> None:
    redactor = Redactor(secrets)
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    stream = redactor.stream()
    out = "".join(stream.feed(text[a:b]) for a, b in itertools.pairwise(points))
    assert out + stream.flush() == redactor.redact(text)


async def test_the_log_redacts_payloads_and_secrets_split_across_deltas(store: Store) -> None:
    secret = "sk-ant-0123456789"
    log = EventLog(RUN, THREAD, store, redactor=Redactor([secret]), coalesce_window=0)
    await log.emit("tool_call", callId="c1", tool="exec_command", input={"cmd": f"echo {secret}"})
    await log.emit("tool_result", callId="c1", tool="exec_command", output=f"{secret}\n")
    for piece in ["the key is sk-", "ant-0123", "456789", " ok"]:
        await log.emit_delta("text", piece)
    await log.emit_delta("thinking", "sk-ant-01")
    await log.emit("input", text="(user typing)")  # not the end of the thinking block
    await log.emit_delta("thinking", "23456789")
    await log.emit("usage", inputTokens=1)
    await log.close()
    stored = await store.events_after(RUN)
    assert secret not in str([e.to_dict() for e in stored])
    assert secret not in str([e.to_dict() for e in log.events])
    assert stored[0].payload["input"] == {"cmd": "echo [REDACTED]"}
    assert text_of(stored) == "the key is [REDACTED] ok"
    assert text_of(stored, "thinking") == "[REDACTED]"


async def test_a_failed_store_write_costs_no_id_and_no_text(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, coalesce_window=3600)
    subscription = log.subscribe()
    await log.emit("input", text="first")
    await log.emit_delta("text", "kept ")

    def disk_full(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")

    await store._write(disk_full)
    await log.emit_delta("text", "and " + "y" * 20_000)  # pending: no write yet
    with pytest.raises(StoreFull):
        await log.emit("input", text="z" * 20_000)  # flushing the text fails first
    assert log.last_id == 2 and ids(log.events) == [1, 2]

    await store._write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    await log.emit("input", text="after")
    await log.close()
    events = await read_all(subscription)
    assert ids(events) == [1, 2, 3, 4] and events == await store.events_after(RUN)
    assert text_of(events) == "kept and " + "y" * 20_000
    assert [e.type for e in events] == ["input", "text", "text", "input"]


async def test_closing_from_a_cancelled_task_still_ends_subscribers(store: Store) -> None:
    log = EventLog(RUN, THREAD, store, coalesce_window=3600)
    subscription = log.subscribe()
    await log.emit_delta("text", "a")
    await log.emit_delta("text", "b")  # pending
    with anyio.CancelScope() as scope:
        scope.cancel()
        await log.close()
    assert log.closed
    assert text_of(await read_all(subscription)) == "ab"
