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
- once a 2xx is recorded the batch is never sent again;
- a 4xx other than 408/429 parks the thread (logged, kept in its files, not retried forever);
- 401/403 raise `LinkRefused`: the token was refused, retrying cannot help;
- when the outbox starts it reads the threads whose last event is past what was pushed (one
  look at every thread's last sequence), then only the threads the store says got events
  (`Store.watch_thread_events`): an idle daemon reads nothing, however many threads its
  history holds.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from runtime.link.protocol import backoff, events_url
from runtime.store import Store

log = logging.getLogger("agentd.link")

BATCH = 200
OUTBOX_FILE = "link-outbox.json"
# The journal is folded into the snapshot once it has more lines than this, or than the
# snapshot has entries if that is more.
JOURNAL_FOLD_MIN = 1000


class LinkRefused(Exception):
    """The control plane refused the token (401/403)."""


class OutboxState:
    """What the control plane has acknowledged: thread → last sequence; parked threads.

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
        self.parked: dict[str, dict[str, Any]] = {}
        self.journal_lines = 0

    @classmethod
    def load(cls, path: Path) -> OutboxState:
        state = cls(path)
        try:
            data = json.loads(path.read_text())
            state.pushed = {str(k): int(v) for k, v in data.get("pushed", {}).items()}
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
        thread_id = str(entry["thread"])
        if "pushed" in entry:
            self.pushed[thread_id] = max(self.pushed.get(thread_id, 0), int(entry["pushed"]))
        if "parked" in entry:
            self.parked[thread_id] = dict(entry["parked"])

    def record_pushed(self, thread_id: str, sequence: int) -> None:
        """The control plane acknowledged `thread_id`'s events up to `sequence`."""
        self._record({"thread": thread_id, "pushed": sequence})

    def record_parked(self, thread_id: str, why: dict[str, Any]) -> None:
        """`thread_id` is parked: the control plane refused its events (`why` says how)."""
        self._record({"thread": thread_id, "parked": why})

    def _record(self, entry: dict[str, Any]) -> None:
        self._apply(entry)
        with open(self.journal, "a") as out:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.journal_lines += 1
        if self.journal_lines > max(JOURNAL_FOLD_MIN, len(self.pushed) + len(self.parked)):
            self.save()

    def save(self) -> None:
        """Write the snapshot and empty the journal. A crash between the two leaves a journal
        whose lines the new snapshot holds already: replaying them changes nothing."""
        temp = self.path.with_suffix(".tmp")
        with open(temp, "w") as out:
            json.dump({"version": 1, "pushed": self.pushed, "parked": self.parked}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        _fsync_directory(self.path.parent)  # the rename is durable before the journal goes
        with open(self.journal, "w") as out:
            os.fsync(out.fileno())
        self.journal_lines = 0


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
        state_dir: Path,
        session: aiohttp.ClientSession,
        control_plane: str,
        token: str,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.path = state_dir / OUTBOX_FILE
        self.session = session
        self.control_plane = control_plane
        self.token = token
        self.rng = rng or random.Random()
        self.state = OutboxState.load(self.path)
        self.pushed_batches = 0
        self.pages_read = 0  # store reads of threads' events, for benchmarks and tests

    async def run(self) -> None:
        """Push what is pending on every thread, then each thread as it gets events: the
        store says which (`Store.watch_thread_events`), so an idle daemon reads nothing,
        however many threads it holds."""
        with self.store.watch_thread_events() as watch:  # before the first pass: none missed
            await self.push_pending()
            while True:
                await self.push_pending(await watch.changed())

    async def push_pending(self, thread_ids: Iterable[str] | None = None) -> bool:
        """Push what is pending on these threads (None: every thread, of which only those
        with events past what was pushed are read); True if anything was sent."""
        if thread_ids is None:
            last = await self.store.last_thread_sequences()
            thread_ids = [
                t for t, sequence in last.items() if sequence > self.state.pushed.get(t, 0)
            ]
        sent = False
        for thread_id in thread_ids:
            if thread_id in self.state.parked:
                continue
            while True:
                after = self.state.pushed.get(thread_id, 0)
                events = await self.store.thread_events_after(thread_id, after, BATCH)
                self.pages_read += 1
                if not events:
                    break
                if not await self._push(thread_id, [e.to_dict() for e in events]):
                    break  # parked
                await anyio.to_thread.run_sync(
                    self.state.record_pushed, thread_id, events[-1].sequence
                )
                sent = True
                if len(events) < BATCH:
                    break  # all it had; an event stored since is noted by the watch
        return sent

    async def _push(self, thread_id: str, events: list[dict[str, Any]]) -> bool:
        """Send one batch until a 2xx (True) or a refusal that parks the thread (False)."""
        url = events_url(self.control_plane, thread_id)
        headers = {"Authorization": f"Bearer {self.token}"}
        attempt = 0
        while True:
            try:
                async with self.session.post(
                    url, json={"events": events}, headers=headers
                ) as response:
                    status = response.status
                    detail = (await response.text())[:300]
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, detail = 0, f"{type(exc).__name__}: {exc}"
            if 200 <= status < 300:
                self.pushed_batches += 1
                return True
            if status in (401, 403):
                raise LinkRefused(
                    f"the control plane refused the token pushing thread events ({status}): "
                    f"{detail}"
                )
            if 400 <= status < 500 and status not in (408, 429):
                log.error(
                    "thread %s: the control plane refused events %d-%d (%d: %s); parked, "
                    "not retried",
                    thread_id,
                    events[0]["sequence"],
                    events[-1]["sequence"],
                    status,
                    detail,
                )
                why = {"from": events[0]["sequence"], "status": status, "detail": detail}
                await anyio.to_thread.run_sync(self.state.record_parked, thread_id, why)
                return False
            delay = backoff(attempt, self.rng)
            attempt += 1
            log.warning(
                "thread %s: pushing events failed (%s); retrying in %.1f s",
                thread_id,
                status or detail,
                delay,
            )
            await anyio.sleep(delay)
