"""The toolbox pool alone: what a thread's completed run left running, kept or stopped."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import tools.textfile
from runtime.agents import AgentSpec
from runtime.runs.toolbox_pool import ToolboxPool, toolbox_key
from tests.runtime.processes import alive, wait_dead
from tests.tools.test_patch import leave_a_half_applied_patch
from tools.base import Toolbox, ToolSettings

SPEC = AgentSpec(slug="shell", model="scripted-1", tools=["exec_command"])


async def start_sleeper(box: Toolbox) -> int:
    result = await box.call(
        "exec_command", {"cmd": "echo pid=$$; exec sleep 300", "login": False, "yield_time_ms": 500}
    )
    match = re.search(r"pid=(\d+)", result.output)
    assert match is not None, result.output
    return int(match.group(1))


def make_pool(workspace: Path, max_kept: int = 16) -> ToolboxPool:
    return ToolboxPool(workspace, env={}, settings=ToolSettings(), max_kept=max_kept)


async def test_a_kept_toolbox_goes_to_the_threads_next_run_with_its_processes(
    workspace: Path,
) -> None:
    pool = make_pool(workspace)
    try:
        box = await pool.checkout("thr_1", SPEC)
        pid = await start_sleeper(box)
        await pool.keep("thr_1", box, toolbox_key(SPEC))
        assert await pool.checkout("thr_2", SPEC) is not box  # never crosses threads
        assert await pool.checkout("thr_1", SPEC) is box and alive(pid)
        assert box not in pool.toolboxes()  # the new run owns it now
        await pool.discard(box)
        await wait_dead(pid)
    finally:
        await pool.aclose()


async def test_a_toolbox_built_for_other_tools_or_env_is_stopped_not_handed_over(
    workspace: Path,
) -> None:
    pool = make_pool(workspace)
    try:
        box = await pool.checkout("thr_1", SPEC)
        pid = await start_sleeper(box)
        await pool.keep("thr_1", box, toolbox_key(SPEC))
        changed = SPEC.model_copy(update={"env": {"MODE": "new"}})
        assert await pool.checkout("thr_1", changed) is not box
        await wait_dead(pid)
    finally:
        await pool.aclose()


async def test_the_least_recently_kept_toolbox_is_closed_beyond_the_bound(
    workspace: Path,
) -> None:
    pool = make_pool(workspace, max_kept=1)
    try:
        first, second = await pool.checkout("thr_1", SPEC), await pool.checkout("thr_2", SPEC)
        first_pid = await start_sleeper(first)
        await pool.keep("thr_1", first, toolbox_key(SPEC))
        await pool.keep("thr_2", second, toolbox_key(SPEC))
        await wait_dead(first_pid)
        assert pool.toolboxes() == [second]
    finally:
        await pool.aclose()


async def test_closing_the_pool_stops_kept_toolboxes_and_the_daemons(workspace: Path) -> None:
    pool = make_pool(workspace)
    box = await pool.checkout("thr_1", SPEC)
    await pool.keep("thr_1", box, toolbox_key(SPEC))
    daemon_box = pool.daemon_toolbox()
    assert pool.daemon_toolbox() is daemon_box and pool.toolboxes() == [box, daemon_box]
    pid = await start_sleeper(daemon_box)
    await pool.aclose()
    assert pool.toolboxes() == []
    await wait_dead(pid)


async def test_start_up_settles_a_commit_a_killed_daemon_left_half_applied(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """kill_leftovers, before any run starts, rolls back the apply_patch a previous daemon
    was killed in (tools/commit_journal.py), so the next run never sees it half applied."""
    if tools.textfile.rename_exchange is None:
        pytest.skip("no renameat2 exchange here")
    old = leave_a_half_applied_patch(workspace)

    pool = make_pool(workspace)
    try:
        with caplog.at_level(logging.WARNING, logger="agentd"):
            await pool.kill_leftovers()
    finally:
        await pool.aclose()
    files = {p.name: p.read_text() for p in workspace.iterdir() if p.is_file()}
    assert files == old  # every file old again, no temporary file left
    assert any("rolled back a commit" in r.getMessage() for r in caplog.records)
