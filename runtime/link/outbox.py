"""Pushing persisted thread events to the control plane, from a durable outbox.

The outbox is the daemon's own store of thread events (nothing is copied) plus one small file
in the state dir, `link-outbox.json`, holding per thread the last sequence the control plane
acknowledged with a 2xx and the threads parked after a refusal. It is written atomically
(temp file, fsync, rename) after every acknowledged batch, so:

- events go out in sequence order per thread, in batches of at most `BATCH` events, with
  `POST {control plane}/v1/threads/{threadId}/events {"events": [...]}`;
- a batch is retried (backoff with jitter) until a 2xx: across link drops, control-plane
  restarts and agentd restarts nothing is lost; a batch whose 2xx was lost is sent again,
  which the control plane dedupes by (threadId, sequence);
- once a 2xx is recorded the batch is never sent again;
- a 4xx other than 408/429 parks the thread (logged, kept in the file, not retried forever);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from runtime.link.protocol import backoff, events_url
from runtime.store import Store

log = logging.getLogger("agentd.link")

BATCH = 200
OUTBOX_FILE = "link-outbox.json"


class LinkRefused(Exception):
    """The control plane refused the token (401/403)."""


@dataclass
class OutboxState:
    """What the control plane has acknowledged: thread → last sequence; parked threads."""

    pushed: dict[str, int] = field(default_factory=dict)
    parked: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> OutboxState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except ValueError:
            log.warning("link outbox %s is unreadable; pushing every thread from the start", path)
            return cls()
        return cls(pushed=dict(data.get("pushed", {})), parked=dict(data.get("parked", {})))

    def save(self, path: Path) -> None:
        temp = path.with_suffix(".tmp")
        with open(temp, "w") as out:
            json.dump({"version": 1, "pushed": self.pushed, "parked": self.parked}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)


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
                self.state.pushed[thread_id] = events[-1].sequence
                await anyio.to_thread.run_sync(self.state.save, self.path)
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
                self.state.parked[thread_id] = {
                    "from": events[0]["sequence"],
                    "status": status,
                    "detail": detail,
                }
                await anyio.to_thread.run_sync(self.state.save, self.path)
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
