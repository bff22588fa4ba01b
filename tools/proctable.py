"""The process table behind one small interface: Linux's /proc, or psutil elsewhere (macOS).

The tools need three things of the operating system's processes: the table itself (each
process's parent, process group, session, state, start time and, when asked, the
`AGENTD_PROCESS_TAG` marker from its environment), from which `descendants` follows; the
listening TCP sockets of processes (`listening`, `listening_ports`: port -> pid); and a
process's environment. `ProcTable` reads /proc directly, as the tools always did on Linux (a
few ms for a hundred processes); `PsutilTable` asks psutil, which works where there is no
/proc. `default_table()` picks the first on Linux and the second elsewhere; tests pass
`PsutilTable()` explicitly (`ToolSettings.process_table`) to run the portable path on Linux.

Differences the callers allow for: psutil has no process group or session, so `PsutilTable`
takes them from `os.getpgid`/`os.getsid` (0 when the OS refuses); its start times are
milliseconds since the epoch rather than clock ticks after boot (each is compared only with
values from the same table); and it sees only the sockets of processes the daemon may inspect
(its own user's, without root on macOS), where /proc also shows other users' sockets without
their owner.

`kill_tagged` kills, through the table, what a killed daemon's commands left running: it is
here rather than with the spawning code (tools/processes.py) so that a starting daemon, which
calls it before it listens, does not load the spawning code's C library bindings.

Every method blocks (it reads the OS): call them from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import NamedTuple, Protocol

from tools.sock_diag import listening_tcp

__all__ = [
    "PROCESS_TAG_VAR",
    "ListeningSocket",
    "ProcInfo",
    "ProcTable",
    "ProcessTable",
    "PsutilTable",
    "default_table",
    "descendants",
    "kill_tagged",
    "listening_ports",
    "parse_proc_net_tcp",
    "read_proc",
    "read_tag",
]

PROCESS_TAG_VAR = "AGENTD_PROCESS_TAG"
"""The environment variable every spawned command carries: `<owner>/<toolbox>` (see
`tools.processes.ProcessGroup.tag`); its descendants inherit it."""
_TAG_NEEDLE = PROCESS_TAG_VAR.encode() + b"="


class ProcInfo(NamedTuple):
    """One process as the table saw it. (Named tuples, this and `ListeningSocket`: a scan
    makes one per process, and a frozen dataclass costs several times as much to make, and to
    define at start-up.)"""

    pid: int
    ppid: int
    pgrp: int
    sid: int
    state: str  # as /proc spells it: "Z" a zombie, "X" dead
    start: int  # with the pid, identifies one process; larger is newer (same table only)
    tag: str | None = None  # PROCESS_TAG_VAR from its environment, when read and present


class ListeningSocket(NamedTuple):
    """One listening TCP socket: its address, port and (if known) the process that owns it."""

    address: str
    port: int
    pid: int | None = None
    inode: int | None = None


class ProcessTable(Protocol):
    """What the tools read about processes (see the module docstring)."""

    name: str

    def scan(self, *, tags: bool = False) -> dict[int, ProcInfo] | None:
        """Every process (None when the table cannot be read at all); with `tags`, each live
        process's PROCESS_TAG_VAR too."""
        ...

    def info(self, pid: int) -> ProcInfo | None:
        """One process (without its tag), or None when it is gone."""
        ...

    def environ(self, pid: int) -> dict[str, str] | None:
        """The process's environment, or None (gone, a zombie, or not ours to read)."""
        ...

    def command(self, pid: int) -> str | None:
        """The process's short command name, or None."""
        ...

    def listening(self, pids: Iterable[int] | None = None) -> list[ListeningSocket]:
        """Listening TCP sockets: of `pids`, or every one this table can see."""
        ...

    def listeners_key(self) -> Hashable | None:
        """A cheap look at the listening TCP sockets, without their owners: a value that
        changes whenever a socket starts or stops listening; None where there is no cheap
        look (callers then look in full every time)."""
        ...


def descendants(table: Mapping[int, ProcInfo], pid: int) -> set[int]:
    """Every process below `pid` in a scanned table (children, theirs, ...), not `pid`."""
    children: dict[int, list[int]] = {}
    for child, info in table.items():
        children.setdefault(info.ppid, []).append(child)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found and child != pid:
                found.add(child)
                stack.append(child)
    return found


