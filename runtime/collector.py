"""Pausing the cyclic garbage collector while objects that outlive the pause are made.

A full collection scans every tracked object, so while a burst of long-lived objects is made
(a model SDK's modules and classes, a conversation's messages) each collection it triggers
only rescans what the burst built so far, and their number grows with the burst: two thirds
of a 20k-message read, a sixth of `import anthropic` (~130 ms of ~0.8 s on the machines the
benchmarks ran on). Reference counting still frees everything else meanwhile.

The collector's switch is one for the whole process, and pauses overlap (the daemon's warm-up
imports in one worker thread while a conversation is read in another): it stays off until
the last of them ends, and then comes back on if it was on when the first began (the
daemon's start-up keeps it off until it listens, whatever pauses happen meanwhile).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0  # pauses in progress
_resume = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """The collector off for the block; on again after it when it was on before the block and
    no other pause is in progress then.

    `freeze`: what exists when the block ends lives as long as the process (modules, classes,
    validators): it is frozen (later collections skip it) before the collector resumes. Frozen
    after, it would first be scanned by the collection the next allocation triggers, with the
    block's every object in its youngest generation."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
