"""A toolbox in its own process that starts commands which try to outlive it, for the
process-escape tests in tests/tools/test_processes.py.

`python -m tests.tools.leave_processes MODE WORKSPACE OWNER [TABLE]`: with process owner OWNER
and the process table TABLE (`proc`, the default, or `psutil`: tools/proctable.py),
starts every command of `ESCAPES` (each writes its escapee's pid to `<name>.pid` in
WORKSPACE), waits until every pid file is written and prints `{"pids": {name: pid},
"parents": {name: ppid}, "me": pid}` on one line. Then, by MODE:

- `crash`: waits to be SIGKILLed (the leftovers are the next daemon's to find);
- `close` / `subreaper-close` (the latter first becomes the child subreaper): closes the
  toolbox, then prints `{"alive": [...], "zombies": [...]}`: escapees still running, and
  zombie children of this process left unreaped;
- `cgroup-close` / `cgroup-crash`: the same with a cgroup per toolbox (tools/cgroups.py) and
  one more escapee, which also drops its environment (`CGROUP_ESCAPES`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from tools.base import Toolbox, ToolSettings
from tools.cgroups import CgroupTree
from tools.libc import become_subreaper
from tools.processes import read_proc, read_tag, scan_processes
from tools.proctable import ProcTable, PsutilTable

# Each leaves a process behind that is no longer in the command's process tree once the
# command has exited; the stubborn ones also ignore SIGTERM, SIGHUP and SIGINT. Each command
# returns once its escapee has written its pid (so the hangup when the command's shell exits
# cannot catch it half-started).
_STARTS = {
    "nohup": "nohup sh -c 'echo $$ > nohup.pid; exec sleep 3002' >/dev/null 2>&1 &",
    "setsid": "setsid sh -c 'echo $$ > setsid.pid; exec sleep 3103' </dev/null >/dev/null 2>&1 &",
    "double-fork-stubborn": (
        '(setsid bash -c \'trap "" TERM HUP INT; echo $$ > double-fork-stubborn.pid; '
        "exec sleep 3105' </dev/null >/dev/null 2>&1 &)"
    ),
    "nohup-stubborn": (
        "(trap '' TERM HUP INT; nohup sh -c 'echo $$ > nohup-stubborn.pid; exec sleep 3106' "
        ">/dev/null 2>&1 &)"
    ),
}
# Only a cgroup catches this one: it leaves the session and drops its environment (and so
# its tag) too.
_CGROUP_ONLY = {
    "env-cleared-stubborn": (
        '(setsid env -i bash -c \'trap "" TERM HUP INT; echo $$ > env-cleared-stubborn.pid; '
        "exec sleep 3107' </dev/null >/dev/null 2>&1 &)"
    ),
}


def _escapes(starts: dict[str, str]) -> dict[str, str]:
    return {
        name: f"{start}\nuntil [ -s {name}.pid ]; do sleep 0.01; done"
        for name, start in starts.items()
    }


ESCAPES = _escapes(_STARTS)
CGROUP_ESCAPES = _escapes({**_STARTS, **_CGROUP_ONLY})


TABLES = {"proc": ProcTable, "psutil": PsutilTable}


async def main(mode: str, workspace: Path, owner: str, table: str = "proc") -> None:
    if mode.startswith("subreaper") and not become_subreaper():
        raise SystemExit("PR_SET_CHILD_SUBREAPER is not available")
    cgroups = CgroupTree.open(owner) if mode.startswith("cgroup") else None
    if mode.startswith("cgroup") and cgroups is None:
        raise SystemExit("no cgroup v2 hierarchy this process may write")
    escapes = CGROUP_ESCAPES if cgroups is not None else ESCAPES
    settings = ToolSettings(process_owner=owner, process_table=TABLES[table](), cgroups=cgroups)
    async with Toolbox(workspace, settings=settings, run_id="run_escapes") as box:
        for cmd in escapes.values():
            result = await box.call(
                "exec_command", {"cmd": cmd, "login": False, "yield_time_ms": 5000}
            )
            assert result.data["exit_code"] == 0, result.output
        pids: dict[str, int] = {}
        with anyio.fail_after(10):
            while len(pids) < len(escapes):
                for name in escapes:
                    pid_file = workspace / f"{name}.pid"
                    text = pid_file.read_text() if pid_file.exists() else ""
                    if text.strip():
                        pids[name] = int(text)
                await anyio.sleep(0.01)
        # An escapee is only one once the processes that started it have exited (it is then
        # reparented to init, or to this process as subreaper).
        with anyio.fail_after(10):
            while True:
                parents = {name: _ppid(pid) for name, pid in pids.items()}
                if not any(_tagged_by(owner, ppid) for ppid in parents.values()):
                    break
                await anyio.sleep(0.01)
        print(json.dumps({"pids": pids, "parents": parents, "me": os.getpid()}), flush=True)
        if mode.endswith("crash"):
            await anyio.sleep_forever()
    table = scan_processes() or {}
    alive = [pid for pid in pids.values() if pid in table and table[pid].state not in "ZX"]
    zombies = [p for p, i in table.items() if i.ppid == os.getpid() and i.state == "Z"]
    print(json.dumps({"alive": alive, "zombies": zombies}), flush=True)


def _ppid(pid: int) -> int | None:
    info = read_proc(pid)
    return None if info is None else info.ppid


def _tagged_by(owner: str, pid: int | None) -> bool:
    tag = read_tag(pid) if pid is not None else None
    return tag is not None and tag.startswith(owner + "/")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], Path(sys.argv[2]), *sys.argv[3:5])
