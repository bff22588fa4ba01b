"""exec_command and write_stdin: commands in real terminals, kept alive as sessions.

The tools follow OpenAI Codex's unified exec (same names, arguments and reply header) so
models trained on it call them correctly. `exec_command` starts `shell -lc cmd` on a fresh
PTY, in a session and process group of its own, and waits until the command exits or
`yield_time_ms` passes; a command still running then stays alive as a session that
`write_stdin` types into and polls. `bash` is the one-shot alias from the older docs.

Everything is driven by event-loop callbacks, never by blocking calls: the PTY master is
read non-blockingly when the loop reports it readable, and the exit is noticed through a
pidfd (Linux) or a WNOHANG poll, then reaped with `waitpid`. Each session keeps at most a
fixed window of unread output (its head and a rolling tail), so a command printing gigabytes
costs a bounded amount of memory, and the model sees head and tail with a marker between.

Every command carries a tag in its environment (`AGENTD_PROCESS_TAG=<owner>/<toolbox>/<n>`,
see tools/processes.py) that whatever it starts inherits. Closing a session or the toolbox
signals the session's whole process group plus every process found to belong to it (its
session, descendants, and everything carrying its tag, however it detached), escalates to
SIGKILL after a grace period, and reaps the leader and any orphan reparented to the daemon:
no orphans, no zombies. The process table is read in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import os
import shutil
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
from pydantic import AfterValidator, Field

from tools.base import (
    NoNulStr,
    Tool,
    ToolArgs,
    Toolbox,
    ToolContext,
    ToolError,
    ToolResult,
    daemon_environ,
    truncate_middle,
)
from tools.cgroups import CgroupTree
from tools.input_wait import waiting_for_input
from tools.processes import (
    PROCESS_TAG_VAR,
    ProcessGroup,
    ProcInfo,
    Spawned,
    reap_orphans,
    scan_processes,
    signal_processes,
    spawn_pipes,
    spawn_pty,
)
from tools.proctable import ProcessTable

__all__ = [
    "Bash",
    "ExecCommand",
    "SessionManager",
    "WriteStdin",
    "command_env",
    "live_session_count",
]

MIN_YIELD_MS = 250
# Checking whether the foreground job waits for terminal input: first after this many
# seconds (most commands are over by then), then at growing intervals up to the last; a
# verdict counts once two checks in a row agree (typed input may still be on its way to the
# reader when the first one looks).
INPUT_CHECK_FIRST_S = 0.05
INPUT_CHECK_MAX_S = 0.25
INPUT_WAIT_HEADER = "Process is waiting for input"
MAX_YIELD_MS = 30_000
DEFAULT_EXEC_YIELD_MS = 10_000
DEFAULT_WRITE_YIELD_MS = 250
DEFAULT_MAX_OUTPUT_TOKENS = 10_000
BYTES_PER_TOKEN = 4
# Unread output kept per session: the first HEAD bytes and the last TAIL bytes.
WINDOW_HEAD_BYTES = 512 * 1024
WINDOW_TAIL_BYTES = 512 * 1024
MAX_OUTPUT_TOKENS = (WINDOW_HEAD_BYTES + WINDOW_TAIL_BYTES) // BYTES_PER_TOKEN
READ_SIZE = 65536
READS_PER_WAKEUP = 32
TERMINAL_ROWS, TERMINAL_COLS = 24, 200
DEFAULT_SHELL = "/bin/bash"
BASH_DEFAULT_TIMEOUT_MS = 120_000
BASH_MAX_TIMEOUT_MS = 600_000

PLAIN_TERMINAL_ENV = {
    "TERM": "dumb",
    "NO_COLOR": "1",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "GH_PAGER": "cat",
    "LANG": "C.UTF-8",
}


def command_env(toolbox_env: dict[str, str], call_env: dict[str, str] | None) -> dict[str, str]:
    """The daemon's environment less its credentials, plain-terminal settings, then the
    agent's and the call's."""
    return {**daemon_environ(), **PLAIN_TERMINAL_ENV, **toolbox_env, **(call_env or {})}


# -- unread output -----------------------------------------------------------------------


@dataclass
class Output:
    """Output taken from a session: `head` and `tail` with `dropped` bytes lost between."""

    head: bytes = b""
    tail: bytes = b""
    dropped: int = 0
    total: int = 0


class OutputWindow:
    """Unread output bounded to head + tail bytes; what falls out of the middle is counted.

    The tail is a queue of the chunks as read, trimmed a whole chunk at a time (so it
    briefly holds up to one chunk more than `tail_limit`) and exactly on `take()`.
    """

    def __init__(self, head_limit: int = WINDOW_HEAD_BYTES, tail_limit: int = WINDOW_TAIL_BYTES):
        self.head_limit = head_limit
        self.tail_limit = tail_limit
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self._dropped = 0
        self._total = 0

    def __len__(self) -> int:
        return len(self._head) + self._tail_len

    def append(self, data: bytes) -> None:
        self._total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:  # the head fills first; the tail only starts once it is full
            self._head += data[:room]
            if len(data) <= room:
                return
            data = data[room:]
        if not data:
            return
        tail = self._tail
        tail.append(data)
        self._tail_len += len(data)
        while tail and self._tail_len - len(tail[0]) >= self.tail_limit:
            first = tail.popleft()
            self._tail_len -= len(first)
            self._dropped += len(first)

    def take(self) -> Output:
        tail = b"".join(self._tail)
        excess = max(len(tail) - self.tail_limit, 0)
        out = Output(bytes(self._head), tail[excess:], self._dropped + excess, self._total)
        self._head.clear()
        self._tail.clear()
        self._tail_len = self._dropped = self._total = 0
        return out


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def _unfinished_utf8(data: bytes) -> int:
    """How many bytes at the end of `data` begin a UTF-8 character without finishing it
    (0–3): the rest of it may still come."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(data[-3:])  # a character is at most 4 bytes: 3 can begin one
    return len(decoder.getstate()[0])


