"""Process escapes: commands that try to outlive their session (nohup, setsid, double forks
ignoring SIGTERM and SIGHUP) are found by the tag in their environment and killed, when the
toolbox closes and, after a crash, by the next daemon (`kill_tagged`); with the daemon as
child subreaper they are reparented to it and reaped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.leave_processes import CGROUP_ESCAPES, ESCAPES, TABLES
from tools.base import Toolbox, ToolSettings
from tools.cgroups import CgroupTree
from tools.processes import PROCESS_TAG_VAR, read_proc, read_tag
from tools.proctable import kill_tagged

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    info = read_proc(pid)
    return info is not None and info.state not in ("Z", "X")


async def wait_dead(pids: list[int], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while any(alive(pid) for pid in pids):
            await anyio.sleep(0.01)


class Helper:
    """`python -m tests.tools.leave_processes` and its JSON lines."""

    def __init__(self, mode: str, workspace: Path, owner: str, table: str = "proc") -> None:
        module = "tests.tools.leave_processes"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, mode, str(workspace), owner, table],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with anyio.fail_after(30):
            text = await anyio.to_thread.run_sync(self.proc.stdout.readline)
        assert text, f"the helper exited with {self.proc.wait()}"
        return dict(json.loads(text))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def owner() -> str:
    return "test-" + os.urandom(4).hex()


@pytest.fixture
def cleanup(owner: str) -> Any:
    """Whatever a failing test leaves is killed all the same."""
    yield
    kill_tagged(lambda tag: tag.startswith(owner + "/"))


async def test_every_command_carries_its_tag(workspace: Path, owner: str, cleanup: None) -> None:
    settings = ToolSettings(process_owner=owner)
    async with Toolbox(workspace, settings=settings, run_id="run_1") as box:
        call_env = {PROCESS_TAG_VAR: "forged"}  # the call cannot choose its own tag
        result = await box.call(
            "exec_command",
            {
                "cmd": "echo $$; exec sleep 30",
                "login": False,
                "yield_time_ms": 500,
                "env": call_env,
            },
        )
        with anyio.fail_after(10):
            while not result.data["output"].strip():
                result = await box.call("write_stdin", {"session_id": result.data["session_id"]})
        assert read_tag(int(result.data["output"].split()[0])) == f"{owner}/run_1/1"


@pytest.mark.parametrize("table", ["proc", "psutil"])
@pytest.mark.parametrize("mode", ["close", "subreaper-close"])
async def test_escapees_die_when_the_toolbox_closes(
    workspace: Path, owner: str, cleanup: None, mode: str, table: str
) -> None:
    """With `psutil`, the portable process table (macOS's) forced on Linux."""
    helper = Helper(mode, workspace, owner, table)
    try:
        started = await helper.line()
        pids = started["pids"]
        assert set(pids) == set(ESCAPES)
        if mode == "subreaper-close":  # reparented to the helper, not to init
            assert set(started["parents"].values()) == {started["me"]}
        ended = await helper.line()
        assert ended == {"alive": [], "zombies": []}
        assert helper.proc.wait(timeout=10) == 0
    finally:
        helper.close()


@pytest.mark.parametrize("table", ["proc", "psutil"])
async def test_a_restarted_owner_kills_what_a_killed_one_left(
    workspace: Path, owner: str, cleanup: None, table: str
) -> None:
    procs = TABLES[table]()
    helper = Helper("crash", workspace, owner, table)
    try:
        pids = list((await helper.line())["pids"].values())
        os.kill(helper.proc.pid, signal.SIGKILL)
        helper.proc.wait()
        assert all(alive(pid) for pid in pids)  # kill -9 left them running
        other = kill_tagged(lambda tag: tag.startswith("other-owner/"), procs=procs)
        assert not set(other) & set(pids) and all(alive(pid) for pid in pids)
        killed = await anyio.to_thread.run_sync(
            lambda: kill_tagged(lambda tag: tag.startswith(owner + "/"), procs=procs)
        )
        assert set(pids) <= set(killed)
        await wait_dead(pids, timeout=2.5)  # kill_tagged itself waited for them
    finally:
        helper.close()


def _cgroups_here() -> bool:
    probe = CgroupTree.open("probe-" + os.urandom(4).hex())
    if probe is not None:
        probe.close()
    return probe is not None


needs_cgroups = pytest.mark.skipif(
    not _cgroups_here(), reason="no cgroup v2 hierarchy this process may write (tools/cgroups.py)"
)


@pytest.fixture
def cgroup_tree(owner: str) -> Any:
    """The owner's cgroups; whatever a failing test leaves in them is killed."""
    tree = CgroupTree.open(owner)
    assert tree is not None
    yield tree
    tree.sweep()
    tree.close()


@needs_cgroups
async def test_a_cgroup_catches_what_left_its_session_and_dropped_its_tag(
    workspace: Path, owner: str, cleanup: None, cgroup_tree: CgroupTree
) -> None:
    helper = Helper("cgroup-close", workspace, owner)
    try:
        started = await helper.line()
        assert set(started["pids"]) == set(CGROUP_ESCAPES)
        cleared = started["pids"]["env-cleared-stubborn"]
        assert read_tag(cleared) is None  # no tag: only the cgroup knows it is the agent's
        ended = await helper.line()
        assert ended == {"alive": [], "zombies": []}
        assert helper.proc.wait(timeout=10) == 0
        assert not cgroup_tree.base.exists()  # its cgroup removed at close, and the owner's
    finally:
        helper.close()


@needs_cgroups
async def test_a_restarted_owner_sweeps_its_cgroups(
    workspace: Path, owner: str, cleanup: None, cgroup_tree: CgroupTree
) -> None:
    helper = Helper("cgroup-crash", workspace, owner)
    try:
        pids = (await helper.line())["pids"]
        os.kill(helper.proc.pid, signal.SIGKILL)
        helper.proc.wait()
        # The tags find all but the one that dropped its environment...
        tagged = await anyio.to_thread.run_sync(
            lambda: kill_tagged(lambda tag: tag.startswith(owner + "/"))
        )
        survivor = pids["env-cleared-stubborn"]
        assert survivor not in tagged and alive(survivor)
        # ...which the sweep of the owner's cgroups kills.
        swept = await anyio.to_thread.run_sync(CgroupTree.open(owner).sweep)  # type: ignore[union-attr]
        assert survivor in [pid for killed in swept.values() for pid in killed]
        await wait_dead(list(pids.values()), timeout=2.5)
        assert not cgroup_tree.base.exists()
    finally:
        helper.close()


def test_no_cgroups_where_the_hierarchy_is_not_a_cgroup(tmp_path: Path) -> None:
    assert CgroupTree.open("owner", root=tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the directory it tried is gone again
