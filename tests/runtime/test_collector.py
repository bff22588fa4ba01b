"""runtime/collector.py: the collector paused while long-lived objects are made, and those
objects frozen when asked; runtime.daemon.made_to_last, the warm-up's use of it."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from runtime.collector import collector_paused
from runtime.daemon import made_to_last


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """Each test starts with the collector on and nothing frozen by it, and leaves it so."""
    was_enabled = gc.isenabled()
    frozen_before = gc.get_freeze_count()
    gc.enable()
    try:
        yield
    finally:
        if gc.get_freeze_count() > frozen_before:
            gc.unfreeze()  # what these tests froze (and the rest, which was only a speed-up)
        if was_enabled:
            gc.enable()
        else:
            gc.disable()


class Node:
    """An object the collector tracks."""

    def __init__(self) -> None:
        self.links: list[Node] = []


def test_the_collector_is_off_for_the_block_and_on_after() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_paused_before_stays_paused() -> None:
    """The daemon's start-up pauses it until it listens: a pause inside leaves it off."""
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_an_error_in_the_block_resumes_the_collector() -> None:
    with pytest.raises(RuntimeError, match="broken"), collector_paused():
        raise RuntimeError("broken")
    assert gc.isenabled()


def test_freezing_keeps_what_the_block_made_out_of_later_collections() -> None:
    before = gc.get_freeze_count()
    with collector_paused(freeze=True):
        made = [Node() for _ in range(5_000)]
        assert gc.get_freeze_count() == before  # frozen at the end, not before
    assert gc.get_freeze_count() >= before + len(made)
    assert gc.isenabled()
    # without freeze nothing is frozen
    frozen = gc.get_freeze_count()
    with collector_paused():
        more = [Node() for _ in range(100)]
    assert gc.get_freeze_count() == frozen and len(more) == 100


def test_freezing_happens_even_where_the_collector_was_already_paused() -> None:
    gc.disable()
    before = gc.get_freeze_count()
    with collector_paused(freeze=True):
        made = [Node() for _ in range(1_000)]
    assert gc.get_freeze_count() >= before + len(made)
    assert not gc.isenabled()


@pytest.mark.parametrize("first_out", ["this thread", "the other"])
def test_overlapping_pauses_keep_the_collector_off_until_the_last_ends(first_out: str) -> None:
    """The switch is the process's and pauses overlap in worker threads: whichever ends
    first, the collector stays off until the other ends too, and is on after both."""
    inside, leave, left = threading.Event(), threading.Event(), threading.Event()

    def other() -> None:
        try:
            with collector_paused():
                inside.set()
                leave.wait(30)
        finally:
            left.set()

    worker = threading.Thread(target=other)
    try:
        with collector_paused():
            worker.start()
            assert inside.wait(30)
            if first_out == "the other":
                leave.set()
                assert left.wait(30)
                assert not gc.isenabled()  # this thread's pause still holds
        if first_out == "this thread":
            assert not gc.isenabled()  # the other's pause still holds
    finally:
        leave.set()
        worker.join(30)
    assert left.is_set()
    assert gc.isenabled()


def test_a_pause_inside_another_thread_s_pause_of_a_paused_collector_leaves_it_off() -> None:
    """Start-up keeps the collector off until the daemon listens: pauses in between, however
    they overlap, leave it off."""
    gc.disable()
    with collector_paused():
        done = threading.Event()

        def other() -> None:
            with collector_paused():
                pass
            done.set()

        worker = threading.Thread(target=other)
        worker.start()
        worker.join(30)
        assert done.is_set() and not gc.isenabled()
    assert not gc.isenabled()


def test_made_to_last_loads_with_the_collector_off_and_freezes_what_it_made() -> None:
    """The daemon's warm-up steps (runtime.daemon._warm_up) each run this way."""
    seen: list[bool] = []
    before = gc.get_freeze_count()

    def load(count: int) -> list[Node]:
        seen.append(gc.isenabled())
        return [Node() for _ in range(count)]

    made = made_to_last(load, 2_000)
    assert seen == [False] and len(made) == 2_000
    assert gc.get_freeze_count() >= before + 2_000
    assert gc.isenabled()

    def failing() -> None:
        raise ImportError("no module named sdk")

    with pytest.raises(ImportError):
        made_to_last(failing)
    assert gc.isenabled()
