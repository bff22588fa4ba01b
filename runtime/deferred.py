"""What the daemon loads once, after it listens, never on the event loop: `DeferredLoad`.

Some of agentd is a few tens of ms of imports (classes, pydantic models) that answering
`/readyz` does not need: the /v1 API (`runtime.api.v1`) and the run machinery
(`runtime.runs.machinery`). The daemon's warm-up thread loads each right after listening
(`load()`); a request that comes earlier awaits `get()`, which loads it in a worker thread
while the event loop goes on serving. A module that fails to import fails that call and every
later one the same way, with the part's own "unavailable" error (a 503 over HTTP) naming the
module and the error, rather than a hang or a 500.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

log = logging.getLogger("agentd")

# How long a caller waits for the first load (it takes tens of ms; far longer means a stuck
# import, which the caller reports rather than waiting on).
LOAD_TIMEOUT = 60.0


class DeferredLoad(Generic[T, E]):
    """`build(modules)` once, from `modules()` imported in order.

    `what` names the part in messages ("the run machinery"), `purpose` what the daemon cannot
    do without it ("drive runs"); `unavailable(message)` is the error a failed or stuck load
    raises. `modules` is called at the first load, so a test can change the list before;
    `also_load` adds to it."""

    def __init__(
        self,
        what: str,
        purpose: str,
        modules: Callable[[], Sequence[str]],
        build: Callable[[list[ModuleType]], T],
        unavailable: Callable[[str], E],
    ) -> None:
        self.what = what
        self.purpose = purpose
        self._modules = modules
        self._build = build
        self._unavailable = unavailable
        self._also: list[str] = []
        self._lock = threading.Lock()
        self._loaded: T | None = None
        self.failure: E | None = None  # why the load failed, once it has

    def also_load(self, name: str) -> None:
        """Import module `name` too, after the others: what a feature the daemon's settings
        turn on needs later (custom tools: jsonschema). Call before the first load."""
        if name not in self._also:
            self._also.append(name)

    def load(self) -> T:
        """Blocking: import the modules and build (the first call; later ones return at
        once). Raises the `unavailable` error if a module fails to import, on this call and
        every later one."""
        if self._loaded is not None:
            return self._loaded
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            if self.failure is not None:
                raise self.failure
            imported = []
            for name in [*self._modules(), *self._also]:
                try:
                    imported.append(importlib.import_module(name))
                except Exception as exc:
                    log.exception("%s failed to load: importing %s failed", self.what, name)
                    self.failure = self._unavailable(
                        f"the daemon cannot {self.purpose}: importing {name} failed "
                        f"({type(exc).__name__}: {exc}); the daemon log has the traceback"
                    )
                    raise self.failure from exc
            self._loaded = self._build(imported)
            return self._loaded

    async def get(self) -> T:
        """`load` for async callers: the first load runs in a worker thread (the event loop
        goes on serving meanwhile), bounded by LOAD_TIMEOUT; later calls return at once."""
        if self._loaded is not None:
            return self._loaded
        timeout = LOAD_TIMEOUT
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(self.load, abandon_on_cancel=True)
        except TimeoutError:
            raise self._unavailable(
                f"the daemon's {self.what.removeprefix('the ')} did not load within "
                f"{timeout:g}s; retry later"
            ) from None
