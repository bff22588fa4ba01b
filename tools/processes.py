"""Starting commands in a session of their own, and finding every process they leave behind.

`spawn_pty` starts a command as the leader of a new session whose controlling terminal is a
fresh pseudo-terminal; `spawn_pipes` does the same with pipes instead of a terminal. Either
way the child is its own session and process group (pid == pgid == sid), so the whole tree
can be signalled at once.

On Linux the PTY child is started with `posix_spawn` (through ctypes): glibc starts it with
`clone(CLONE_VFORK)`, so the cost does not grow with the daemon's memory the way a `fork()`
does (ptyprocess's fork + exec costs about 1 ms more per command here), and the child runs no
Python. It calls `setsid()` and then opens the terminal by name, which makes it the
session's controlling terminal, so Ctrl-C written to the PTY interrupts the foreground job.
Elsewhere, or when the C library lacks what that needs, `ptyprocess` does the fork.

`scan_processes` reads the process table (from /proc on Linux, through psutil elsewhere: see
tools/proctable.py), and `ProcessGroup.members` finds a
session's processes in it: everything in its session or process group, their descendants,
processes seen earlier that left the group with `setsid`/`setpgid`, and every process that
carries the group's tag. The tag is an environment variable (`AGENTD_PROCESS_TAG`) set on
every spawned command and inherited by whatever it starts, readable in its environment: a
double-forked `setsid` daemon whose parent died before any scan saw it is still found by it,
and so are the leftovers of a daemon that was killed, by the next daemon on the same state
(`kill_tagged`, in tools/proctable.py). A process can escape the tag only by clearing its
environment on purpose.

`become_subreaper` (tools/libc.py) makes the daemon the child subreaper of its descendants
(Linux `PR_SET_CHILD_SUBREAPER`): orphans are reparented to it instead of to init, so they
stay in the daemon's process tree while it lives; `reap_orphans` collects the ones that die.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import termios
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.libc import LIBC, libc_function
from tools.proctable import (
    PROCESS_TAG_VAR,
    ProcessTable,
    ProcInfo,
    default_table,
    read_proc,
    read_tag,
)

__all__ = [
    "PROCESS_TAG_VAR",
    "ProcInfo",
    "ProcessGroup",
    "Spawned",
    "read_proc",
    "read_tag",
    "reap_orphans",
    "scan_processes",
    "signal_processes",
    "spawn_pipes",
    "spawn_pty",
]


@dataclass
class Spawned:
    """A started child: its pid (also its pgid and sid) and the parent's ends of its stdio."""

    pid: int
    read_fd: int
    write_fd: int
    tty: bool
    popen: subprocess.Popen[bytes] | None = None
    closed: bool = False
    stdin_closed: bool = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.popen is not None:
            for stream in (self.popen.stdin, self.popen.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            return
        with contextlib.suppress(OSError):
            os.close(self.read_fd)

    def close_stdin(self) -> None:
        """Pipes only: close the child's stdin so it reads EOF."""
        if self.popen is not None and self.popen.stdin is not None and not self.stdin_closed:
            self.stdin_closed = True
            with contextlib.suppress(OSError):
                self.popen.stdin.close()


# -- spawning ----------------------------------------------------------------------------


def spawn_pty(
    argv: list[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    rows: int = 24,
    cols: int = 80,
) -> Spawned:
    """Start `argv` (argv[0] an absolute path) in a new session on a new PTY.

    Raises OSError when the program cannot be executed or `cwd` cannot be entered.
    """
    if _LIBC_SPAWN is not None:
        return _LIBC_SPAWN.spawn(argv, cwd=cwd, env=env, rows=rows, cols=cols)
    return _spawn_with_ptyprocess(argv, cwd=cwd, env=env, rows=rows, cols=cols)


def spawn_pipes(argv: list[str], *, cwd: str, env: Mapping[str, str]) -> Spawned:
    """Start `argv` in a new session with stdin a pipe and stdout+stderr one pipe."""
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        bufsize=0,
    )
    assert popen.stdin is not None and popen.stdout is not None
    os.set_blocking(popen.stdout.fileno(), False)
    os.set_blocking(popen.stdin.fileno(), False)
    return Spawned(
        pid=popen.pid,
        read_fd=popen.stdout.fileno(),
        write_fd=popen.stdin.fileno(),
        tty=False,
        popen=popen,
    )


def fast_pty_spawn_available() -> bool:
    """Whether PTY children start through posix_spawn rather than ptyprocess's fork."""
    return _LIBC_SPAWN is not None


class _LibcSpawn:
    """posix_spawn with setsid, the PTY opened by name, chdir and signal defaults."""

    # Flag values shared by glibc and musl (Linux only; macOS numbers differ).
    SETSIGDEF = 0x04
    SETSIGMASK = 0x08
    SETSID = 0x80
    # Opaque libc structs, over-allocated: glibc's are 80/336 bytes, sigset_t is 128.
    STRUCT_BYTES = 1024

    def __init__(self) -> None:
        c_void_p, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        self.init_actions = _fn("posix_spawn_file_actions_init", [c_void_p])
        self.destroy_actions = _fn("posix_spawn_file_actions_destroy", [c_void_p])
        self.add_open = _fn(
            "posix_spawn_file_actions_addopen",
            [c_void_p, c_int, c_char_p, c_int, ctypes.c_uint],
        )
        self.add_dup2 = _fn("posix_spawn_file_actions_adddup2", [c_void_p, c_int, c_int])
        self.add_chdir = _fn("posix_spawn_file_actions_addchdir_np", [c_void_p, c_char_p])
        # glibc >= 2.34; None before
        self.add_closefrom = libc_function(
            "posix_spawn_file_actions_addclosefrom_np", [c_void_p, c_int]
        )
        self.init_attr = _fn("posix_spawnattr_init", [c_void_p])
        self.destroy_attr = _fn("posix_spawnattr_destroy", [c_void_p])
        self.set_flags = _fn("posix_spawnattr_setflags", [c_void_p, ctypes.c_short])
        self.set_sigdefault = _fn("posix_spawnattr_setsigdefault", [c_void_p, c_void_p])
        self.set_sigmask = _fn("posix_spawnattr_setsigmask", [c_void_p, c_void_p])
        self.sigemptyset = _fn("sigemptyset", [c_void_p])
        self.sigaddset = _fn("sigaddset", [c_void_p, c_int])
        self.posix_spawn = _fn(
            "posix_spawn",
            [
                ctypes.POINTER(ctypes.c_int),
                c_char_p,
                c_void_p,
                c_void_p,
                ctypes.POINTER(c_char_p),
                ctypes.POINTER(c_char_p),
            ],
        )
        # Signals the daemon ignores (Python ignores SIGPIPE and SIGXFSZ) stay ignored
        # across exec unless reset: `yes | head` would then print "Broken pipe" errors.
        self.default_signals = sorted(
            int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
        )

    def spawn(
        self, argv: list[str], *, cwd: str, env: Mapping[str, str], rows: int, cols: int
    ) -> Spawned:
        master, slave = os.openpty()
        try:
            name = os.ttyname(slave)
            termios.tcsetwinsize(slave, (rows, cols))
            pid = self._spawn(argv, cwd=cwd, env=env, tty_name=name)
        except BaseException:
            os.close(master)
            raise
        finally:
            # The child has opened the terminal by name (posix_spawn returns after exec).
            os.close(slave)
        os.set_blocking(master, False)
        return Spawned(pid=pid, read_fd=master, write_fd=master, tty=True)

    def _spawn(self, argv: list[str], *, cwd: str, env: Mapping[str, str], tty_name: str) -> int:
        actions = ctypes.create_string_buffer(self.STRUCT_BYTES)
        attr = ctypes.create_string_buffer(self.STRUCT_BYTES)
        _check(self.init_actions(actions))
        try:
            _check(self.init_attr(attr))
            try:
                # setsid() runs before the file actions, so opening the terminal (without
                # O_NOCTTY) makes it the new session's controlling terminal.
                _check(self.add_open(actions, 0, os.fsencode(tty_name), os.O_RDWR, 0))
                _check(self.add_dup2(actions, 0, 1))
                _check(self.add_dup2(actions, 0, 2))
                _check(self.add_chdir(actions, os.fsencode(cwd)))
                if self.add_closefrom is not None:
                    _check(self.add_closefrom(actions, 3))
                defaults = ctypes.create_string_buffer(self.STRUCT_BYTES)
                self.sigemptyset(defaults)
                for signum in self.default_signals:
                    self.sigaddset(defaults, signum)
                empty = ctypes.create_string_buffer(self.STRUCT_BYTES)
                self.sigemptyset(empty)
                _check(self.set_sigdefault(attr, defaults))
                _check(self.set_sigmask(attr, empty))
                _check(self.set_flags(attr, self.SETSID | self.SETSIGDEF | self.SETSIGMASK))
                c_argv = _cstrings(argv)
                c_env = _cstrings(f"{k}={v}" for k, v in env.items())
                pid = ctypes.c_int(0)
                rc = self.posix_spawn(
                    ctypes.byref(pid), os.fsencode(argv[0]), actions, attr, c_argv, c_env
                )
                if rc != 0:
                    raise OSError(rc, os.strerror(rc), argv[0])
                return pid.value
            finally:
                self.destroy_attr(attr)
        finally:
            self.destroy_actions(actions)


def _fn(name: str, argtypes: list[Any]) -> Any:
    """A function posix_spawn needs: AttributeError where this C library lacks it."""
    func = libc_function(name, argtypes)
    if func is None:
        raise AttributeError(name)
    return func


def _check(rc: int) -> None:
    if rc != 0:
        raise OSError(rc, os.strerror(rc))


def _cstrings(values: Iterable[str]) -> ctypes.Array[ctypes.c_char_p]:
    encoded = [os.fsencode(v) for v in values]
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


def _load_libc_spawn() -> _LibcSpawn | None:
    if LIBC is None:  # not Linux
        return None
    try:
        return _LibcSpawn()
    except AttributeError:  # no such symbol: old glibc (< 2.29) or another libc
        return None


_LIBC_SPAWN = _load_libc_spawn()


def _spawn_with_ptyprocess(
    argv: list[str], *, cwd: str, env: Mapping[str, str], rows: int, cols: int
) -> Spawned:
    from ptyprocess import PtyProcess

    proc = PtyProcess.spawn(
        argv, cwd=cwd, env=dict(env), dimensions=(rows, cols), preexec_fn=_child_signal_defaults
    )
    # Take the descriptor over and retire the PtyProcess: its close() and __del__ would
    # sleep (delayafterclose) and reap the child, which the session manager does itself.
    proc.delayafterclose = 0
    proc.delayafterterminate = 0
    fd = os.dup(proc.fd)
    proc.fileobj.close()
    proc.closed = True
    os.set_blocking(fd, False)
    return Spawned(pid=proc.pid, read_fd=fd, write_fd=fd, tty=True)


def _child_signal_defaults() -> None:
    for signum in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)):
        if signum is not None:
            signal.signal(signum, signal.SIG_DFL)


