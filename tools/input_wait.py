"""Is a terminal session's foreground job blocked waiting for the user to type something?

An agent that runs `npm init`, `git rebase -i`, a `sudo` prompt or a shell `read` otherwise
waits out its whole `yield_time_ms` for output that never comes. `waiting_for_input(fd)`
answers from the kernel's view of the session, on Linux:

1. the terminal's foreground process group, `os.tcgetpgrp` on the PTY master;
2. each process of that group (`/proc/PID/stat` field 5) that is asleep (state `S`);
3. what it sleeps in (`/proc/PID/syscall`: the system call and its arguments), and whether
   that call waits on the session's terminal (`/proc/PID/fd/N`, compared by device number
   with the process's controlling terminal, field 7 of its stat, or with `/dev/tty`):
   - `read`/`readv` of a terminal descriptor (bash `read`, Python `input()`, `cat`, sudo);
   - `epoll_wait` on an epoll set that watches a terminal descriptor for input
     (`/proc/PID/fdinfo/EPFD` lists the watched descriptors: Node's readline, `npm init`);
   - `select`/`pselect6`/`poll`/`ppoll` whose read set holds a terminal descriptor (vim,
     less): the sets are read from `/proc/PID/mem`, which the kernel allows for the
     daemon's own descendants.
   Where `/proc/PID/syscall` cannot be read (a kernel built without it), a process whose
   kernel wait channel (`/proc/PID/wchan`) is the terminal read (`n_tty_read`,
   `wait_woken`) and whose stdin is the terminal counts as waiting.

A job that reads its terminal but also something else (a dev server that listens for
keyboard shortcuts while it serves) is reported as waiting too once it has gone quiet: it
is, and the model gets its session ID either way. (exec asks only after a spell without
output, tools/exec.py `_watch_for_input`: output means nobody is waiting for the user.)
On macOS (and wherever there is no /proc) the answer is None: the platform offers no
documented way to see what another process is blocked on, so detection is unsupported
there and calls wait as before. Everything here blocks on /proc: call it from a worker thread.
"""

from __future__ import annotations

import os
import platform
import struct

__all__ = ["waiting_for_input"]

# System call numbers (asm/unistd.h) of the waits that matter, per architecture.
_X86_64 = {
    "read": (0, 19),  # read, readv
    "select": (23, 270),  # select, pselect6
    "poll": (7, 271),  # poll, ppoll
    "epoll": (232, 281, 441),  # epoll_wait, epoll_pwait, epoll_pwait2
}
_AARCH64 = {
    "read": (63, 65),
    "select": (72,),
    "poll": (73,),
    "epoll": (22, 441),
}
_SYSCALLS = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}.get(
    platform.machine().lower()
)
_READ_WCHANS = frozenset({"n_tty_read", "wait_woken"})
_DEV_TTY = os.makedev(5, 0)  # /dev/tty: "my controlling terminal"
_EPOLLIN, _POLLIN, _POLLPRI = 0x1, 0x1, 0x2
_MAX_POLL_FDS = 4096


def waiting_for_input(master_fd: int) -> bool | None:
    """True if the foreground job of the terminal behind `master_fd` is blocked reading it;
    False if not (or the terminal is gone); None where this cannot be known (no /proc)."""
    if not os.path.isdir("/proc/self"):
        return None
    try:
        foreground = os.tcgetpgrp(master_fd)
    except OSError:  # closed, or no foreground group (the session leader has exited)
        return False
    if foreground <= 0:
        return False
    return any(_blocked_on_terminal(pid) for pid in _group_members(foreground))


def _group_members(pgid: int) -> list[int]:
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = _stat_fields(int(entry))
        if stat is not None and stat[2] == str(pgid):
            members.append(int(entry))
    return members


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after `(comm)`: state, ppid, pgrp, session, tty_nr, …"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode(errors="replace").split()


def _blocked_on_terminal(pid: int) -> bool:
    stat = _stat_fields(pid)
    if stat is None or len(stat) < 5 or stat[0] != "S":
        return False
    terminal = int(stat[4])
    if terminal == 0:  # no controlling terminal
        return False
    call = _syscall(pid)
    if call is None or _SYSCALLS is None:
        return _wchan_reads_terminal(pid, terminal)
    number, args = call
    if number in _SYSCALLS["read"]:
        return _is_terminal(pid, args[0], terminal)
    if number in _SYSCALLS["epoll"]:
        return any(_is_terminal(pid, fd, terminal) for fd in _epoll_inputs(pid, args[0]))
    if number in _SYSCALLS["select"]:
        return any(_is_terminal(pid, fd, terminal) for fd in _select_inputs(pid, args))
    if number in _SYSCALLS["poll"]:
        return any(_is_terminal(pid, fd, terminal) for fd in _poll_inputs(pid, args))
    return False


def _syscall(pid: int) -> tuple[int, list[int]] | None:
    """The system call the process sleeps in and its six arguments, or None if unknown."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) < 7 or not fields[0].lstrip("-").isdigit():
        return None  # "running", or "-1 sp pc" (not in a system call)
    try:
        return int(fields[0]), [int(value, 16) for value in fields[1:7]]
    except ValueError:
        return None


def _is_terminal(pid: int, fd: int, terminal: int) -> bool:
    try:
        rdev = os.stat(f"/proc/{pid}/fd/{fd}").st_rdev
    except (OSError, OverflowError, ValueError):
        return False
    return rdev in (terminal, _DEV_TTY)


def _wchan_reads_terminal(pid: int, terminal: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        return False
    return wchan in _READ_WCHANS and _is_terminal(pid, 0, terminal)


def _epoll_inputs(pid: int, epoll_fd: int) -> list[int]:
    """Descriptors an epoll set watches for input (`tfd: N events: HEX` in its fdinfo)."""
    try:
        with open(f"/proc/{pid}/fdinfo/{epoll_fd}") as f:
            lines = f.read().splitlines()
    except (OSError, OverflowError):
        return []
    watched = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "tfd:" and fields[2] == "events:":
            try:
                if int(fields[3], 16) & _EPOLLIN:
                    watched.append(int(fields[1]))
            except ValueError:
                continue
    return watched


def _read_memory(pid: int, address: int, size: int) -> bytes | None:
    if address == 0 or size <= 0:
        return None
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            data = mem.read(size)
    except (OSError, OverflowError, ValueError):
        return None
    return data if len(data) == size else None


def _select_inputs(pid: int, args: list[int]) -> list[int]:
    """Descriptors in a select/pselect6 read set (args: nfds, readfds, …)."""
    nfds, readfds = args[0], args[1]
    if not 0 < nfds <= 65536:
        return []
    data = _read_memory(pid, readfds, (nfds + 7) // 8)
    if data is None:
        return []
    # fd_set is an array of longs; on the little-endian machines this supports, bit N of
    # the set is bit N % 8 of byte N // 8.
    return [fd for fd in range(nfds) if data[fd // 8] >> (fd % 8) & 1]


def _poll_inputs(pid: int, args: list[int]) -> list[int]:
    """Descriptors a poll/ppoll waits on for input (args: fds, nfds, …)."""
    address, count = args[0], args[1]
    if not 0 < count <= _MAX_POLL_FDS:
        return []
    data = _read_memory(pid, address, count * 8)  # struct pollfd { int fd; short events, re; }
    if data is None:
        return []
    inputs = []
    for fd, events, _revents in struct.iter_unpack("=ihh", data):
        if fd >= 0 and events & (_POLLIN | _POLLPRI):
            inputs.append(fd)
    return inputs
