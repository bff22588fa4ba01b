"""Process checks shared by the tests of runs and their toolboxes."""

from __future__ import annotations

import anyio


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_dead(*pids: int) -> None:
    """Processes are killed before the run's end is announced; allow the kernel a moment
    to finish tearing them down (bounded, not a sleep-and-hope)."""
    with anyio.fail_after(5):
        while any(alive(pid) for pid in pids):
            await anyio.sleep(0.01)
