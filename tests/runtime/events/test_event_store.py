"""The EventLog needs only the `EventStore` protocol: append one event, read after an id."""

from __future__ import annotations

from runtime.events import Event, EventLog, EventStore


class ListStore:
    """The smallest `EventStore`: one run's events in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.reads: list[tuple[int, int | None]] = []

    async def append_event(self, event: Event) -> None:
        self.events.append(event)

    async def events_after(
        self, run_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        self.reads.append((after, limit))
        found = [e for e in self.events if e.run_id == run_id and e.id > after]
        return found if limit is None else found[:limit]


async def test_events_trimmed_from_memory_are_read_back_from_the_store() -> None:
    store = ListStore()
    checked: EventStore = store  # the protocol is all the log is given
    log = EventLog("run_1", "thr_1", checked, memory_limit=4)
    for n in range(10):
        await log.emit("input", text=f"line {n}")
    await log.close()
    assert [e.id for e in store.events] == list(range(1, 11))
    assert log.events[0].id > 1  # the oldest are no longer in memory
    seen = [event async for event in log.subscribe(after=2)]
    assert [e.id for e in seen] == list(range(3, 11))
    assert store.reads == [(2, log.events[0].id - 1 - 2)]  # only the gap came from the store
    pages = [page async for page in EventLog.replay_pages(store, "run_1", after=8)]
    assert pages == [store.events[8:]]
