"""The per-run `EventLog`: ids, redaction, storage before fan-out, and subscribers.

Every event a run produces goes through its `EventLog`, which gives it the next id (1, 2,
3, … per run), redacts secrets from its payload, appends it to its `EventStore`, and only
then hands it to subscribers. A subscriber reads from any id: stored events first, then live
ones, and its iteration ends when the log is closed. Subscribers never slow the run: each
has a bounded queue, and one that falls too far behind is dropped (`SubscriberDropped`) and
can subscribe again from the last id it saw.

Text and thinking deltas (`emit_delta`) are coalesced: the first delta after a quiet spell
goes out at once, the rest of a burst at most every `coalesce_window` seconds, and any
pending text is written before any other event, so no character is lost or reordered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal, Protocol

import anyio

from runtime.events.model import Event, EventPayloadError, validate_payload
from runtime.events.redaction import Redactor, StreamRedactor
from runtime.ids import utc_now
from tools.utf8 import printable_value

log = logging.getLogger("agentd.events")

COALESCE_WINDOW = 0.05
# How many stored events a reader takes from the store per query: a client replaying a long
# run (a finished one, or the part a live one no longer keeps in memory) holds a page of
# decoded events at a time, not the whole run (100 clients on a 50k-event run: ~5M).
STORE_PAGE = 1024


class EventStore(Protocol):
    """Where an `EventLog` keeps its events (`runtime.store.Store` is one): append one, and
    read a run's events after an id, in id order."""

    async def append_event(self, event: Event) -> None: ...

    async def events_after(
        self, run_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]: ...


class SubscriberDropped(Exception):
    """The subscriber fell more than `queue_size` events behind and was cut off. Subscribe
    again with `after=last_id` to continue without gaps."""

    def __init__(self, run_id: str, last_id: int) -> None:
        super().__init__(
            f"subscriber of run {run_id} fell too far behind after event {last_id}; "
            f"subscribe again from {last_id}"
        )
        self.run_id = run_id
        self.last_id = last_id


class EventLogClosed(RuntimeError):
    """An emit after `close()`."""


# Events after which a streamed text/thinking block is over: text held back by the stream
# redactor (a possible secret prefix) is released when one of these is emitted.
_BLOCK_BOUNDARIES = frozenset({"run_started", "tool_call", "usage", "error", "complete"})


