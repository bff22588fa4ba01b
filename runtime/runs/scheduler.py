"""Admission: which runs hold a slot now and which wait, in order, for one.

A run may hold a slot while fewer than `max_concurrent` runs hold one and its agent holds
fewer than the agent's own cap (`maxConcurrent`). Runs that cannot are queued first in, first
out, at most `max_queue` of them; a queued run is admitted as soon as a released slot lets it
(a run of an agent at its cap does not hold up queued runs of other agents).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import anyio


@dataclass(eq=False)
class Slot:
    """One run's claim: queued until `admitted` is set, then held until released."""

    agent: str
    agent_max: int | None = None
    admitted: anyio.Event = field(default_factory=anyio.Event)
    held: bool = False


class Scheduler:
    """Slots under a global cap and per-agent caps, and the bounded queue of runs waiting."""

    def __init__(self, max_concurrent: int = 8, max_queue: int = 64) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._queue: deque[Slot] = deque()
        self._running_by_agent: Counter[str] = Counter()
        self._running = 0

    @property
    def running(self) -> int:
        """Slots held."""
        return self._running

    @property
    def queued(self) -> int:
        """Runs waiting for a slot."""
        return len(self._queue)

    def can_admit(self, agent: str, agent_max: int | None) -> bool:
        """Whether a run of `agent` (capped at `agent_max`) may take a slot now."""
        if self._running >= self.max_concurrent:
            return False
        return agent_max is None or self._running_by_agent[agent] < agent_max

    def has_room(self, agent: str, agent_max: int | None) -> bool:
        """Whether a new run of `agent` would get a slot or a place in the queue."""
        return self.can_admit(agent, agent_max) or len(self._queue) < self.max_queue

    def admit(self, slot: Slot) -> None:
        """Give `slot` a slot now (the caller checked `can_admit`)."""
        slot.held = True
        self._running += 1
        self._running_by_agent[slot.agent] += 1
        slot.admitted.set()

    def enqueue(self, slot: Slot) -> None:
        """Put `slot` at the end of the queue (the caller checked `has_room`)."""
        self._queue.append(slot)

    def release(self, slot: Slot) -> None:
        """`slot` is done (it held a slot, or gave up its place in the queue): admit the
        queued runs that fit now, in queue order."""
        if slot.held:
            slot.held = False
            self._running -= 1
            self._running_by_agent[slot.agent] -= 1
        elif slot in self._queue:
            self._queue.remove(slot)
        for waiting in list(self._queue):
            if self.can_admit(waiting.agent, waiting.agent_max):
                self._queue.remove(waiting)
                self.admit(waiting)
