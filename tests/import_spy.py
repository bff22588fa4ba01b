"""An import finder for scripts that check what a process imports on its event loop's
thread (tests/api/first_request.py, tests/providers/first_request.py)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import threading
from collections.abc import Callable, Sequence
from types import ModuleType


class ImportSpy(importlib.abc.MetaPathFinder):
    """Notes each module first imported while `watch(name)` says so, by thread: on the main
    thread (the event loop's, in those scripts) or off it. A module's first import is the
    only one that consults the finders; this one finds nothing itself."""

    def __init__(self, watch: Callable[[str], bool]) -> None:
        self.watch = watch
        self.on_loop: list[str] = []
        self.off_loop: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if self.watch(fullname):
            main = threading.current_thread() is threading.main_thread()
            (self.on_loop if main else self.off_loop).append(fullname)
        return None