def listening_ports(procs: ProcessTable, pids: Iterable[int]) -> dict[int, int]:
    """The TCP ports `pids` listen on: port -> pid (the lowest pid when several share one)."""
    ports: dict[int, int] = {}
    for sock in procs.listening(pids):
        if sock.pid is not None and (sock.port not in ports or sock.pid < ports[sock.port]):
            ports[sock.port] = sock.pid
    return ports


# -- Linux: /proc ---------------------------------------------------------------------------


def read_proc(pid: int) -> ProcInfo | None:
    """One process from /proc/PID/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcInfo(
            pid=pid,
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            sid=int(fields[3]),
            state=fields[0].decode(),
            start=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def read_tag(pid: int) -> str | None:
    """The process's PROCESS_TAG_VAR from /proc, or None (no such variable, gone, or not
    readable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    if environ.startswith(_TAG_NEEDLE):
        start = len(_TAG_NEEDLE)
    else:
        found = environ.find(b"\0" + _TAG_NEEDLE)
        if found == -1:
            return None
        start = found + 1 + len(_TAG_NEEDLE)
    end = environ.find(b"\0", start)
    return environ[start : end if end != -1 else len(environ)].decode(errors="replace")


def parse_proc_net_tcp(text: str, *, ipv6: bool) -> list[ListeningSocket]:
    """The LISTEN sockets (state 0A) of a /proc/net/tcp{,6} table, with their inodes."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":
            continue
        address_hex, port_hex = fields[1].split(":")
        sockets.append(
            ListeningSocket(
                address=_decode_address(address_hex, ipv6),
                port=int(port_hex, 16),
                inode=int(fields[9]),
            )
        )
    return sockets


def _decode_address(hex_address: str, ipv6: bool) -> str:
    raw = bytes.fromhex(hex_address)
    # the kernel prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET6 if ipv6 else socket.AF_INET, words)


class ProcTable:
    """Linux's /proc, read directly (the fast path)."""

    name = "proc"

    def scan(self, *, tags: bool = False) -> dict[int, ProcInfo] | None:
        try:
            entries = os.listdir("/proc")
        except OSError:
            return None
        table: dict[int, ProcInfo] = {}
        for entry in entries:
            if not entry.isdigit():
                continue
            info = read_proc(int(entry))
            if info is None:
                continue
            if tags and info.state not in ("Z", "X"):
                tag = read_tag(info.pid)
                if tag is not None:
                    info = info._replace(tag=tag)
            table[info.pid] = info
        return table

    def info(self, pid: int) -> ProcInfo | None:
        return read_proc(pid)

    def environ(self, pid: int) -> dict[str, str] | None:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0"))
        return {name: value for name, sep, value in pairs if sep}

    def command(self, pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/comm") as comm:
                return comm.read().strip()
        except OSError:
            return None

    def listeners_key(self) -> Hashable | None:
        return frozenset((s.address, s.port, s.inode) for s in self._listening_sockets())

    @staticmethod
    def _listening_sockets() -> list[ListeningSocket]:
        diagnosed = listening_tcp()  # the kernel's listeners only: far cheaper when it works
        if diagnosed is not None:
            return [ListeningSocket(a, port, inode=inode) for a, port, inode in diagnosed]
        sockets: list[ListeningSocket] = []
        for name, ipv6 in (("tcp", False), ("tcp6", True)):
            try:
                with open(f"/proc/net/{name}") as table:
                    sockets += parse_proc_net_tcp(table.read(), ipv6=ipv6)
            except OSError:
                continue
        return sockets

    def listening(self, pids: Iterable[int] | None = None) -> list[ListeningSocket]:
        sockets = self._listening_sockets()
        wanted = {s.inode for s in sockets if s.inode}
        owners: dict[int, int] = {}
        if pids is None:
            try:
                candidates = [int(e) for e in os.listdir("/proc") if e.isdigit()]
            except OSError:
                candidates = []
        else:
            candidates = list(pids)
        for pid in candidates if wanted else ():
            fd_dir = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in wanted:
                        owners.setdefault(inode, pid)
            if len(owners) == len(wanted):
                break
        found = [
            ListeningSocket(s.address, s.port, owners.get(s.inode or -1), s.inode) for s in sockets
        ]
        return found if pids is None else [s for s in found if s.pid is not None]


# -- elsewhere: psutil ----------------------------------------------------------------------


class PsutilTable:
    """psutil's view of the processes: the portable path (macOS), also usable on Linux."""

    name = "psutil"

    def scan(self, *, tags: bool = False) -> dict[int, ProcInfo] | None:
        table: dict[int, ProcInfo] = {}
        import psutil as ps  # on first use: neither start-up nor Linux loads it

        for pid in ps.pids():
            info = self.info(pid)
            if info is None:
                continue
            if tags and info.state not in ("Z", "X"):
                environ = self.environ(pid)
                tag = environ.get(PROCESS_TAG_VAR) if environ is not None else None
                if tag is not None:
                    info = info._replace(tag=tag)
            table[pid] = info
        return table

    def info(self, pid: int) -> ProcInfo | None:
        import psutil as ps  # on first use: neither start-up nor Linux loads it

        try:
            proc = ps.Process(pid)
            with proc.oneshot():
                ppid, status, created = proc.ppid(), proc.status(), proc.create_time()
        except (ps.NoSuchProcess, ps.AccessDenied):
            return None
        states = {ps.STATUS_ZOMBIE: "Z", ps.STATUS_DEAD: "X"}
        return ProcInfo(
            pid=pid,
            ppid=ppid,
            pgrp=_os_id(os.getpgid, pid),
            sid=_os_id(os.getsid, pid),
            state=states.get(status, "R"),
            start=round(created * 1000),
        )

    def environ(self, pid: int) -> dict[str, str] | None:
        import psutil as ps  # on first use: neither start-up nor Linux loads it

        try:
            return dict(ps.Process(pid).environ())
        # OSError: a zombie's environment on macOS
        except (ps.NoSuchProcess, ps.AccessDenied, OSError):
            return None

    def command(self, pid: int) -> str | None:
        import psutil as ps  # on first use: neither start-up nor Linux loads it

        try:
            return ps.Process(pid).name()
        except (ps.NoSuchProcess, ps.AccessDenied):
            return None

    def listening(self, pids: Iterable[int] | None = None) -> list[ListeningSocket]:
        # Per process: psutil.net_connections() needs root on macOS; a process's own
        # sockets do not (for the daemon's own user's processes).
        import psutil as ps  # on first use: neither start-up nor Linux loads it

        sockets: list[ListeningSocket] = []
        for pid in ps.pids() if pids is None else pids:
            try:
                connections = ps.Process(pid).net_connections(kind="tcp")
            except (ps.NoSuchProcess, ps.AccessDenied, OSError):
                continue
            for conn in connections:
                if conn.status == ps.CONN_LISTEN and conn.laddr:
                    address = conn.laddr.ip or ("::" if conn.family == socket.AF_INET6 else "")
                    sockets.append(ListeningSocket(address or "0.0.0.0", conn.laddr.port, pid))
        return sockets

    def listeners_key(self) -> Hashable | None:
        return None  # psutil sees sockets only process by process: no cheap look


def _os_id(call: Callable[[int], int], pid: int) -> int:
    try:
        return call(pid)
    except OSError:  # gone, or another session's process (some systems refuse getsid)
        return 0


def default_table() -> ProcessTable:
    """/proc on Linux (when mounted), psutil elsewhere."""
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        return ProcTable()
    return PsutilTable()


def kill_tagged(
    owns: Callable[[str], bool], *, timeout: float = 2.0, procs: ProcessTable | None = None
) -> dict[int, str]:
    """SIGKILL every process whose tag `owns` accepts, with its descendants, and wait (up
    to `timeout` seconds) until they are gone. For a daemon starting on the state a killed
    one left: what that one's commands left running. Returns {pid: tag} of those killed.

    Blocking: call it from a worker thread."""
    procs = procs or default_table()
    table = procs.scan(tags=True)
    if table is None:
        return {}
    me = os.getpid()
    roots = {p: i.tag for p, i in table.items() if i.tag is not None and owns(i.tag) and p != me}
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    victims: dict[int, str] = {}
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in victims or pid == me:
            continue
        victims[pid] = roots.get(pid) or ""
        stack.extend(children.get(pid, ()))
    starts = {pid: table[pid].start for pid in victims}
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while time.monotonic() < deadline:
        remaining = [p for p in victims if _alive(procs, p, starts[p])]
        if not remaining:
            break
        for pid in remaining:  # our own children (we are their subreaper): reap them
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(delay)  # a worker thread, never the event loop
        delay = min(delay * 2, 0.05)
    return victims


def _alive(procs: ProcessTable, pid: int, start: int) -> bool:
    info = procs.info(pid)
    return info is not None and info.start == start and info.state not in ("Z", "X")
