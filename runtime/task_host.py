"""A task group that lives in a host task of its own.

aiohttp opens and closes the daemon's long-lived services from different tasks (its startup
and cleanup hooks), and an anyio task group must be entered and exited by the same task. So
the group is hosted by a task created for it: `start()` returns once the group is open,
`stop()` cancels what is still running in it and waits for the host to finish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup


class HostedTaskGroup:
    """`start()`, then `start_soon(...)` from any task, then `stop()` from any task."""

    def __init__(self) -> None:
        self._host: asyncio.Task[None] | None = None
        self._stop = anyio.Event()
        self._group: TaskGroup | None = None

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`, while tasks can be started."""
        return self._group is not None

    @property
    def started(self) -> bool:
        return self._host is not None

    async def start(self) -> None:
        if self._host is not None:
            raise RuntimeError("the task group is already started")
        ready = anyio.Event()
        self._stop = anyio.Event()
        self._host = asyncio.get_running_loop().create_task(self._hold(ready))
        await ready.wait()

    def start_soon(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._group is None:
            raise RuntimeError("the task group is not running")
        self._group.start_soon(func, *args)

    async def stop(self) -> None:
        """Cancel the tasks still running in the group and wait until it has closed."""
        host, self._host = self._host, None
        if host is None:
            return
        self._stop.set()
        await host

    async def _hold(self, ready: anyio.Event) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            ready.set()
            await self._stop.wait()
            group.cancel_scope.cancel()
        self._group = None
