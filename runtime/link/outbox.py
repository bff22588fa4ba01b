"""Pushing persisted thread events to the control plane, from a durable outbox.

The outbox is the daemon's own store of thread events (nothing is copied) plus what the
control plane acknowledged, in the state dir (`OutboxState`: `link-outbox.json` and its
journal): per thread the last sequence acknowledged with a 2xx, and the threads parked after a
refusal, made durable (fsync) after every acknowledged batch, so:

- events go out in sequence order per thread, in batches of at most `BATCH` events, with
  `POST {control plane}/v1/threads/{threadId}/events {"events": [...]}`;
- a batch is retried (backoff with jitter) until a 2xx: across link drops, control-plane
  restarts and agentd restarts nothing is lost; a batch whose 2xx was lost is sent again,
  which the control plane dedupes by (threadId, sequence);
- each thread is pushed by a task of its own, so a thread whose pushes keep failing backs off
  alone while the other threads' events go out (at most `PUSHES_AT_ONCE` batches are read and
  sent at once; a thread waiting out its backoff holds none of them);
- a push that gets no answer within `PUSH_TIMEOUT` failed, and is retried like any other
  failure: a control plane that never answers one thread holds none of the push slots;
- once a 2xx is recorded the batch is never sent again;
- a 4xx other than 408/429 parks the thread (logged, kept in its files, not retried forever);
- 401/403 raise `LinkRefused`: the token was refused, retrying cannot help;
- when the outbox starts it reads the threads whose last event is past what was pushed (one
  look at every thread's last event), then only the threads the store says got events
  (`Store.watch_thread_events`): an idle daemon reads nothing, however many threads its
  history holds;
- a thread deleted and made again under the same id (its events count from 1 again) is pushed
  from its start: each cursor keeps the rollout id of the event it stands on, and a cursor
  whose event has gone or is another one is reset.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from runtime.link.protocol import backoff, events_url
from runtime.store import LastThreadEvent, Store
from runtime.thread_events import PersistedThreadEvent

log = logging.getLogger("agentd.link")

BATCH = 200
# Batches read and sent at once, over all threads (each a page of the store in memory).
PUSHES_AT_ONCE = 4
# A batch's answer (at most `BATCH` events to store) comes within this, or the push failed.
PUSH_TIMEOUT = 60.0
OUTBOX_FILE = "link-outbox.json"
# The journal is folded into the snapshot once it has more lines than this, or than the
# snapshot has entries if that is more.
JOURNAL_FOLD_MIN = 1000


class LinkRefused(Exception):
    """The control plane refused the token (401/403)."""


class OutboxState:
    """What the control plane has acknowledged: thread → last sequence (and the rollout id of
    that event, which says which thread of that id it was); parked threads.

    Two files in the state dir keep it: `link-outbox.json`, a snapshot replaced atomically
    (temp file, fsync, rename), and `link-outbox.journal`, one JSON line per change since the
    snapshot, appended and fsynced before the change counts. Recording a batch costs one short
    line however many threads there are (rewriting the snapshot each time cost every thread's
    cursor per batch); once the journal has more lines than the snapshot has entries it is
    folded into a new snapshot, so each change's share of the rewrites stays constant. The
    methods block: call them from a worker thread."""

    def __init__(self, path: Path) -> None:
        """Nothing acknowledged yet; `load` reads what the files hold."""
        self.path = path
        self.journal = path.with_suffix(".journal")
        self.pushed: dict[str, int] = {}
        # the rollout id of the event each cursor stands on (missing in files written before
        # it was kept: such a cursor is trusted as it is)
        self.rollouts: dict[str, str] = {}
        self.parked: dict[str, dict[str, Any]] = {}
        self.journal_lines = 0

    @classmethod
    def load(cls, path: Path) -> OutboxState:
        state = cls(path)
        try:
            data = json.loads(path.read_text())
            state.pushed = {str(k): int(v) for k, v in data.get("pushed", {}).items()}
            state.rollouts = {str(k): str(v) for k, v in data.get("rollouts", {}).items()}
            state.parked = dict(data.get("parked", {}))
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, AttributeError):
            log.warning("link outbox %s is unreadable; pushing every thread from the start", path)
        try:
            text = state.journal.read_bytes()
        except FileNotFoundError:
            text = b""
        if text and not text.endswith(b"\n"):
            # A line cut short by a crash while it was written (its batch is sent again): cut
            # off, or the next line would be appended to it and be lost with it.
            text = text[: text.rfind(b"\n") + 1]
            os.truncate(state.journal, len(text))
        lines = text.decode("utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines, 1):
            try:
                state._apply(json.loads(line))
            except (ValueError, TypeError, KeyError, AttributeError):
                log.warning("link outbox journal %s: line %d is unreadable", state.journal, number)
        state.journal_lines = len(lines)
        return state

    def _apply(self, entry: dict[str, Any]) -> None:
        # The journal holds every change since the snapshot, in order, so the last line of a
        # thread says where it stands (lines replayed over a snapshot that holds them already
        # end where it does).
        thread_id = str(entry["thread"])
        if entry.get("reset"):
            self.pushed.pop(thread_id, None)
            self.rollouts.pop(thread_id, None)
            self.parked.pop(thread_id, None)
        if "pushed" in entry:
            self.pushed[thread_id] = int(entry["pushed"])
            if "rollout" in entry:
                self.rollouts[thread_id] = str(entry["rollout"])
            else:
                self.rollouts.pop(thread_id, None)
        if "parked" in entry:
            self.parked[thread_id] = dict(entry["parked"])

    def record_pushed(self, thread_id: str, last: PersistedThreadEvent) -> None:
        """The control plane acknowledged `thread_id`'s events up to `last`."""
        self._record([{"thread": thread_id, "pushed": last.sequence, "rollout": last.rollout_id}])

    def record_parked(self, thread_id: str, why: dict[str, Any]) -> None:
        """`thread_id` is parked: the control plane refused its events (`why` says how: `from`
        the first refused sequence, `rollout` that event's rollout id)."""
        self._record([{"thread": thread_id, "parked": why}])

    def record_reset(self, thread_ids: Iterable[str]) -> None:
        """These threads were deleted (and perhaps made again): nothing of theirs was pushed."""
        self._record([{"thread": thread_id, "reset": True} for thread_id in thread_ids])

    def _record(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        for entry in entries:
            self._apply(entry)
        with open(self.journal, "a") as out:
            out.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
            out.flush()
            os.fsync(out.fileno())
        self.journal_lines += len(entries)
        if self.journal_lines > max(JOURNAL_FOLD_MIN, len(self.pushed) + len(self.parked)):
            self.save()

    def save(self) -> None:
        """Write the snapshot and empty the journal. A crash between the two leaves a journal
        whose lines the new snapshot holds already: replaying them changes nothing."""
        temp = self.path.with_suffix(".tmp")
        with open(temp, "w") as out:
            json.dump(
                {
                    "version": 2,
                    "pushed": self.pushed,
                    "rollouts": self.rollouts,
                    "parked": self.parked,
                },
                out,
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        _fsync_directory(self.path.parent)  # the rename is durable before the journal goes
        with open(self.journal, "w") as out:
            os.fsync(out.fileno())
        self.journal_lines = 0


def _starts_with(page: list[PersistedThreadEvent], sequence: int, rollout_id: str) -> bool:
    """Whether `page` starts with the event a cursor keeps: that sequence, from that rollout
    (the same sequence of another thread of the same id has another rollout id)."""
    return bool(page) and page[0].sequence == sequence and page[0].rollout_id == rollout_id


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every system can fsync a directory
    finally:
        os.close(fd)


class ThreadEventOutbox:
    """Pushes every thread's persisted events; `run()` until cancelled or `LinkRefused`."""

    def __init__(
        self,
        store: Store,
        state: OutboxState,
        session: aiohttp.ClientSession,
        control_plane: str,
        token: str,
        *,
        rng: random.Random | None = None,
        push_timeout: float = PUSH_TIMEOUT,
    ) -> None:
        """An outbox on `state` as loaded (`open` loads it from the state dir)."""
        self.store = store
        self.state = state
        self.session = session
        self.control_plane = control_plane
        self.token = token
        self.rng = rng or random.Random()
        self.push_timeout = aiohttp.ClientTimeout(total=push_timeout)
        self.pushed_batches = 0
        self.pages_read = 0  # store reads of threads' events, for benchmarks and tests
        self._recorded = anyio.Event()  # set (and replaced) each time an acknowledgement is kept
        self._pushes = anyio.CapacityLimiter(PUSHES_AT_ONCE)
        # `OutboxState` is written by one worker thread at a time (its journal, its snapshot)
        self._state_writer = anyio.CapacityLimiter(1)
        # the threads that have a pusher task: whether it was woken again since its last look
        self._pushing: dict[str, bool] = {}

    @classmethod
    async def open(
        cls,
        store: Store,
        state_dir: Path,
        session: aiohttp.ClientSession,
        control_plane: str,
        token: str,
        *,
        rng: random.Random | None = None,
        push_timeout: float = PUSH_TIMEOUT,
    ) -> ThreadEventOutbox:
        """The outbox of the daemon whose state dir is `state_dir`: what was acknowledged is
        read from its files in a worker thread (they grow with the threads pushed)."""
        state = await anyio.to_thread.run_sync(OutboxState.load, state_dir / OUTBOX_FILE)
        return cls(store, state, session, control_plane, token, rng=rng, push_timeout=push_timeout)

    async def run(self) -> None:
        """Push what is pending on every thread, then each thread as it gets events: the
        store says which (`Store.watch_thread_events`), so an idle daemon reads nothing,
        however many threads it holds. Each thread is pushed by a task of its own."""
        with self.store.watch_thread_events() as watch:  # before the first pass: none missed
            async with self._pushers() as wake:
                wake(await self._threads_to_read())
                while True:
                    wake(await watch.changed())

    async def push_pending(self, thread_ids: Iterable[str] | None = None) -> bool:
        """Push what is pending on these threads (None: every thread, of which only those
        whose last event is not the one pushed last are read), each in a task of its own, and
        wait until all are pushed (or parked); True if anything was sent. Not beside `run`."""
        if thread_ids is None:
            thread_ids = await self._threads_to_read()
        before = self.pushed_batches
        async with self._pushers() as wake:
            wake(thread_ids)
        return self.pushed_batches > before

    @asynccontextmanager
    async def _pushers(self) -> AsyncIterator[Callable[[Iterable[str]], None]]:
        """The pushers' task group. Yields `wake(thread_ids)`: a thread without a pusher gets
        one; a thread that has one is looked at again once its pusher's pass is over (an
        event stored during the pass may have come after its page was read). On exit, waits
        for the pushers; a `LinkRefused` of any of them ends all and is raised as it is."""
        refused: list[LinkRefused] = []
        async with anyio.create_task_group() as tasks:

            async def pusher(thread_id: str) -> None:
                try:
                    await self._push_while_woken(thread_id)
                except LinkRefused as exc:
                    refused.append(exc)
                    tasks.cancel_scope.cancel()

            def wake(thread_ids: Iterable[str]) -> None:
                for thread_id in thread_ids:
                    if thread_id in self._pushing:
                        self._pushing[thread_id] = True
                    else:
                        self._pushing[thread_id] = False
                        tasks.start_soon(pusher, thread_id)

            yield wake
        if refused:
            raise refused[0]

    async def _push_while_woken(self, thread_id: str) -> None:
        """A thread's pusher: pushes what is pending, again while it was woken meanwhile."""
        try:
            while True:
                self._pushing[thread_id] = False
                if thread_id not in self.state.parked or await self._made_again_since_parked(
                    thread_id
                ):
                    await self._push_thread(thread_id)
                if not self._pushing[thread_id]:
                    return  # no await since the look: an event noted later starts a new pusher
        finally:
            del self._pushing[thread_id]

    async def wait_acknowledged(
        self, thread_id: str, sequence: int, rollout_id: str | None = None
    ) -> None:
        """Until the control plane's acknowledgement of `thread_id`'s events up to `sequence`
        (the event from rollout `rollout_id`, if given) is kept in the outbox's files."""
        while not (
            self.state.pushed.get(thread_id, 0) >= sequence
            and rollout_id in (None, self.state.rollouts.get(thread_id))
        ):
            await self._recorded.wait()

    async def _threads_to_read(self) -> list[str]:
        """The threads whose last event is not the one pushed last (events stored while the
        outbox did not run, or a thread made again), and the parked threads with events (to
        see whether they are the thread that was refused). The cursors of threads that no
        longer have events are dropped: those threads were deleted."""
        last = await self.store.last_thread_events()
        gone = [t for t in {*self.state.pushed, *self.state.parked} if t not in last]
        if gone:
            await self._write_state(self.state.record_reset, gone)
        return [t for t, event in last.items() if self._may_have_pending(t, event)]

    def _may_have_pending(self, thread_id: str, last: LastThreadEvent) -> bool:
        if thread_id in self.state.parked:
            return True
        pushed = self.state.pushed.get(thread_id, 0)
        if last.sequence != pushed:
            return True
        rollout = self.state.rollouts.get(thread_id)
        return rollout is not None and rollout != last.rollout_id

    async def _push_thread(self, thread_id: str) -> bool:
        """Push what is pending on one thread, batch by batch; True if anything was sent. A
        batch that fails is sent again after this thread's own backoff, read again from the
        cursor (so the thread's events go out in order and without a gap, and a waiting
        thread holds no page); the other threads' pushes go on meanwhile."""
        sent = False
        attempt = 0
        while True:
            async with self._pushes:
                events = await self._next_page(thread_id)
                if not events:
                    return sent
                status, detail = await self._post(thread_id, [e.to_dict() for e in events])
                if 200 <= status < 300:
                    self.pushed_batches += 1
                    await self._write_state(self.state.record_pushed, thread_id, events[-1])
                    self._recorded.set()
                    self._recorded = anyio.Event()
                    sent = True
                    attempt = 0
                    if len(events) < BATCH:
                        return sent  # all it had; an event stored since is noted by the watch
                    continue
                if status in (401, 403):
                    raise LinkRefused(
                        "the control plane refused the token pushing thread events "
                        f"({status}): {detail}"
                    )
                if 400 <= status < 500 and status not in (408, 429):
                    await self._park(thread_id, events, status, detail)
                    return sent
            delay = backoff(attempt, self.rng)
            attempt += 1
            log.warning(
                "thread %s: pushing events failed (%s); retrying in %.1f s",
                thread_id,
                status or detail,
                delay,
            )
            await anyio.sleep(delay)

    async def _next_page(self, thread_id: str) -> list[PersistedThreadEvent]:
        """The thread's next events to push. With the cursor's event read too: if it has gone
        or is another event (the thread was deleted and made again under the same id), the
        cursor is reset and the thread is read from its start."""
        after = self.state.pushed.get(thread_id, 0)
        rollout = self.state.rollouts.get(thread_id)
        self.pages_read += 1
        if not after or rollout is None:
            return await self.store.thread_events_after(thread_id, after, BATCH)
        page = await self.store.thread_events_after(thread_id, after - 1, BATCH + 1)
        if _starts_with(page, after, rollout):
            return page[1:]
        await self._reset(thread_id, f"since its events up to {after} were pushed")
        self.pages_read += 1
        return await self.store.thread_events_after(thread_id, 0, BATCH)

    async def _made_again_since_parked(self, thread_id: str) -> bool:
        """Whether a parked thread is another thread of the same id than the one refused (its
        refused event has gone or is another one); its cursor is then reset."""
        why = self.state.parked[thread_id]
        first, rollout = why.get("from"), why.get("rollout")
        if not isinstance(first, int) or rollout is None:
            return False  # parked by an older outbox, which kept no rollout id: stays parked
        self.pages_read += 1
        page = await self.store.thread_events_after(thread_id, first - 1, 1)
        if _starts_with(page, first, rollout):
            return False
        await self._reset(thread_id, f"since its events from {first} were refused")
        return True

    async def _reset(self, thread_id: str, since: str) -> None:
        """The thread was deleted and made again under its id: it is pushed from its start."""
        log.info(
            "thread %s was deleted and made again %s; pushing it from its start", thread_id, since
        )
        await self._write_state(self.state.record_reset, [thread_id])

    async def _post(self, thread_id: str, events: list[dict[str, Any]]) -> tuple[int, str]:
        """Send one batch, once: the status (0 if no answer came) and what it said."""
        url = events_url(self.control_plane, thread_id)
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with self.session.post(
                url, json={"events": events}, headers=headers, timeout=self.push_timeout
            ) as response:
                return response.status, (await response.text())[:300]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    async def _park(
        self, thread_id: str, events: list[PersistedThreadEvent], status: int, detail: str
    ) -> None:
        """The control plane refused the batch for good: the thread is parked, not retried."""
        log.error(
            "thread %s: the control plane refused events %d-%d (%d: %s); parked, not retried",
            thread_id,
            events[0].sequence,
            events[-1].sequence,
            status,
            detail,
        )
        why = {
            "from": events[0].sequence,
            "rollout": events[0].rollout_id,
            "status": status,
            "detail": detail,
        }
        await self._write_state(self.state.record_parked, thread_id, why)

    async def _write_state(self, record: Callable[..., None], *args: Any) -> None:
        """An `OutboxState` change, made durable in a worker thread, one at a time."""
        await anyio.to_thread.run_sync(record, *args, limiter=self._state_writer)
