"""A cgroup v2 per toolbox, where the daemon may make them: a container nothing escapes.

The process tags (`AGENTD_PROCESS_TAG` in each command's environment) find what a command
left running however it detached, unless it also dropped its environment (`env -i`,
a daemon that clears it). A cgroup holds every descendant of the processes put in it,
whatever they do; `cgroup.kill` (Linux 5.14+) SIGKILLs all of them at once, and a daemon
starting on the state a killed one left finds its leftover cgroups by name.

Layout: `<cgroup2 mount><the daemon's own cgroup>/agentd-<owner>/<toolbox>`, one directory
per toolbox that ran a command; each is removed when its toolbox closes, and the owner's
directory with the last one. A session starts as `/bin/sh`, which writes its own pid to
the cgroup and execs the command (the same process, now in the cgroup before it runs a line
of its own; one exec of sh more per command, measured by benchmarks/exec_bench.py). Moving
the process from the daemon after the spawn was too late: a short command had finished, and
a shell had forked its first child, before the write landed. Controllers are never enabled,
so this adds no limits and works below a cgroup that holds processes itself.

`CgroupTree.open(owner)` returns None where there is no writable cgroup2 hierarchy with
`cgroup.kill` (macOS, most containers without a cgroup namespace of their own, older
kernels): the tools then rely on process groups, tags and the child subreaper alone.
Everything here blocks briefly on cgroupfs; `kill` and `sweep` wait, so call them from a
worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

__all__ = ["CgroupTree"]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class CgroupTree:
    """The daemon's cgroups for one process owner (see the module docstring)."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def open(cls, owner: str, *, root: Path | None = None) -> CgroupTree | None:
        """The owner's cgroups; None where they are not ours to make. Probed by making the
        owner's directory, which is removed again at once unless a killed daemon's leftovers
        are in it (toolbox cgroups make it again). `root` is the cgroup to make it under
        (default: the daemon's own)."""
        if not sys.platform.startswith("linux"):
            return None
        parent = root if root is not None else _own_cgroup()
        if parent is None:
            return None
        base = parent / f"agentd-{_SAFE_NAME.sub('_', owner)}"
        existed = base.is_dir()  # a killed daemon's, with its leftovers: kept for `sweep`
        try:
            base.mkdir(exist_ok=True)
        except OSError:  # read-only (most containers), or not delegated to us
            return None
        # cgroup.kill (Linux 5.14+) is in every cgroup but the root: look in the one made.
        usable = (base / "cgroup.kill").exists() and os.access(base / "cgroup.procs", os.W_OK)
        if not existed or not usable:
            # Made again with the first toolbox's cgroup: nothing is left behind by a daemon
            # (or a test) that never closes its tree.
            with contextlib.suppress(OSError):
                base.rmdir()
        return cls(base) if usable else None

    def create(self, name: str) -> Path | None:
        """A cgroup for one toolbox (None if it cannot be made: the caller goes on without)."""
        path = self.base / _SAFE_NAME.sub("_", name)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return path

    @staticmethod
    def entering(cgroup: Path, argv: list[str]) -> list[str]:
        """`argv` run so that its process is in `cgroup` before it runs a line of its own:
        a `/bin/sh` that moves itself in, then execs `argv` (same pid). Moving the process
        after the spawn is too late: a short command has run, and a shell has forked,
        before the parent's write lands."""
        procs = str(cgroup / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" 2>/dev/null; exec "$@"', procs, *argv]

    @staticmethod
    def members(cgroup: Path) -> list[int]:
        try:
            return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, cgroup: Path, *, timeout: float = 2.0) -> list[int]:
        """SIGKILL everything in `cgroup`, wait (up to `timeout`) until it is empty, reap
        those that were this process's children, and remove it. Returns the pids killed."""
        victims = self.members(cgroup)
        if victims:
            try:
                (cgroup / "cgroup.kill").write_text("1")
            except OSError:
                for pid in victims:  # the kernel refused the one-shot kill: one by one
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            delay = 0.001
            while _populated(cgroup) and time.monotonic() < deadline:
                time.sleep(delay)  # a worker thread, never the event loop
                delay = min(delay * 2, 0.05)
            for pid in victims:  # orphans reparented to us (the child subreaper): reap them
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
        with contextlib.suppress(OSError):
            cgroup.rmdir()
        self.close()  # the owner's directory too, once its last toolbox is gone
        return victims

    def sweep(self) -> dict[str, list[int]]:
        """Kill and remove every toolbox cgroup of this owner: what a daemon that was killed
        left running. Returns {cgroup name: pids killed} for those that held processes."""
        killed: dict[str, list[int]] = {}
        try:
            children = [p for p in self.base.iterdir() if p.is_dir()]
        except OSError:
            return killed
        for cgroup in children:
            victims = self.kill(cgroup)
            if victims:
                killed[cgroup.name] = victims
        return killed

    def close(self) -> None:
        """Remove the owner's directory if nothing is left in it (the daemon is stopping)."""
        with contextlib.suppress(OSError):
            self.base.rmdir()


def _populated(cgroup: Path) -> bool:
    try:
        events = (cgroup / "cgroup.events").read_text()
    except OSError:
        return False
    return "populated 1" in events


def _own_cgroup() -> Path | None:
    """The daemon's cgroup in the cgroup2 hierarchy, or None (no cgroup2 mount)."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None or own.endswith(" (deleted)"):
        return None
    path = mount / own.lstrip("/")
    return path if path.is_dir() else None


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # "... mount point ... - fstype source options" (proc(5)); the fstype follows " - ".
        before, sep, after = line.partition(" - ")
        if sep and after.split(" ", 1)[0] == "cgroup2":
            fields = before.split(" ")
            if len(fields) >= 5:
                return Path(fields[4].replace("\\040", " "))
    return None
