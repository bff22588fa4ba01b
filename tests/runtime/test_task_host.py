"""HostedTaskGroup: opened in one task, used and closed from others."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from runtime.task_host import HostedTaskGroup


async def test_start_in_one_task_and_stop_in_another_cancels_what_runs() -> None:
    group = HostedTaskGroup()
    started = anyio.Event()
    cancelled = anyio.Event()

    async def forever() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    await asyncio.create_task(group.start())
    assert group.started and group.running
    group.start_soon(forever)
    await started.wait()
    await asyncio.create_task(group.stop())
    assert cancelled.is_set()
    assert not group.started and not group.running
    with pytest.raises(RuntimeError, match="not running"):
        group.start_soon(forever)
    await group.stop()  # a second stop is harmless


async def test_starting_twice_is_refused() -> None:
    group = HostedTaskGroup()
    await group.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            await group.start()
    finally:
        await group.stop()
