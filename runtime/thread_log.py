"""The thread event log: numbering, storing and fanning out a thread's events.

`ThreadEventLog.append` gives persisted events the thread's next sequences (1, 2, 3, … across
all of the thread's runs, no gaps), appends them to the rollout file in the workspace, stores
them, and only then offers them to subscribers; `publish` offers a live-only event to the
subscribers at once and stores nothing.

`ThreadEventLog.subscribe(after)` is the one way to follow a thread, for a WebSocket client as
for anything that forwards persisted events elsewhere (a push to a control plane from a
durable outbox keeps its cursor and calls `subscribe(after=cursor, live=False)`, or pages with
`events_after`): stored events after `after` first, then every event as it is appended. A
subscriber never slows a run: its queue is bounded (events and bytes); one that falls behind
is dropped (`ThreadSubscriberDropped`) and can subscribe again from its `last_sequence`
without losing anything.

`ThreadEventHub` owns the logs of one daemon (one per thread, shared while in use), finds
rollout files, reconciles a rollout with the store when a log is opened (after a crash
between the two writes, whichever is ahead fills the other in), and imports a thread the
store has never seen from its rollout.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio

from runtime.ids import utc_now
from runtime.rollout import RolloutFile, rollout_path, valid_thread_id
from runtime.thread_events import (
    LIVE_TYPES,
    PERSISTED_TYPES,
    LiveThreadEvent,
    PersistedThreadEvent,
    ThreadEvent,
    ThreadEventError,
    validate_payload,
)

log = logging.getLogger("agentd.threads")

QUEUE_SIZE = 1000
# A rollout write that failed for want of space (as tools.base counts them; the thread log
# sits below the tools and does not import them).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MAX_QUEUED_BYTES = 4 * 1024 * 1024
_PAGE = 500


class ThreadEventStore(Protocol):
    """What the log needs from the store (`runtime.store.Store` has it)."""

    async def append_thread_events(self, events: Sequence[PersistedThreadEvent]) -> None: ...

    async def thread_events_after(
        self, thread_id: str, after: int = 0, limit: int | None = None, *, shared: bool = False
    ) -> list[PersistedThreadEvent]: ...

    async def last_thread_sequence(self, thread_id: str) -> int: ...


class ThreadSubscriberDropped(Exception):
    """The subscriber fell too far behind and was cut off; subscribe again with
    `after=last_sequence` to continue without a gap."""

    def __init__(self, thread_id: str, last_sequence: int, reason: str) -> None:
        super().__init__(
            f"subscriber of thread {thread_id} was dropped ({reason}) after sequence "
            f"{last_sequence}; subscribe again from {last_sequence}"
        )
        self.thread_id = thread_id
        self.last_sequence = last_sequence
        self.reason = reason


class ThreadSubscription:
    """Persisted events with sequence > `after` (stored ones, then live ones), and, when
    `live`, the live-only events published since it was made. See `ThreadEventLog.subscribe`.

    `last_sequence` is the sequence of the last persisted event it returned."""

    def __init__(
        self,
        log: ThreadEventLog,
        after: int,
        *,
        live: bool,
        queue_size: int,
        max_queued_bytes: int,
    ) -> None:
        self.thread_id = log.thread_id
        self.last_sequence = after
        self.live = live
        self.queue_size = queue_size
        self.max_queued_bytes = max_queued_bytes
        self._log = log
        # Persisted events up to here were stored before this subscription existed: they are
        # read from the store; every later one is offered to the queue.
        self._stored_upto = log.last_sequence
        self._backlog: deque[PersistedThreadEvent] = deque()
        self._queue: deque[ThreadEvent] = deque()
        self._queued_bytes = 0
        self._wakeup = anyio.Event()
        self._dropped = anyio.Event()
        self.drop_reason: str | None = None
        self._ended = False

    @property
    def dropped(self) -> bool:
        return self._dropped.is_set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def wait_dropped(self) -> str:
        """Returns (the reason) once the subscription has been dropped for falling behind."""
        await self._dropped.wait()
        return self.drop_reason or "dropped"

    def deliver(self, event: ThreadEvent) -> None:
        """Called by the log for every new event: queue it, or drop the subscriber if that
        would exceed its bounds. Never blocks."""
        if self._ended or self.dropped:
            return
        if isinstance(event, LiveThreadEvent) and not self.live:
            return
        size = len(event.json_text)
        if len(self._queue) >= self.queue_size:
            self._drop(f"more than {self.queue_size} events queued")
            return
        if self._queued_bytes + size > self.max_queued_bytes and self._queue:
            self._drop(f"more than {self.max_queued_bytes} bytes queued")
            return
        self._queue.append(event)
        self._queued_bytes += size
        self._wakeup.set()

    def end(self) -> None:
        """Called by the log when it closes: the iteration ends after what is queued."""
        self._ended = True
        self._wakeup.set()

    def _drop(self, reason: str) -> None:
        self.drop_reason = reason
        self._queue.clear()
        self._queued_bytes = 0
        self._dropped.set()
        self._wakeup.set()
        self._log.unsubscribe(self)

    async def catch_up(self, limit: int | None = None) -> list[PersistedThreadEvent]:
        """The stored events this subscription starts with (sequence > `after`, up to the last
        one stored when it was made; at most `limit`), marked as returned. Iterating does the
        same page by page; call this to have them as one list (a snapshot)."""
        caught: list[PersistedThreadEvent] = list(self._backlog)
        self._backlog.clear()
        while self.last_sequence < self._stored_upto and (limit is None or len(caught) < limit):
            want = self._stored_upto - self.last_sequence
            if limit is not None:
                want = min(want, limit - len(caught))
            page = await self._log.events_after(
                self.last_sequence, limit=min(want, 10 * _PAGE), shared=True
            )
            page = [e for e in page if e.sequence <= self._stored_upto]
            if not page:
                break
            caught.extend(page)
            self.last_sequence = page[-1].sequence
        return caught

    def __aiter__(self) -> ThreadSubscription:
        return self

    async def __anext__(self) -> ThreadEvent:
        while True:
            if self._backlog:
                return self._take_persisted(self._backlog.popleft())
            if self.last_sequence < self._stored_upto:
                page = await self._log.events_after(self.last_sequence, limit=_PAGE, shared=True)
                page = [e for e in page if e.sequence <= self._stored_upto]
                if page:
                    self._backlog.extend(page)
                    continue
                self._stored_upto = self.last_sequence
            if self.dropped:
                raise ThreadSubscriberDropped(
                    self.thread_id, self.last_sequence, self.drop_reason or "dropped"
                )
            if self._queue:
                event = self._queue.popleft()
                self._queued_bytes -= len(event.json_text)
                if isinstance(event, PersistedThreadEvent):
                    if event.sequence <= self.last_sequence:
                        continue  # already read from the store
                    return self._take_persisted(event)
                return event
            if self._ended:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def _take_persisted(self, event: PersistedThreadEvent) -> PersistedThreadEvent:
        self.last_sequence = event.sequence
        return event

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        self._ended = True
        self._queue.clear()
        self._queued_bytes = 0
        self._log.unsubscribe(self)
        self._wakeup.set()


class ThreadEventLog:
    """The events of one thread: sequences, the rollout file, the store, subscribers.

    `append` may be called from several tasks; sequences are assigned in the order calls
    take the log's lock. Neither `append` nor `publish` ever waits on a subscriber."""

    def __init__(
        self,
        thread_id: str,
        store: ThreadEventStore,
        rollout: RolloutFile | None,
        *,
        last_sequence: int = 0,
        queue_size: int = QUEUE_SIZE,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.thread_id = thread_id
        self.rollout = rollout
        self.queue_size = queue_size
        self.max_queued_bytes = max_queued_bytes
        self._store = store
        self._last_sequence = last_sequence
        self._lock = anyio.Lock()
        # The last sequence the rollout holds while it is behind the store (a full disk).
        self._rollout_behind: int | None = None
        self._subscribers: set[ThreadSubscription] = set()
        self._closed = False

    @property
    def last_sequence(self) -> int:
        """The sequence of the last persisted event (0 for a thread without events)."""
        return self._last_sequence

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    # -- writing -----------------------------------------------------------------------

    async def append(
        self,
        run_id: str,
        rollout_id: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> list[PersistedThreadEvent]:
        """Persist `(type, payload)` events of one run, in order: next sequences, the rollout
        file, the store, then subscribers. Payloads are checked against their types
        (ThreadEventError) and must already be redacted."""
        if not events:
            return []
        checked = []
        for type, payload in events:
            if type not in PERSISTED_TYPES:
                raise ThreadEventError(f"{type!r} is not a persisted thread event type")
            checked.append((type, validate_payload(type, payload)))
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"the event log of thread {self.thread_id} is closed")
            now = utc_now()
            made = [
                PersistedThreadEvent(
                    sequence=self._last_sequence + i,
                    rollout_id=rollout_id,
                    thread_id=self.thread_id,
                    run_id=run_id,
                    type=type,
                    payload=payload,
                    created_at=now,
                )
                for i, (type, payload) in enumerate(checked, start=1)
            ]
            # Shielded: once the rollout has the lines, the store and the subscribers must
            # get them too, or the lines are taken back (the sequences are handed out again).
            with anyio.CancelScope(shield=True):
                start = await self._write_rollout(made)
                try:
                    await self._store.append_thread_events(made)
                except BaseException:
                    if self.rollout is not None and start is not None:
                        await self.rollout.truncate(start)
                    raise
                self._last_sequence = made[-1].sequence
                for subscriber in list(self._subscribers):
                    for event in made:
                        subscriber.deliver(event)
            return made

    async def _write_rollout(self, made: list[PersistedThreadEvent]) -> int | None:
        """Append `made` to the rollout; its size before, or None if it was not written.

        On a full disk the events go on to the store alone (the rollout is a copy of it) and
        the rollout falls behind; each later append (and `sync`) first tries to fill it in
        from the store, so it never holds a gap."""
        if self.rollout is None:
            return None
        try:
            if self._rollout_behind is not None:
                await self._fill_rollout(self.rollout)
            return await self.rollout.append(made)
        except OSError as exc:
            if exc.errno not in NO_SPACE_ERRNOS:
                raise
            if self._rollout_behind is None:
                self._rollout_behind = made[0].sequence - 1
                log.warning(
                    "thread %s: its rollout %s cannot be written (%s); the events are stored "
                    "and the rollout is filled in from the store once there is space",
                    self.thread_id,
                    self.rollout.path,
                    exc.strerror,
                )
            return None

    async def _fill_rollout(self, rollout: RolloutFile) -> None:
        assert self._rollout_behind is not None
        while self._rollout_behind < self._last_sequence:
            page = await self._store.thread_events_after(
                self.thread_id, self._rollout_behind, limit=_PAGE
            )
            if not page:
                break
            await rollout.append(page)
            self._rollout_behind = page[-1].sequence
        log.info("thread %s: its rollout caught up from the store", self.thread_id)
        self._rollout_behind = None

    def publish(self, run_id: str, type: str, payload: Mapping[str, Any]) -> LiveThreadEvent | None:
        """Offer a live-only event to the subscribers now (nothing is stored); None when no
        subscriber takes live events (a run's every output chunk passes here: nobody
        watching the thread costs nothing)."""
        if type not in LIVE_TYPES:
            raise ThreadEventError(f"{type!r} is not a live thread event type")
        listeners = [s for s in self._subscribers if s.live]
        if not listeners:
            return None
        event = LiveThreadEvent(
            type=type,
            thread_id=self.thread_id,
            run_id=run_id,
            payload=validate_payload(type, payload),
            created_at=utc_now(),
        )
        for subscriber in listeners:
            subscriber.deliver(event)
        return event

    async def sync(self) -> None:
        """Make the rollout durable (fsync) and release its file until the next append; called
        at run boundaries."""
        async with self._lock:
            if self.rollout is not None:
                with anyio.CancelScope(shield=True):
                    if self._rollout_behind is not None:
                        with contextlib.suppress(OSError):  # still no space: next time
                            await self._fill_rollout(self.rollout)
                    await self.rollout.close()

    async def close(self) -> None:
        """End every subscription and release the rollout file. Idempotent."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            for subscriber in list(self._subscribers):
                subscriber.end()
            self._subscribers.clear()
            if self.rollout is not None:
                with anyio.CancelScope(shield=True):
                    await self.rollout.close()

    # -- reading -----------------------------------------------------------------------

    async def events_after(
        self, after: int = 0, limit: int | None = None, *, shared: bool = False
    ) -> list[PersistedThreadEvent]:
        """Stored persisted events with sequence > `after`, in order (at most `limit`);
        `shared`: see `Store.thread_events_after`."""
        return await self._store.thread_events_after(self.thread_id, after, limit, shared=shared)

    def subscribe(
        self,
        after: int = 0,
        *,
        live: bool = True,
        queue_size: int | None = None,
        max_queued_bytes: int | None = None,
    ) -> ThreadSubscription:
        """Follow the thread from `after`: stored persisted events first, then each new one
        (and, with `live`, live-only events from now on). Made and registered in one step,
        so no event is missed or returned twice."""
        subscription = ThreadSubscription(
            self,
            max(0, after),
            live=live,
            queue_size=queue_size or self.queue_size,
            max_queued_bytes=max_queued_bytes or self.max_queued_bytes,
        )
        if self._closed:
            subscription.end()
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: ThreadSubscription) -> None:
        self._subscribers.discard(subscription)


class ThreadEventHub:
    """The thread event logs of one daemon, their rollout files, and imports from rollouts.

    `rollouts=False` keeps events in the store only (no file in the workspace)."""

    def __init__(
        self,
        store: ThreadEventStore,
        workspace: Path,
        *,
        rollouts: bool = True,
        queue_size: int = QUEUE_SIZE,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.store = store
        self.workspace = Path(workspace)
        self.rollouts = rollouts
        self.queue_size = queue_size
        self.max_queued_bytes = max_queued_bytes
        # One log per thread while anything holds it (a run, a subscriber): two logs of one
        # thread would hand out the same sequence twice.
        self._logs: weakref.WeakValueDictionary[str, ThreadEventLog] = weakref.WeakValueDictionary()
        self._open_lock = anyio.Lock()

    def rollout_file(self, thread_id: str) -> RolloutFile | None:
        if not self.rollouts or not valid_thread_id(thread_id):
            return None
        return RolloutFile(rollout_path(self.workspace, thread_id))

    async def log(self, thread_id: str) -> ThreadEventLog:
        """The thread's log, opened (and reconciled with its rollout) on first use."""
        existing = self._logs.get(thread_id)
        if existing is not None:
            return existing
        async with self._open_lock:
            existing = self._logs.get(thread_id)
            if existing is not None:
                return existing
            rollout = self.rollout_file(thread_id)
            last = await self._reconcile(thread_id, rollout)
            opened = ThreadEventLog(
                thread_id,
                self.store,
                rollout,
                last_sequence=last,
                queue_size=self.queue_size,
                max_queued_bytes=self.max_queued_bytes,
            )
            self._logs[thread_id] = opened
            return opened

    async def _reconcile(self, thread_id: str, rollout: RolloutFile | None) -> int:
        """Bring the store and the rollout to the same last sequence; return it. The rollout
        is written first, so after a crash it may hold events the store missed; a rollout that
        is behind (deleted, or a thread from before rollouts) is filled in from the store."""
        stored = await self.store.last_thread_sequence(thread_id)
        if rollout is None:
            return stored
        last = await rollout.last()
        in_rollout = 0 if last is None else last.sequence
        if in_rollout > stored:
            missing = _contiguous(await rollout.read(after=stored), stored, rollout.path)
            await self.store.append_thread_events(missing)
            if missing:
                log.warning(
                    "thread %s: stored %d event(s) found only in its rollout (%d..%d)",
                    thread_id,
                    len(missing),
                    missing[0].sequence,
                    missing[-1].sequence,
                )
                stored = missing[-1].sequence
        elif in_rollout < stored:
            while in_rollout < stored:
                page = await self.store.thread_events_after(thread_id, in_rollout, limit=_PAGE)
                if not page:
                    break
                await rollout.append(page)
                in_rollout = page[-1].sequence
            await rollout.close()
            log.info("thread %s: wrote its rollout up to %d from the store", thread_id, stored)
        return stored

    async def read_rollout(self, thread_id: str) -> list[PersistedThreadEvent] | None:
        """The events of the thread's rollout file (up to the first gap), or None if there is
        no such file."""
        rollout = self.rollout_file(thread_id)
        if rollout is None or not await rollout.exists():
            return None
        return _contiguous(await rollout.read(), 0, rollout.path)

    async def delete(self, thread_id: str) -> None:
        """Forget a deleted thread: end its subscribers and remove its rollout file (a thread
        deleted through the API must not come back from its rollout)."""
        opened = self._logs.pop(thread_id, None)
        if opened is not None:
            await opened.close()
        rollout = self.rollout_file(thread_id)
        if rollout is not None:
            await rollout.delete()

    async def close(self) -> None:
        for opened in list(self._logs.values()):
            await opened.close()


def _contiguous(
    events: list[PersistedThreadEvent], after: int, path: Path
) -> list[PersistedThreadEvent]:
    """The events that continue `after` without a gap (a damaged line makes a gap; what
    follows it cannot be numbered honestly and is left out, with a warning)."""
    kept: list[PersistedThreadEvent] = []
    expected = after + 1
    for event in events:
        if event.sequence < expected:
            continue
        if event.sequence != expected:
            log.warning(
                "rollout %s: sequence %d follows %d; ignoring it and everything after",
                path,
                event.sequence,
                expected - 1,
            )
            break
        kept.append(event)
        expected += 1
    return kept


__all__ = [
    "ThreadEventHub",
    "ThreadEventLog",
    "ThreadEventStore",
    "ThreadSubscriberDropped",
    "ThreadSubscription",
]