class Subscription:
    """An iterator over a run's events after some id; see `EventLog.subscribe`.

    `last_id` is the id of the last event it returned (resubscribe from there)."""

    def __init__(
        self,
        run_id: str,
        after: int,
        *,
        queue_size: int,
        backlog: list[Event],
        store_gap: tuple[int, int] | None,
        store: EventStore | None,
        ended: bool,
        on_close: Callable[[Subscription], None],
    ) -> None:
        """`backlog`: the events after `after` already in memory; `store_gap`: the range of
        ids `(after, upto]` before them that only `store` has; `on_close` unregisters it
        from its log."""
        self.run_id = run_id
        self.last_id = after
        self._queue: deque[Event] = deque()
        self._limit = queue_size
        self._waiter: asyncio.Future[None] | None = None
        self._dropped = False
        self._ended = ended
        self._backlog: deque[Event] = deque(backlog)
        # The part of the store gap read so far and not yet returned (a page at a time).
        self._stored: deque[Event] = deque()
        self._store_gap = store_gap
        self._store = store
        self._on_close = on_close

    @property
    def dropped(self) -> bool:
        return self._dropped

    def offer(self, event: Event) -> None:
        """A new event from the log (never waits: past `queue_size` unread events the
        subscription is dropped instead)."""
        if self._dropped or self._ended:
            return
        if len(self._queue) >= self._limit:
            self._dropped = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wake()

    def end(self) -> None:
        """The log is closed: iteration ends once the queued events are read."""
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            event = await self._next_candidate()
            if event is None:
                self.aclose_now()
                raise StopAsyncIteration
            if event.id > self.last_id:
                self.last_id = event.id
                return event

    async def next_batch(self, limit: int) -> list[Event]:
        """The next events in order, at most `limit` of them: waits for the first, then takes
        those already waiting behind it without waiting again, so a reader that fell behind
        catches up in one step (the SSE stream writes such a batch at once). `[]` once the log
        is closed and everything is read; raises `SubscriberDropped` as iteration does."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        batch: list[Event] = []
        while not batch:
            event = await self._next_candidate()
            if event is None:
                self.aclose_now()
                return batch
            while event is not None:
                if event.id > self.last_id:
                    self.last_id = event.id
                    batch.append(event)
                    if len(batch) == limit:
                        break
                event = self._take_ready()
        return batch

    async def batches(self, limit: int = 256) -> AsyncGenerator[list[Event], None]:
        """`next_batch` until the log is closed and read; the subscription is closed when
        this iterator is."""
        try:
            while batch := await self.next_batch(limit):
                yield batch
        finally:
            self.aclose_now()

    def _take_ready(self) -> Event | None:
        """The next event if one is waiting without a read: none while the store gap has
        pages left to read (`_next_candidate` reads them, in order, before anything else)."""
        if self._stored:
            return self._stored.popleft()
        if self._store_gap is not None:
            return None
        if self._backlog:
            return self._backlog.popleft()
        if self._queue:
            return self._queue.popleft()
        return None

    async def _next_candidate(self) -> Event | None:
        if not self._stored and self._store_gap is not None:
            await self._read_store_page()
        if self._stored:
            return self._stored.popleft()
        if self._backlog:
            return self._backlog.popleft()
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._dropped:
                self.aclose_now()
                raise SubscriberDropped(self.run_id, self.last_id)
            if self._ended:
                return None
            # A bare future rather than an anyio.Event: this is the hot path of fan-out.
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def _read_store_page(self) -> None:
        """Read the next page (at most STORE_PAGE) of the ids `(after, upto]` only the store
        has; the gap shrinks only once the page is read (a cancelled read loses nothing)."""
        assert self._store_gap is not None
        after, upto = self._store_gap
        if self._store is None:
            self._store_gap = None
            return
        want = min(STORE_PAGE, upto - after)
        page = await self._store.events_after(self.run_id, after, limit=want)
        self._stored.extend(page)
        # Ids are consecutive: a short page means the store has no more of the gap.
        self._store_gap = (page[-1].id, upto) if len(page) == want and page[-1].id < upto else None

    def aclose_now(self) -> None:
        self._on_close(self)
        self._ended = True
        self._queue.clear()

    async def aclose(self) -> None:
        self.aclose_now()


class EventLog:
    """The events of one run: ids, redaction, storage before fan-out, and subscribers.

    `emit` may be called from several tasks at once; ids are assigned and stored in the
    order the calls take the log's lock. An emit never waits on a subscriber."""

    def __init__(
        self,
        run_id: str,
        thread_id: str | None,
        store: EventStore | None,
        *,
        redactor: Redactor | None = None,
        start_id: int = 0,
        queue_size: int = 1000,
        coalesce_window: float = COALESCE_WINDOW,
        memory_limit: int | None = 10_000,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.run_id = run_id
        self.thread_id = thread_id
        self.queue_size = queue_size
        self.coalesce_window = coalesce_window
        self._store = store
        self._redactor = redactor if redactor else None
        # Without a store there is nowhere to replay trimmed events from: keep them all.
        self._memory_limit = memory_limit if store is not None else None
        self._events: list[Event] = []
        self._memory_floor = start_id  # ids <= this are not in memory (store only)
        self._last_id = start_id
        self._closed = False
        self._lock = anyio.Lock()
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        # Told of every event once it is stored, before any await (the run's thread recorder
        # derives live thread events from it); must not block.
        self.observer: Callable[[Event], None] | None = None
        # Delta coalescing state.
        self._pending_type: str | None = None
        self._pending: list[str] = []
        self._streams: dict[str, StreamRedactor] = {}
        self._last_delta_flush = float("-inf")
        self._timer: asyncio.Task[None] | None = None
        self._background_error: Exception | None = None

    # -- reading -----------------------------------------------------------------------

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def events(self) -> list[Event]:
        """The events kept in memory (all of them unless `memory_limit` trimmed the oldest,
        which the store still has). Do not mutate."""
        return self._events

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, after: int = 0) -> Subscription:
        """Iterate over the events with id > `after`: stored ones, then live ones, ending
        after `close()`. Raises `SubscriberDropped` from the iteration if it falls more than
        `queue_size` events behind.

        Taking the in-memory snapshot and registering for live events happen in one step
        (no await in between), so no event is missed or seen twice."""
        after = max(0, after)
        floor = self._memory_floor
        subscription = Subscription(
            self.run_id,
            after,
            queue_size=self.queue_size,
            backlog=self._memory_after(after),
            # Ids between `after` and the first one kept in memory must come from the store.
            store_gap=(after, floor) if after < floor else None,
            store=self._store,
            ended=self._closed,
            on_close=self._subscribers.discard,
        )
        if not self._closed:
            self._subscribers.add(subscription)
        return subscription

    @staticmethod
    async def replay_pages(
        store: EventStore, run_id: str, after: int = 0, page: int = STORE_PAGE
    ) -> AsyncGenerator[list[Event], None]:
        """The stored events of a run with id > `after` (for runs no longer in memory), a page
        (at most `page` events) at a time, so a reader of a long run holds one page rather
        than the whole run."""
        while True:
            events = await store.events_after(run_id, after, limit=page)
            if events:
                yield events
            if len(events) < page:
                return
            after = events[-1].id

    def _memory_after(self, after: int) -> list[Event]:
        start = max(0, after - self._memory_floor)
        return self._events[start:]

    # -- writing -----------------------------------------------------------------------

    def _raise_background_error(self) -> None:
        """Raise (once) what failed a background write since the last emit."""
        error, self._background_error = self._background_error, None
        if error is not None:
            raise error

    async def emit(self, type: str, **payload: Any) -> Event:
        """Append one event: next id, redact, store (awaited), then fan out. Raises, once,
        what failed writing coalesced deltas in the background since the last emit."""
        async with self._lock:
            self._raise_background_error()
            await self._flush_pending(release_held=type in _BLOCK_BOUNDARIES)
            return await self._append(type, payload)

    async def emit_delta(self, type: Literal["text", "thinking"], content: str) -> None:
        """A streamed text/thinking fragment; coalesced with its neighbours."""
        if type not in ("text", "thinking"):
            raise EventPayloadError(f"emit_delta takes text or thinking, not {type!r}")
        if not content:
            return
        async with self._lock:
            if self._closed:
                raise EventLogClosed(f"the event log of run {self.run_id} is closed")
            self._raise_background_error()
            if self._pending_type is not None and self._pending_type != type:
                await self._flush_pending(release_held=True)
            if self._redactor is not None:
                stream = self._streams.get(type)
                if stream is None:
                    stream = self._streams[type] = self._redactor.stream()
                content = stream.feed(content)
            self._pending_type = type
            if content:
                self._pending.append(content)
            now = time.monotonic()
            if now - self._last_delta_flush >= self.coalesce_window:
                await self._flush_pending(release_held=False)
            elif self._timer is None:
                # A bare asyncio task rather than one in a task group (docs/design.md,
                # Concurrency): a log has no task group of its own (plain coroutines make and
                # use it), the task lives at most `coalesce_window`, and close() cancels and
                # awaits it, so it never outlives the log.
                delay = self._last_delta_flush + self.coalesce_window - now
                self._timer = asyncio.get_running_loop().create_task(self._flush_later(delay))

    async def flush(self) -> None:
        """Write any coalesced text/thinking now (including text held back as a possible
        secret prefix)."""
        async with self._lock:
            await self._flush_pending(release_held=True)

    async def close(self) -> None:
        """The run is over: write pending deltas, end every subscription once it has read
        everything. Idempotent. Shielded: a cancelled caller still ends its subscribers, and
        they end even if writing the last deltas fails (that error is raised)."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if self._closed:
                    return
                try:
                    await self._flush_pending(release_held=True)
                finally:
                    self._closed = True
                    timer, self._timer = self._timer, None
                    for subscription in list(self._subscribers):
                        subscription.end()
                    self._subscribers.clear()
            if timer is not None and timer is not asyncio.current_task():
                timer.cancel()
                await asyncio.wait([timer])

    async def _flush_later(self, delay: float) -> None:
        await anyio.sleep(max(0.0, delay))
        async with self._lock:
            if self._timer is asyncio.current_task():
                self._timer = None
            if self._closed:
                return
            try:
                await self._flush_pending(release_held=False)
            except Exception as exc:
                # The text stays pending; the next emit or close writes it. The run hears of
                # the failure at its next emit (a state write that failed fails the run).
                log.exception("run %s: writing coalesced deltas failed", self.run_id)
                self._background_error = exc

    async def _flush_pending(self, *, release_held: bool) -> None:
        """Write the pending delta text as one event. Caller holds the lock."""
        type = self._pending_type
        if type is None:
            return
        if release_held:
            stream = self._streams.pop(type, None)
            if stream is not None:
                held = stream.flush()
                if held:
                    self._pending.append(held)
        if self._pending:
            content = "".join(self._pending)
            await self._append(type, {"content": content})
            self._pending.clear()
            self._last_delta_flush = time.monotonic()
        if release_held:
            self._pending_type = None

    async def _append(self, type: str, payload: dict[str, Any]) -> Event:
        """Caller holds the lock."""
        if self._closed:
            raise EventLogClosed(f"the event log of run {self.run_id} is closed")
        if type == "run_started":
            # The payload repeats the thread id (docs/design.md, Events); it must match the
            # envelope's.
            payload = {"threadId": self.thread_id, **payload}
            if payload["threadId"] != self.thread_id:
                raise EventPayloadError(
                    f"run_started threadId {payload['threadId']!r} differs from the log's "
                    f"{self.thread_id!r}"
                )
        # printable: a file name that is not UTF-8 (a file_edit path, say) must not make the
        # event impossible to store or stream, which would end the run
        body = printable_value(validate_payload(type, payload))
        if self._redactor is not None:
            body = self._redactor.redact_obj(body)
        event = Event(
            id=self._last_id + 1,
            run_id=self.run_id,
            thread_id=self.thread_id,
            type=type,
            ts=utc_now(),
            payload=body,
        )
        # Once the store has the event, memory and subscribers must get it too, even if
        # the emitting task is being cancelled: otherwise live and replayed streams differ.
        with anyio.CancelScope(shield=True):
            if self._store is not None:
                await self._store.append_event(event)
            self._last_id = event.id
            self._events.append(event)
            self._trim_memory()
            for subscription in self._subscribers:
                subscription.offer(event)
            if self.observer is not None:
                try:
                    self.observer(event)
                except Exception:
                    log.exception("run %s: the event observer failed", self.run_id)
        return event

    def _trim_memory(self) -> None:
        limit = self._memory_limit
        if limit is None or len(self._events) <= limit + limit // 4:
            return
        drop = len(self._events) - limit
        self._memory_floor = self._events[drop - 1].id
        del self._events[:drop]
