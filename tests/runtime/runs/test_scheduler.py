"""The scheduler alone: slots under the global and per-agent caps, and the FIFO queue."""

from __future__ import annotations

from runtime.runs.scheduler import Scheduler, Slot


def claim(scheduler: Scheduler, agent: str, agent_max: int | None = None) -> Slot:
    """What the run manager does for a new run: a slot now if one is free, else the queue."""
    slot = Slot(agent, agent_max)
    if scheduler.can_admit(agent, agent_max):
        scheduler.admit(slot)
    else:
        scheduler.enqueue(slot)
    return slot


def test_the_global_cap_queues_runs_in_order_and_admits_them_as_slots_free() -> None:
    scheduler = Scheduler(max_concurrent=2, max_queue=2)
    first, second, third, fourth = (claim(scheduler, "a") for _ in range(4))
    assert [s.admitted.is_set() for s in (first, second, third, fourth)] == [1, 1, 0, 0]
    assert (scheduler.running, scheduler.queued) == (2, 2)
    assert not scheduler.has_room("a", None)  # both slots and both queue places are taken

    scheduler.release(first)
    assert third.held and third.admitted.is_set() and not fourth.admitted.is_set()
    assert (scheduler.running, scheduler.queued) == (2, 1)
    assert scheduler.has_room("a", None)


def test_an_agent_at_its_cap_does_not_hold_up_other_agents() -> None:
    scheduler = Scheduler(max_concurrent=4, max_queue=4)
    claim(scheduler, "limited", 1)
    waiting = claim(scheduler, "limited", 1)
    other = claim(scheduler, "free")
    assert not waiting.admitted.is_set() and other.admitted.is_set()
    assert scheduler.can_admit("free", None) and not scheduler.can_admit("limited", 1)


def test_a_queued_run_that_gives_up_leaves_the_queue_without_taking_a_slot() -> None:
    scheduler = Scheduler(max_concurrent=1, max_queue=2)
    running = claim(scheduler, "a")
    cancelled, next_in_line = claim(scheduler, "a"), claim(scheduler, "a")
    scheduler.release(cancelled)  # e.g. cancelled while queued
    assert not cancelled.held and scheduler.queued == 1 and scheduler.running == 1
    scheduler.release(running)
    assert next_in_line.held and (scheduler.running, scheduler.queued) == (1, 0)