# -- the process table (tools/proctable.py) -----------------------------------------------


def scan_processes(
    *, tags: bool = False, procs: ProcessTable | None = None
) -> dict[int, ProcInfo] | None:
    """Every process, from `procs` (default: /proc on Linux, psutil elsewhere), or None when
    the table cannot be read. With `tags`, each process's PROCESS_TAG_VAR from its
    environment too (zombies have none).

    Blocking (a few ms with a hundred processes): call it from a worker thread."""
    return (procs or default_table()).scan(tags=tags)


@dataclass
class ProcessGroup:
    """The processes of one spawned session, found again through the process table."""

    leader: int
    # The PROCESS_TAG_VAR value its processes carry (None: untagged, found by lineage only).
    tag: str | None = None
    leader_reaped: bool = False
    escaped: dict[int, int] = field(default_factory=dict)  # pid -> start time

    def reused(self, table: Mapping[int, ProcInfo]) -> bool:
        """True when the leader was reaped and its pid now names another process: its sid
        and pgid may then be someone else's, so only remembered escapees can be trusted."""
        return self.leader_reaped and self.leader in table

    def members(self, table: Mapping[int, ProcInfo]) -> set[int]:
        """Live (non-zombie) processes of this session: group, session, descendants."""
        roots: set[int] = set()
        if not self.reused(table):
            roots = {p for p, i in table.items() if self.leader in (i.sid, i.pgrp)}
        roots |= {p for p, start in self.escaped.items() if p in table and table[p].start == start}
        if self.tag is not None:
            roots |= {p for p, info in table.items() if info.tag == self.tag}
        children: dict[int, list[int]] = {}
        for pid, info in table.items():
            children.setdefault(info.ppid, []).append(pid)
        found, stack = set(roots), list(roots)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        me = os.getpid()
        live = {p for p in found if table[p].state not in ("Z", "X") and p != me}
        # Remember processes that left the session so they are found after their parent
        # dies (they are reparented to init and no longer descend from anything of ours).
        self.escaped = {
            p: table[p].start
            for p in live
            if table[p].sid != self.leader and table[p].pgrp != self.leader
        }
        return live


def signal_processes(
    group: ProcessGroup, members: Iterable[int], signum: int, *, whole_group: bool
) -> None:
    """Send `signum` to the process group (when it is still ours) and to each member."""
    if whole_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group.leader, signum)
    for pid in members:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
        except OSError as exc:  # pragma: no cover - unexpected errno
            if exc.errno != errno.ESRCH:
                raise


# -- orphans and leftovers ---------------------------------------------------------------


def reap_orphans(groups: Iterable[ProcessGroup], table: Mapping[int, ProcInfo]) -> int:
    """Reap zombies reparented to this process (as subreaper) that belonged to `groups`:
    in one of their sessions or process groups, or remembered as escapees. Leaders are
    left alone (their sessions reap them and read their exit status). Returns how many."""
    me = os.getpid()
    leaders = set()
    owned: set[int] = set()
    for group in groups:
        leaders.add(group.leader)
        owned.update(group.escaped)
    reaped = 0
    for pid, info in table.items():
        if info.ppid != me or info.state != "Z" or pid in leaders:
            continue
        if info.sid in leaders or info.pgrp in leaders or pid in owned:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
            except ChildProcessError:
                pass
    return reaped