def _continuing_utf8(data: bytes) -> int:
    """How many bytes at the start of `data` continue a character that began before it."""
    count = 0
    while count < min(len(data), 3) and 0x80 <= data[count] <= 0xBF:
        count += 1
    return count


def clip_output(out: Output, max_bytes: int) -> tuple[str, int]:
    """The text the model reads: head and tail within ~max_bytes; returns (text, bytes cut).
    Cuts fall between characters: one a cut would split is left out whole."""
    if out.dropped == 0:
        return truncate_middle(_decode(out.head + out.tail), max_bytes)
    # The window already lost the middle: keep what fits from each side, one marker.
    head_keep = min(len(out.head), max_bytes // 2)
    tail_keep = min(len(out.tail), max_bytes - head_keep)
    head_keep = min(len(out.head), max_bytes - tail_keep)
    head = out.head[:head_keep]
    head = head[: len(head) - _unfinished_utf8(head)]
    tail = out.tail[len(out.tail) - tail_keep :] if tail_keep else b""
    tail = tail[_continuing_utf8(tail) :]
    cut = out.total - len(head) - len(tail)
    marker = f"\n…[{cut} bytes (~{cut // BYTES_PER_TOKEN} tokens) truncated]…\n"
    return _decode(head) + marker + _decode(tail), cut


# -- sessions ----------------------------------------------------------------------------


class Session:
    """One running command: its process, its unread output and how it ended."""

    def __init__(
        self,
        session_id: int,
        command: str,
        proc: Spawned,
        loop: asyncio.AbstractEventLoop,
        *,
        tag: str | None = None,
        live_limit: int | None = None,
    ):
        self.id = session_id
        self.command = command
        self.proc = proc
        self.pid = proc.pid
        self.group = ProcessGroup(proc.pid, tag=tag)
        self.window = OutputWindow()
        self.lock = asyncio.Lock()
        self.started = self.last_used = time.monotonic()
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.exited = False  # the leader was reaped
        self.eof = False  # the output reached end of file
        self.bytes_read = 0  # every byte of output read so far (the window forgets)
        self.finished = False  # exited, and every byte of output read (or given up on)
        # asyncio's Event (and Lock) on purpose, like the reader below: they are set from
        # event-loop callbacks, and `changed` is cleared and reused on every wakeup of a
        # follow (docs/design.md, Concurrency).
        self.changed = asyncio.Event()
        self.exited_event = asyncio.Event()
        self._loop = loop
        self._reading = False
        self._pidfd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._poll_delay = 0.001
        self._live: bytearray | None = None  # pending live output while a call is attached
        self._live_limit = live_limit  # bytes of live output per call (None: no limit)
        self._live_sent = 0
        self._live_dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # the bytes of a character the last `take_output` left out (its end was not read
        # yet), given with the next
        self._held = b""
        self._write_ready: asyncio.Future[None] | None = None
        # asyncio on purpose (docs/design.md, Concurrency): output is drained by an event-loop
        # callback on readiness, a burst per wakeup; a task parked in anyio.wait_readable
        # would cost a task switch per chunk of a flood.
        loop.add_reader(proc.read_fd, self._on_readable)
        self._reading = True
        self._watch_exit()

    # Output ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        self._read_available(READS_PER_WAKEUP)

    def _read_available(self, max_reads: int) -> None:
        wake = False  # only live output needs the waiting call; the window just fills
        for _ in range(max_reads):
            try:
                data = os.read(self.proc.read_fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:  # EIO: every holder of the PTY's terminal side has closed it
                data = b""
            if not data:
                self._on_eof()
                break
            self.bytes_read += len(data)
            self.window.append(data)
            live = self._live
            if live is not None:
                room = (
                    len(data)
                    if self._live_limit is None
                    else self._live_limit - self._live_sent - len(live)
                )
                if room >= len(data):
                    live += data
                    wake = True
                else:
                    if room > 0:
                        live += data[:room]
                        wake = True
                    self._live_dropped += len(data) - max(room, 0)
        if wake:
            self.changed.set()

    def _on_eof(self) -> None:
        self.eof = True
        self._stop_reading()
        if self.exited:
            self._finish()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.proc.read_fd)

    # Exit -----------------------------------------------------------------------------

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux, or an old kernel: poll instead
            self._pidfd = None
            self._poll_exit()
            return
        self._loop.add_reader(self._pidfd, self._poll_exit)

    def _poll_exit(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: the status is lost
            pid, status = self.pid, None
        if pid == 0:
            if self._pidfd is None:
                self._timer = self._loop.call_later(self._poll_delay, self._poll_exit)
                self._poll_delay = min(self._poll_delay * 2, 0.05)
            return
        self._close_pidfd()
        self._record_exit(status)

    def _record_exit(self, status: int | None) -> None:
        if status is None:
            self.exit_code = -1
        else:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                self.signal = -code
                code = 128 + self.signal  # as a shell reports it
            self.exit_code = code
        self.exited = True
        self.group.leader_reaped = True
        if self.proc.popen is not None:
            self.proc.popen.returncode = self.exit_code  # it must not try to reap again
        self.exited_event.set()
        if self.eof:
            self._finish()
        else:
            # The terminal's other side is usually closed by now; wait briefly for the
            # last output unless a background process still holds it open.
            self._timer = self._loop.call_later(SessionManager.EXIT_DRAIN_S, self._drain)
        self.changed.set()

    def _drain(self) -> None:
        self._timer = None
        if self._reading:
            self._read_available(READS_PER_WAKEUP)
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_reading()
        self.changed.set()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def release(self) -> None:
        """Stop watching and close the parent's descriptors (the session is over)."""
        self._finish()
        if not self.exited:  # killed but not yet reaped: one last try, never blocking
            self._poll_exit()
        self._close_pidfd()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._write_ready is not None:  # a write waiting for room: it ends now
            self._loop.remove_writer(self.proc.write_fd)
            _resolve(self._write_ready)
        self.proc.close()

    # Input ----------------------------------------------------------------------------

    async def write(self, data: str, deadline: float) -> tuple[int, str | None]:
        """Type `data`; returns (bytes written, why it stopped early or None)."""
        if self.proc.tty:
            return await self._write_bytes(data.encode(), deadline)
        # No terminal to interpret control characters: Ctrl-C signals the process group,
        # Ctrl-D closes stdin, like a terminal would make them behave.
        written = 0
        for part in _split_controls(data):
            if part == "\x03":
                signal_processes(self.group, (), signal.SIGINT, whole_group=not self.exited)
                written += 1
            elif part == "\x04":
                self.proc.close_stdin()
                written += 1
            else:
                n, problem = await self._write_bytes(part.encode(), deadline)
                written += n
                if problem:
                    return written, problem
        return written, None

    async def _write_bytes(self, data: bytes, deadline: float) -> tuple[int, str | None]:
        fd = self.proc.write_fd
        written = 0
        while written < len(data):
            if self.proc.closed or self.proc.stdin_closed:
                return written, "the session's input is closed (Ctrl-D was sent)"
            try:
                written += os.write(fd, data[written:])
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, OSError, ValueError):
                return written, "the process is no longer reading its input"
            ready = self._write_ready = self._loop.create_future()
            self._loop.add_writer(fd, _resolve, ready)
            try:
                with anyio.move_on_after(max(deadline - self._loop.time(), 0)) as waiting:
                    await ready
            finally:
                self._write_ready = None
                if not self.proc.closed:
                    self._loop.remove_writer(fd)
            if waiting.cancelled_caught:
                return written, "the process did not read its input before yield_time_ms"
        return written, None

    # A call's view ----------------------------------------------------------------------

    async def follow(
        self, ctx: ToolContext, deadline: float, *, detect_input: bool = False
    ) -> bool:
        """Wait until the session finishes or `deadline` (loop time), streaming its output
        live through `ctx` (the output itself stays in the window for `window.take()`).

        With `detect_input` (terminal sessions), also return as soon as the foreground job
        is found blocked reading the terminal; returns True then."""
        self._live = bytearray()
        self._live_sent = self._live_dropped = 0
        expired = False
        wants_input = anyio.Event()

        def expire() -> None:
            nonlocal expired
            expired = True
            self.changed.set()

        # One timer for the whole wait: a cancel scope per wakeup would cost more than
        # reading the chunk that caused it.
        timer = self._loop.call_at(deadline, expire)
        try:
            async with anyio.create_task_group() as detectors:
                if detect_input and self.proc.tty:
                    detectors.start_soon(self._watch_for_input, wants_input)
                while True:
                    await self._emit_live(ctx)
                    if self.finished or expired or wants_input.is_set():
                        break
                    self.changed.clear()
                    if self._live:
                        continue
                    await self.changed.wait()
                detectors.cancel_scope.cancel()
            if wants_input.is_set() and self._reading:
                self._read_available(READS_PER_WAKEUP)  # the prompt, if not read yet
            await self._emit_live(ctx, final=self.finished)
        finally:
            timer.cancel()
            dropped = self._live_dropped
            self._live = None
        if dropped:
            await ctx.emit(
                "tool_output",
                chunk=f"\r\n[agentd: {dropped} more bytes were not streamed live]\r\n",
            )
        return wants_input.is_set() and not self.finished

    async def _watch_for_input(self, found: anyio.Event) -> None:
        """Set `found` (and wake `follow`) once the foreground job is seen blocked reading
        the terminal by two checks in a row. The /proc reads run in a worker thread.

        A job that printed something since the last look is not waiting for the user (a
        prompt is followed by silence), so a look happens only after a quiet spell: a
        session streaming output costs no /proc reads at all."""
        delay = INPUT_CHECK_FIRST_S
        agreed = 0
        seen = self.bytes_read
        while not self.exited:
            await anyio.sleep(delay)
            if self.bytes_read != seen:
                seen = self.bytes_read
                agreed = 0
                continue
            verdict = await anyio.to_thread.run_sync(waiting_for_input, self.proc.read_fd)
            if verdict is None:  # no way to tell on this platform
                return
            agreed = agreed + 1 if verdict else 0
            if agreed >= 2:
                found.set()
                self.changed.set()
                return
            delay = INPUT_CHECK_FIRST_S if verdict else min(delay * 2, INPUT_CHECK_MAX_S)

    def take_output(self) -> Output:
        """The output not taken yet, for the model. Output is read in chunks that may end
        inside a character: until the session is finished, such a character's bytes are
        left out and begin the next take's, so the model gets it whole (as the live
        `tool_output` stream does), not as two U+FFFD."""
        out = self.window.take()
        if self._held:
            out.head = self._held + out.head
            out.total += len(self._held)
            self._held = b""
        if not self.finished and out.total:
            if out.tail:
                keep = _unfinished_utf8(out.tail)
                if keep:
                    self._held, out.tail = out.tail[-keep:], out.tail[:-keep]
            else:
                keep = _unfinished_utf8(out.head)
                if keep:
                    self._held, out.head = out.head[-keep:], out.head[:-keep]
            out.total -= len(self._held)
        return out

    def finish_now(self) -> None:
        """Read what is left and stop (after the process group was killed)."""
        if self._reading:
            self._read_available(READS_PER_WAKEUP)
        self._finish()

    async def _emit_live(self, ctx: ToolContext, *, final: bool = False) -> None:
        live = self._live
        if live is None or (not live and not final):
            return
        data = bytes(live)
        live.clear()
        self._live_sent += len(data)
        text = self._decoder.decode(data, final)
        if text:
            await ctx.emit("tool_output", chunk=text)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _split_controls(data: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    for ch in data:
        if ch in ("\x03", "\x04"):
            if current:
                parts.append("".join(current))
                current = []
            parts.append(ch)
        else:
            current.append(ch)
    if current:
        parts.append("".join(current))
    return parts


@dataclass
class Outcome:
    """What one exec_command / write_stdin call saw."""

    output: Output
    session_id: int | None  # None once the process has exited
    exit_code: int | None
    signal: int | None
    pid: int
    notes: list[str] = field(default_factory=list)
    timed_out: bool = False
    waiting_for_input: bool = False  # returned early: the foreground job reads the terminal


class SessionManager:
    """The PTY sessions of one toolbox (`ctx.service(SessionManager)`); kills them on close."""

    # Seconds a signalled session gets to exit after SIGHUP/SIGTERM before SIGKILL.
    TERM_GRACE_S = 0.5
    # Seconds to wait for a killed leader to be reaped.
    KILL_WAIT_S = 2.0
    # After the leader exits, how long to wait for the output's end of file when another
    # process still holds the terminal open.
    EXIT_DRAIN_S = 0.1
    # How many ended session ids are remembered for a helpful "already ended" error.
    ENDED_MEMORY = 1024
    # Ended sessions' process groups are surveyed (one process table scan, in a worker
    # thread) when a session starts and there are this many, or twice as many as the last
    # survey kept, whichever is more; the groups with no process left are forgotten.
    RETIRED_SURVEY_MIN = 32

    def __init__(self, box: Toolbox) -> None:
        self._settings = box.settings
        # `<owner>/<run or toolbox>`: the prefix of the tag each session's processes carry.
        self.tag = f"{box.settings.process_owner}/{box.run_id or 'box-' + os.urandom(6).hex()}"
        self._sessions: dict[int, Session] = {}
        # The process groups of ended sessions: what they left running (nohup, disowned jobs)
        # is killed with the toolbox. Forgotten once a survey finds nothing of theirs left.
        self._retired: list[ProcessGroup] = []
        self._survey_retired_at = self.RETIRED_SURVEY_MIN
        self._surveying_retired = False
        # ended session id -> (how it ended, what became of its last output), for `get`
        self._ended: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._next_id = 1
        self._closed = False
        self._cgroup: Path | None = None  # made with the first session, where cgroups are ours

    # Introspection (sync: metrics and get_dev_url call these) ----------------------------

    def session_ids(self) -> list[int]:
        """Ids of the sessions held (running, or exited with output not yet read)."""
        return sorted(list(self._sessions))

    def live_count(self) -> int:
        """Sessions whose process is still running."""
        return sum(1 for s in list(self._sessions.values()) if not s.exited)

    def retired_count(self) -> int:
        """Ended sessions whose process groups are still watched for leftovers (bounded:
        see `RETIRED_SURVEY_MIN`)."""
        return len(self._retired)

    async def pids(self) -> set[int]:
        """Every live process the sessions started: their process groups, sessions and
        descendants, plus leftovers of exited sessions (e.g. `nohup server &`). Read from
        the settings' process table (in a worker thread); an empty set when it cannot be read.
        Where the toolbox has a cgroup, it holds exactly those (and what dropped its tag):
        one read of it, instead of the whole table."""
        if self._cgroup is not None:
            return set(await anyio.to_thread.run_sync(CgroupTree.members, self._cgroup))
        table = await anyio.to_thread.run_sync(
            functools.partial(scan_processes, tags=True, procs=self._settings.process_table)
        )
        if table is None:
            return set()
        found: set[int] = set()
        for session in list(self._sessions.values()):
            found |= session.group.members(table)
        for group in list(self._retired):
            found |= group.members(table)
        return found

    async def _survey_retired(self) -> None:
        """Forget the retired groups that have no process left (reaping their orphans), so
        the list, and the survey at close, stay proportional to what is really left. Only
        groups retired before the scan started are judged: one retired during it may have
        processes the scan did not see."""
        if self._surveying_retired or self._closed:
            return
        self._surveying_retired = True
        try:
            groups = list(self._retired)
            table, found = await anyio.to_thread.run_sync(
                _survey, groups, self._settings.process_table
            )
            if table is not None:
                gone = {id(g) for g in groups if not found[id(g)]}
                self._retired = [g for g in self._retired if id(g) not in gone]
        finally:
            self._surveying_retired = False
            self._survey_retired_at = max(self.RETIRED_SURVEY_MIN, 2 * len(self._retired))

    # Sessions -----------------------------------------------------------------------------

    def get(self, session_id: int) -> Session:
        session = self._sessions.get(session_id)
        if session is not None:
            return session
        if session_id in self._ended:
            how, output = self._ended[session_id]
            raise ToolError(
                f"Session {session_id} has already ended ({how}); {output}. Start a new "
                "command with exec_command."
            )
        running = ", ".join(str(i) for i in sorted(self._sessions)) or "none"
        raise ToolError(
            f"Unknown session_id {session_id} (running sessions: {running}). session_id "
            "must be a value returned by exec_command for a command that was still running."
        )

    async def open(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        tty: bool,
        command: str,
    ) -> tuple[Session, list[str]]:
        """Start a session, first making room under the session cap; returns notes."""
        notes = await self._make_room()
        if len(self._retired) >= self._survey_retired_at:
            await self._survey_retired()
        if self._closed:
            raise ToolError("the toolbox is closed")
        loop = asyncio.get_running_loop()
        tag = f"{self.tag}/{self._next_id}"
        env = {**env, PROCESS_TAG_VAR: tag}  # last: neither the agent nor the call may set it
        cgroups = self._settings.cgroups
        if cgroups is not None and self._cgroup is None:
            self._cgroup = cgroups.create(self.tag.rpartition("/")[2])
        if cgroups is not None and self._cgroup is not None:
            argv = cgroups.entering(self._cgroup, argv)
        if tty:
            proc = spawn_pty(argv, cwd=str(cwd), env=env, rows=TERMINAL_ROWS, cols=TERMINAL_COLS)
        else:
            proc = spawn_pipes(argv, cwd=str(cwd), env=env)
        session = Session(
            self._next_id,
            command,
            proc,
            loop,
            tag=tag,
            live_limit=self._settings.live_output_bytes_per_call,
        )
        self._next_id += 1
        self._sessions[session.id] = session
        return session, notes

    async def _make_room(self) -> list[str]:
        cap = max(1, self._settings.max_sessions)
        notes: list[str] = []
        while len(self._sessions) >= cap:
            exited = [s for s in self._sessions.values() if s.exited and not s.lock.locked()]
            if exited:
                for session in exited:
                    session.finish_now()
                    how = (
                        f"exited with code {session.exit_code}, then discarded at the session "
                        "limit before its output was read"
                    )
                    self._end(session, how, _discarded(session.take_output()))
                ids = ", ".join(str(s.id) for s in exited)
                notes.append(
                    f"The session limit ({cap}) was reached: dropped exited session(s) {ids} "
                    "whose last output was never read."
                )
                continue
            idle = [s for s in self._sessions.values() if not s.lock.locked()]
            if not idle:
                raise ToolError(
                    f"All {cap} sessions are busy; wait for one to finish or end one "
                    "(write_stdin with chars '\\u0003' sends Ctrl-C)."
                )
            victim = min(idle, key=lambda s: s.last_used)
            idle_s = time.monotonic() - victim.last_used
            await self.kill(victim, reason="killed at the session limit to make room")
            notes.append(
                f"The session limit ({cap}) was reached: killed session {victim.id} "
                f"(`{_short(victim.command)}`), idle for {idle_s:.0f} s, the longest."
            )
        return notes

    async def interact(
        self,
        session: Session,
        ctx: ToolContext,
        wait_s: float,
        chars: str = "",
        *,
        kill_on_timeout: str | None = None,
    ) -> Outcome:
        """Optionally type `chars`, then collect output until exit or `wait_s` passes.

        With `kill_on_timeout` (the reason to record), a process still running at the
        deadline is killed with its process group instead of staying a session."""
        async with session.lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            notes: list[str] = []
            if chars:
                if session.exited:
                    notes.append("The process had already exited; the input was not sent.")
                else:
                    written, problem = await session.write(chars, deadline)
                    if problem:
                        sent = len(chars.encode()) if session.proc.tty else len(chars)
                        notes.append(f"Only {written} of {sent} bytes were sent: {problem}.")
            # A one-shot command (`bash`) runs to its end: only sessions return at a prompt.
            waiting = await session.follow(ctx, deadline, detect_input=kill_on_timeout is None)
            timed_out = False
            if kill_on_timeout is not None and not session.finished:
                timed_out = True
                await self._terminate([session], [])
                session.finish_now()
            output = session.take_output()
            session.last_used = time.monotonic()
            finished = session.finished
            outcome = Outcome(
                output=output,
                session_id=None if finished else session.id,
                exit_code=session.exit_code if finished else None,
                signal=session.signal if finished else None,
                pid=session.pid,
                notes=notes,
                timed_out=timed_out,
                waiting_for_input=waiting and not finished,
            )
            if finished:
                how = f"exited with code {session.exit_code}"
                self._end(session, kill_on_timeout if kill_on_timeout and timed_out else how)
            return outcome

    async def kill(self, session: Session, *, reason: str = "killed") -> None:
        """End a session: its whole process group, then the descriptors. The output it
        printed since it was last read is discarded (`get` says so, and how much)."""
        await self._terminate([session], [])
        session.finish_now()
        self._end(session, reason, _discarded(session.take_output()))

    def _end(
        self, session: Session, how: str, output: str = "its final output was returned then"
    ) -> None:
        """Forget a session that is over: `how` it ended and what became of its `output`
        are what `get` says of its id from now on."""
        if self._sessions.pop(session.id, None) is None:
            return
        session.release()
        # Processes it left running (nohup, disowned jobs) still belong to this toolbox.
        self._retired.append(session.group)
        self._ended[session.id] = (how, output)
        while len(self._ended) > self.ENDED_MEMORY:
            self._ended.popitem(last=False)

    async def aclose(self) -> None:
        """Kill every session's processes (children and grandchildren) and reap them."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            sessions = list(self._sessions.values())
            await self._terminate(sessions, self._retired)
            for session in sessions:
                self._end(session, "closed with the toolbox", _discarded(session.take_output()))
            self._retired.clear()
            cgroups, cgroup = self._settings.cgroups, self._cgroup
            if cgroups is not None and cgroup is not None:
                # What the process groups and tags did not catch (a command that dropped its
                # environment and left its session) is still in the cgroup.
                await anyio.to_thread.run_sync(cgroups.kill, cgroup)

    async def _terminate(self, sessions: list[Session], retired: list[ProcessGroup]) -> None:
        """SIGHUP + SIGTERM to each group and member, SIGKILL after the grace period, then
        wait until every member is gone (reaping orphans reparented to the daemon)."""
        groups = [s.group for s in sessions] + list(retired)
        if not groups:
            return
        loop = asyncio.get_running_loop()

        async def survey() -> tuple[Mapping[int, ProcInfo] | None, dict[int, set[int]]]:
            return await anyio.to_thread.run_sync(_survey, groups, self._settings.process_table)

        def send(signums: tuple[int, ...], table: Mapping[int, ProcInfo] | None) -> None:
            for group in groups:
                whole = table is None or not group.reused(table)
                for signum in signums:
                    signal_processes(group, found[id(group)], signum, whole_group=whole)

        def done() -> bool:
            return all(s.exited for s in sessions) and not any(found.values())

        table, found = await survey()
        send((signal.SIGHUP, signal.SIGTERM, signal.SIGCONT), table)
        # Poll with backoff: most commands are gone within milliseconds of SIGTERM.
        deadline = loop.time() + self.TERM_GRACE_S
        delay = 0.005
        while not done() and loop.time() < deadline:
            await anyio.sleep(min(delay, max(deadline - loop.time(), 0)))
            delay = min(delay * 2, 0.1)
            table, found = await survey()
        if done():
            return
        send((signal.SIGKILL,), table)
        with anyio.move_on_after(self.KILL_WAIT_S):
            for session in sessions:
                await session.exited_event.wait()
            delay = 0.002
            while True:
                table, found = await survey()
                if not any(found.values()):
                    break
                send((signal.SIGKILL,), table)  # started between the scan and the kill
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)


def _survey(
    groups: list[ProcessGroup], procs: ProcessTable
) -> tuple[Mapping[int, ProcInfo] | None, dict[int, set[int]]]:
    """Blocking (a worker thread): the process table, each group's live members, and orphans
    of theirs that died as the daemon's children reaped."""
    table = scan_processes(tags=True, procs=procs)
    if table is None:
        return None, {id(g): set() for g in groups}
    reap_orphans(groups, table)
    return table, {id(g): g.members(table) for g in groups}


def live_session_count(box: Toolbox) -> int:
    """Running sessions in `box` (0 if exec_command was never used there), for metrics."""
    manager = box.peek_service(SessionManager)
    return manager.live_count() if manager is not None else 0


def _discarded(output: Output) -> str:
    """What `get` says of the output of a session ended without returning it."""
    if not output.total:
        return "it had printed nothing since its output was last returned"
    return (
        f"the {output.total} bytes of output it printed after its output was last returned "
        "were discarded, not returned"
    )


def _short(command: str, limit: int = 60) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 1] + "…"


# -- argument handling shared by the tools -------------------------------------------------


def _clamp(value: int, low: int, high: int, name: str, notes: list[str]) -> int:
    if value < low or value > high:
        clamped = min(max(value, low), high)
        notes.append(f"{name} {value} is outside {low}–{high}; used {clamped}.")
        return clamped
    return value


def _workdir(ctx: ToolContext, workdir: str | None) -> Path:
    path = ctx.resolve(workdir)  # PathOutsideWorkspace becomes a tool error
    if not path.exists():
        raise ToolError(
            f"workdir {workdir!r} does not exist in the workspace; create it first or "
            "omit workdir to run in the workspace root"
        )
    if not path.is_dir():
        raise ToolError(f"workdir {workdir!r} is not a directory")
    return path


def _find_shell(shell: str | None, env: dict[str, str], notes: list[str]) -> str:
    wanted = shell or DEFAULT_SHELL
    found = shutil.which(wanted, path=env.get("PATH", os.defpath))
    if found is not None:
        return os.path.abspath(found)
    if shell is None:
        fallback = shutil.which("sh", path=env.get("PATH", os.defpath)) or "/bin/sh"
        notes.append(f"{DEFAULT_SHELL} is not installed; ran the command with {fallback}.")
        return fallback
    raise ToolError(
        f"shell {shell!r} was not found or is not executable; omit shell to use "
        f"{DEFAULT_SHELL}, or give the path of an installed shell such as /bin/sh"
    )


def _render(outcome: Outcome, wall_s: float, max_tokens: int, notes: list[str]) -> ToolResult:
    text, cut = clip_output(outcome.output, max_tokens * BYTES_PER_TOKEN)
    lines = [f"Wall time: {wall_s:.4f} seconds"]
    if outcome.timed_out:
        lines.append(
            f"Process timed out after {wall_s:.1f} seconds and was killed with its process "
            f"group (exit code {outcome.exit_code})"
        )
    elif outcome.session_id is None:
        lines.append(f"Process exited with code {outcome.exit_code}")
    else:
        lines.append(f"Process running with session ID {outcome.session_id}")
        if outcome.waiting_for_input:
            lines.append(INPUT_WAIT_HEADER)
    if cut:
        original_tokens = -(-outcome.output.total // BYTES_PER_TOKEN)
        lines.append(f"Original token count: {original_tokens}")
    all_notes = notes + outcome.notes
    lines.extend(f"Note: {note}" for note in all_notes)
    lines.append("Output:")
    data: dict[str, Any] = {
        "exit_code": outcome.exit_code,
        "session_id": outcome.session_id,
        "wall_time_ms": round(wall_s * 1000, 3),
        "output": text,
        "original_bytes": outcome.output.total,
        "truncated": cut > 0,
        "pid": outcome.pid,
    }
    if outcome.waiting_for_input:
        data["waiting_for_input"] = True
    if outcome.signal is not None:
        data["signal"] = signal.Signals(outcome.signal).name
    if all_notes:
        data["notes"] = all_notes
    return ToolResult(output="\n".join(lines) + "\n" + text, data=data)


# -- the tools -----------------------------------------------------------------------------


def _env_name(name: str) -> str:
    if not name or "=" in name or "\0" in name:
        raise ValueError(
            f"environment variable name {name!r} is empty or contains '=' or a NUL byte; "
            "use a name such as MY_VAR"
        )
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]


class ExecCommandArgs(ToolArgs):
    cmd: NoNulStr = Field(description="Shell command to run (passed to `shell -lc`).")
    workdir: NoNulStr | None = Field(
        default=None, description="Directory to run in, relative to the workspace root."
    )
    shell: NoNulStr | None = Field(
        default=None, description=f"Shell to use (default {DEFAULT_SHELL})."
    )
    login: bool = Field(default=True, description="Run as a login shell (-l).")
    tty: bool = Field(
        default=True, description="Run in a pseudo-terminal (false: plain pipes, no TTY)."
    )
    yield_time_ms: int = Field(
        default=DEFAULT_EXEC_YIELD_MS,
        description=(
            f"How long to wait for the command to finish before returning its output so far "
            f"({MIN_YIELD_MS}–{MAX_YIELD_MS} ms)."
        ),
    )
    max_output_tokens: int = Field(
        default=DEFAULT_MAX_OUTPUT_TOKENS,
        description="Output beyond this many tokens (~4 bytes each) is cut from the middle.",
    )
    env: dict[EnvName, NoNulStr] | None = Field(
        default=None, description="Extra environment variables for this command."
    )


class ExecCommand(Tool):
    name = "exec_command"
    description = (
        "Run a shell command in a pseudo-terminal in the workspace. Returns when it exits or "
        "after yield_time_ms, whichever is first. If it is still running (a server, a REPL, a "
        "prompt, a watcher) the result gives a session ID: use write_stdin to send it input "
        "(e.g. '\\u0003' for Ctrl-C) or to poll for more output. The output starts with a "
        "header (wall time, exit code or session ID) and keeps its head and tail when long. "
        "Run a server as the command itself (it keeps running as a session): a job started "
        "with `&` (nohup too) is killed when the command returns; to detach one, use "
        "`set -m; CMD >log 2>&1 </dev/null &`."
    )
    Args = ExecCommandArgs
    read_only = False

    async def run(self, args: ExecCommandArgs, ctx: ToolContext) -> ToolResult:
        notes: list[str] = []
        yield_ms = _clamp(args.yield_time_ms, MIN_YIELD_MS, MAX_YIELD_MS, "yield_time_ms", notes)
        max_tokens = _clamp(
            args.max_output_tokens, 1, MAX_OUTPUT_TOKENS, "max_output_tokens", notes
        )
        cwd = _workdir(ctx, args.workdir)
        env = command_env(ctx.env, args.env)
        shell = _find_shell(args.shell, env, notes)
        argv = [shell, "-lc" if args.login else "-c", args.cmd]
        started = time.perf_counter()
        manager = ctx.service(SessionManager)
        try:
            session, room_notes = await manager.open(
                argv, cwd=cwd, env=env, tty=args.tty, command=args.cmd
            )
        except OSError as exc:
            return ToolResult.error(
                f"Could not start {shell}: {exc.strerror or exc}", code="spawn_failed"
            )
        outcome = await manager.interact(session, ctx, yield_ms / 1000)
        return _render(outcome, time.perf_counter() - started, max_tokens, notes + room_notes)


class WriteStdinArgs(ToolArgs):
    session_id: int = Field(description="Session ID returned by exec_command.")
    chars: str = Field(
        default="",
        description=(
            "Text to type, e.g. 'y\\n', '\\u0003' (Ctrl-C) or '\\u0004' (Ctrl-D / EOF). "
            "Empty: just wait for more output."
        ),
    )
    yield_time_ms: int = Field(
        default=DEFAULT_WRITE_YIELD_MS,
        description=(
            f"How long to wait for output before returning ({MIN_YIELD_MS}–{MAX_YIELD_MS} ms); "
            "returns at once if the process exits."
        ),
    )
    max_output_tokens: int = Field(
        default=DEFAULT_MAX_OUTPUT_TOKENS,
        description="Output beyond this many tokens (~4 bytes each) is cut from the middle.",
    )


class WriteStdin(Tool):
    name = "write_stdin"
    description = (
        "Type into a running exec_command session and return the output it printed since "
        "the last call, with its exit code once it has exited. Empty chars only polls."
    )
    Args = WriteStdinArgs
    read_only = False

    async def run(self, args: WriteStdinArgs, ctx: ToolContext) -> ToolResult:
        notes: list[str] = []
        yield_ms = _clamp(args.yield_time_ms, MIN_YIELD_MS, MAX_YIELD_MS, "yield_time_ms", notes)
        max_tokens = _clamp(
            args.max_output_tokens, 1, MAX_OUTPUT_TOKENS, "max_output_tokens", notes
        )
        started = time.perf_counter()
        manager = ctx.peek_service(SessionManager)
        if manager is None:
            raise ToolError(
                f"Unknown session_id {args.session_id}: no command has been started with "
                "exec_command yet."
            )
        session = manager.get(args.session_id)
        outcome = await manager.interact(session, ctx, yield_ms / 1000, args.chars)
        return _render(outcome, time.perf_counter() - started, max_tokens, notes)


class BashArgs(ToolArgs):
    command: NoNulStr = Field(description="Shell command to run to completion.")
    timeout_ms: int = Field(
        default=BASH_DEFAULT_TIMEOUT_MS,
        description=f"Kill the command after this long (1000–{BASH_MAX_TIMEOUT_MS} ms).",
    )
    workdir: NoNulStr | None = Field(
        default=None, description="Directory to run in, relative to the workspace root."
    )


class Bash(Tool):
    name = "bash"
    # An alias for agents written against the older docs: offered only when an agent lists
    # it, so models are not shown two tools that do the same thing.
    default_enabled = False
    description = (
        "Run a shell command to completion in the workspace (a one-shot exec_command) and "
        "return its exit code and output. Commands still running after timeout_ms are killed "
        "with their whole process group; use exec_command for servers and interactive programs."
    )
    Args = BashArgs
    read_only = False

    async def run(self, args: BashArgs, ctx: ToolContext) -> ToolResult:
        notes: list[str] = []
        timeout_ms = _clamp(args.timeout_ms, 1000, BASH_MAX_TIMEOUT_MS, "timeout_ms", notes)
        cwd = _workdir(ctx, args.workdir)
        env = command_env(ctx.env, None)
        shell = _find_shell(None, env, notes)
        started = time.perf_counter()
        manager = ctx.service(SessionManager)
        try:
            session, room_notes = await manager.open(
                [shell, "-lc", args.command], cwd=cwd, env=env, tty=True, command=args.command
            )
        except OSError as exc:
            return ToolResult.error(
                f"Could not start {shell}: {exc.strerror or exc}", code="spawn_failed"
            )
        notes += room_notes
        outcome = await manager.interact(
            session, ctx, timeout_ms / 1000, kill_on_timeout=f"killed after {timeout_ms} ms"
        )
        result = _render(outcome, time.perf_counter() - started, DEFAULT_MAX_OUTPUT_TOKENS, notes)
        if outcome.timed_out:
            result.is_error = True
            result.data.update(timed_out=True, code="timeout")
        return result


# The tools this module provides, in the order models see them (tools.load_core_tools
# registers them).
TOOLS: tuple[type[Tool], ...] = (
    ExecCommand,
    WriteStdin,
    Bash,
)
