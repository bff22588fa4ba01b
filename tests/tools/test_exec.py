"""exec_command, write_stdin and bash through Toolbox.call: real PTYs, real processes."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tools import processes
from tools.base import Toolbox, ToolResult, ToolSettings
from tools.exec import (
    Output,
    OutputWindow,
    SessionManager,
    clip_output,
    live_session_count,
)
from tools.proctable import ProcessTable

PY = shlex.quote(sys.executable)
HAS_PROC = os.path.isdir("/proc/self")
linux_only = pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
HEADER = re.compile(
    r"^Wall time: \d+\.\d{4} seconds\n"
    r"(Process exited with code (?P<code>-?\d+)|Process running with session ID (?P<sid>\d+))\n"
    r"(?P<waiting>Process is waiting for input\n)?"
    r"(Original token count: (?P<tokens>\d+)\n)?"
    r"(Note: .*\n)*"
    r"Output:\n"
)


async def run(box: Toolbox, cmd: str, **args: Any) -> ToolResult:
    args.setdefault("login", False)
    result = await box.call("exec_command", {"cmd": cmd, **args})
    assert not result.is_error, result.output
    return result


async def write(box: Toolbox, session_id: int, chars: str = "", **args: Any) -> ToolResult:
    return await box.call("write_stdin", {"session_id": session_id, "chars": chars, **args})


async def poll_until(
    box: Toolbox, result: ToolResult, done: Callable[[str, ToolResult], bool], timeout: float = 20
) -> tuple[str, ToolResult]:
    """Poll a session with empty writes until `done(all output so far, last result)`."""
    seen = result.data["output"]
    deadline = time.monotonic() + timeout
    while not done(seen, result):
        assert result.data["session_id"] is not None, f"exited early: {seen!r}"
        assert time.monotonic() < deadline, f"timed out; output so far: {seen!r}"
        result = await write(box, result.data["session_id"])
        assert not result.is_error, result.output
        seen += result.data["output"]
    return seen, result


def exited(_: str, result: ToolResult) -> bool:
    return result.data["session_id"] is None


def proc_state(pid: int) -> tuple[str, int] | None:
    info = processes.read_proc(pid)
    return None if info is None else (info.state, info.ppid)


def is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie that is not ours to reap (init reaps it)."""
    if HAS_PROC:
        state = proc_state(pid)
        return state is None or (state[0] in "ZX" and state[1] != os.getpid())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} survived: {proc_state(pid)}"
        await asyncio.sleep(0.02)


def assert_reaped(pid: int) -> None:
    """Our own child: not only dead but reaped (no zombie left behind)."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    if HAS_PROC:
        assert proc_state(pid) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_from(text: str, name: str = "bg") -> int:
    match = re.search(rf"{name}=(\d+)", text)
    assert match, text
    return int(match.group(1))


@pytest.fixture(params=["posix_spawn", "ptyprocess"])
def spawner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with each way of starting PTY children."""
    if request.param == "ptyprocess":
        monkeypatch.setattr(processes, "_LIBC_SPAWN", None)
    elif not processes.fast_pty_spawn_available():
        pytest.skip("posix_spawn PTY start needs Linux with glibc >= 2.29 or musl")
    yield request.param


# -- running commands ------------------------------------------------------------------


async def test_exit_codes_header_and_data(workspace: Path, spawner: str) -> None:
    async with Toolbox(workspace) as box:
        for cmd, code in [("true", 0), ("exit 7", 7), ("echo out; false", 1)]:
            result = await run(box, cmd)
            match = HEADER.match(result.output)
            assert match and match["code"] == str(code), result.output
            assert result.data["exit_code"] == code
            assert result.data["session_id"] is None
            assert result.data["truncated"] is False
            assert result.data["wall_time_ms"] > 0
            assert result.output.endswith(result.data["output"])
        assert result.data["output"] == "out\n"
        assert result.data["original_bytes"] == len(b"out\r\n")  # the terminal's CRLF


async def test_command_has_a_terminal_and_plain_env(workspace: Path, spawner: str) -> None:
    env = {"FROM_BOX": "box", "BOTH": "box", "PAGER": "less"}
    async with Toolbox(workspace, env=env) as box:
        result = await run(
            box,
            "test -t 0 && test -t 1 && test -t 2 && echo tty=yes; tty;"
            " echo $TERM $NO_COLOR $PAGER $GIT_PAGER $GH_PAGER $LANG; echo $FROM_BOX $BOTH",
            env={"BOTH": "call"},
        )
        lines = result.data["output"].splitlines()
        assert lines[0] == "tty=yes"
        assert lines[1].startswith("/dev/")  # a controlling terminal, not "not a tty"
        assert lines[2:] == ["dumb 1 less cat cat C.UTF-8", "box call"]


async def test_login_shell_and_workdir(workspace: Path) -> None:
    (workspace / "sub" / "dir").mkdir(parents=True)
    async with Toolbox(workspace) as box:
        result = await run(box, "shopt -q login_shell && echo login; pwd", login=True)
        assert result.data["output"].splitlines() == ["login", str(workspace.resolve())]
        result = await run(box, "pwd", workdir="sub/dir")
        assert result.data["output"].strip() == str(workspace.resolve() / "sub" / "dir")


async def test_tty_false_runs_with_pipes(workspace: Path) -> None:
    async with Toolbox(workspace) as box:
        result = await run(box, "test -t 1 || echo no-tty; ps -o sid= -p $$", tty=False)
        first, sid = result.data["output"].split()
        assert first == "no-tty"
        assert int(sid) == result.data["pid"]  # still its own session and process group

        started = await run(box, "cat; echo cat-done; sleep 1000", tty=False, yield_time_ms=250)
        session = started.data["session_id"]
        echoed = await write(box, session, "hello pipes\n")
        seen, _ = await poll_until(box, echoed, lambda out, _: "hello pipes\n" in out)
        assert seen == "hello pipes\n"  # no terminal: no echo of the input
        closed = await write(box, session, "\u0004")  # Ctrl-D: stdin reaches EOF
        await poll_until(box, closed, lambda out, _: "cat-done\n" in out)
        ignored = await write(box, session, "more\n")
        assert "Only 0 of 5 bytes were sent: the session's input is closed" in ignored.output
        interrupted = await write(box, session, "\u0003", yield_time_ms=10_000)  # Ctrl-C
        assert interrupted.data["exit_code"] == 130
        assert interrupted.data["signal"] == "SIGINT"

        # A process that never reads: the write gives up at the deadline and says so.
        deaf = await run(box, "sleep 1000", tty=False, yield_time_ms=250)
        stuck = await write(box, deaf.data["session_id"], "x" * 200_000)
        assert not stuck.is_error and stuck.data["session_id"] == deaf.data["session_id"]
        assert re.search(
            r"Only \d+ of 200000 bytes were sent: the process did not read its input", stuck.output
        )
        interrupted = await write(box, deaf.data["session_id"], "\u0003", yield_time_ms=10_000)
        assert interrupted.data["exit_code"] == 130
        assert interrupted.data["signal"] == "SIGINT"


async def test_python_repl_driven_by_write_stdin(workspace: Path, spawner: str) -> None:
    async with Toolbox(workspace) as box:
        started = await run(box, f"{PY} -q", yield_time_ms=250)
        assert HEADER.match(started.output)["sid"] == str(started.data["session_id"])
        seen, _ = await poll_until(box, started, lambda out, _: ">>>" in out)

        answer = await write(box, started.data["session_id"], "print(6*7)\n")
        seen, _ = await poll_until(box, answer, lambda out, _: "42\n" in out)
        assert "print(6*7)\n42\n" in seen  # the terminal echoes what was typed

        bye = await write(box, started.data["session_id"], "\u0004", yield_time_ms=10_000)
        _, bye = await poll_until(box, bye, exited)
        assert bye.data["exit_code"] == 0


async def test_read_prompt_is_answered(workspace: Path) -> None:
    async with Toolbox(workspace) as box:
        started = await run(box, 'read -p "Name? " name; echo "Hello, $name!"', yield_time_ms=250)
        assert started.data["session_id"] is not None
        await poll_until(box, started, lambda out, _: "Name? " in out)
        answered = await write(box, started.data["session_id"], "Ada\n", yield_time_ms=10_000)
        seen, answered = await poll_until(box, answered, exited)
        assert answered.data["exit_code"] == 0
        assert "Hello, Ada!" in seen


async def test_ctrl_c_interrupts_sleep(workspace: Path, spawner: str) -> None:
    async with Toolbox(workspace) as box:
        started = await run(box, "sleep 1000", yield_time_ms=250)
        pid = started.data["pid"]
        result = await write(box, started.data["session_id"], "\u0003", yield_time_ms=10_000)
        assert result.data["exit_code"] == 130
        assert result.data["signal"] == "SIGINT"
        assert "Process exited with code 130" in result.output
        assert_reaped(pid)
        gone = await write(box, started.data["session_id"])
        assert gone.is_error and "already ended (exited with code 130)" in gone.output


async def test_server_started_in_one_call_answers_in_a_later_one(workspace: Path) -> None:
    port = free_port()
    (workspace / "index.html").write_text("hello from the workspace\n")
    async with Toolbox(workspace) as box:
        started = await run(
            box, f"exec {PY} -u -m http.server {port} --bind 127.0.0.1", yield_time_ms=250
        )
        session, pid = started.data["session_id"], started.data["pid"]
        assert session is not None

        body = await http_get(port, "/index.html", timeout=20)
        assert "hello from the workspace" in body

        later, _ = await poll_until(box, started, lambda out, _: "GET /index.html" in out)
        assert "Serving HTTP" in later
        manager = box.peek_service(SessionManager)
        assert manager is not None
        if HAS_PROC:
            assert pid in await manager.pids()
        assert await http_get(port, "/index.html", timeout=5)  # still up after the poll
    assert_reaped(pid)


async def http_get(port: int, path: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listening on {port}"
            await asyncio.sleep(0.05)
            continue
        writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        response = (await reader.read()).decode()
        writer.close()
        assert response.startswith("HTTP/1.0 200"), response
        return response


async def test_32_sessions_at_once(workspace: Path) -> None:
    async with Toolbox(workspace) as box:
        started = await asyncio.gather(
            *(run(box, 'read line; echo "got $line"', yield_time_ms=250) for _ in range(32))
        )
        ids = [r.data["session_id"] for r in started]
        assert None not in ids and len(set(ids)) == 32
        manager = box.peek_service(SessionManager)
        assert manager is not None
        assert manager.session_ids() == sorted(ids)
        assert manager.live_count() == live_session_count(box) == 32

        async def answer(session: int, text: str) -> str:
            first = await write(box, session, text + "\n", yield_time_ms=10_000)
            seen, last = await poll_until(box, first, exited)
            assert last.data["exit_code"] == 0
            return seen

        outputs = await asyncio.gather(*(answer(s, f"line-{s}") for s in ids))
        for session, output in zip(ids, outputs, strict=True):
            assert f"got line-{session}\n" in output
        assert manager.live_count() == 0 and manager.session_ids() == []


# -- output: truncation, floods, live events ---------------------------------------------


async def test_truncation_keeps_head_and_tail(workspace: Path) -> None:
    async with Toolbox(workspace) as box:
        result = await run(box, "seq 1 100000", max_output_tokens=100)
        match = HEADER.match(result.output)
        assert match and match["code"] == "0"
        assert int(match["tokens"]) == -(-result.data["original_bytes"] // 4)
        text = result.data["output"]
        assert text.startswith("1\n2\n3\n")
        assert text.endswith("99999\n100000\n")
        assert re.search(r"…\[\d+ bytes \(~\d+ tokens\) truncated\]…", text)
        assert len(text.encode()) < 500
        assert result.data["truncated"] is True
        assert result.data["original_bytes"] > 500_000


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next reading covers what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def current_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@linux_only
@pytest.mark.parametrize(
    ("tty", "flood"),
    [
        # Pipes: the literal flood (a PTY turns each newline into CRLF one character at a
        # time, ~8 MB/s here, which would make this test take half a minute).
        (False, "yes | head -c 200M"),
        # The same volume through a real PTY, without newlines (~100 MB/s).
        (True, "head -c 200M /dev/zero | tr '\\0' y"),
    ],
)
async def test_output_flood_stays_within_the_memory_bound(
    workspace: Path, tty: bool, flood: str
) -> None:
    live_bytes = 0

    def count(event: dict[str, Any]) -> None:
        nonlocal live_bytes
        live_bytes += len(event["chunk"])

    async with Toolbox(workspace, on_event=count) as box:
        await run(box, "true")  # the session machinery is warm before measuring
        if not peak_rss_reset():
            pytest.skip("cannot reset the peak RSS")
        before = current_rss()
        result = await run(
            box, f"echo START; {flood}; echo; echo END", tty=tty, yield_time_ms=30_000
        )
        _, result = await poll_until(box, result, exited, timeout=120)
        growth = peak_rss() - before
    assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
    text = result.data["output"]
    assert text.startswith("START\n")
    assert text.rstrip("\n").endswith("END")
    assert "truncated]…" in text
    assert result.data["truncated"] is True
    assert result.data["exit_code"] == 0
    # the live stream is capped too
    assert live_bytes <= ToolSettings().live_output_bytes_per_call + 200  # type: ignore[operator]


async def test_every_chunk_is_streamed_as_a_tool_output_event(workspace: Path) -> None:
    events: list[dict[str, Any]] = []
    async with Toolbox(workspace, on_event=events.append) as box:
        result = await box.call(
            "exec_command",
            {"cmd": "for i in 1 2 3; do echo line-$i; done", "login": False},
            call_id="call-7",
        )
    assert result.data["exit_code"] == 0
    assert events and all(e["type"] == "tool_output" for e in events)
    assert {e["callId"] for e in events} == {"call-7"}
    streamed = "".join(e["chunk"] for e in events)
    assert streamed == "line-1\r\nline-2\r\nline-3\r\n"  # raw terminal output for the view
    assert result.data["output"] == "line-1\nline-2\nline-3\n"


@linux_only  # the first call returns once the shell is seen waiting for input
async def test_a_character_split_between_two_calls_reaches_the_model_whole(
    workspace: Path,
) -> None:
    """`é` (C3 A9) printed in two parts, a call returning in between: the model gets `caf`
    and then `é!`, as the live stream shows it, not a U+FFFD for each part."""
    events: list[dict[str, Any]] = []
    async with Toolbox(workspace, on_event=events.append) as box:
        started = await run(
            box, r"stty -echo; printf 'caf\xc3'; read x; printf '\xa9!\n'", yield_time_ms=30_000
        )
        assert started.data["waiting_for_input"] is True, started.output
        assert started.data["output"] == "caf"
        assert started.data["original_bytes"] == 3  # the C3 is counted where it is given
        rest = await write(box, started.data["session_id"], "\n", yield_time_ms=30_000)
        assert rest.data["exit_code"] == 0, rest.output
        assert rest.data["output"] == "é!\n"
        # a command that ends inside a character: its bytes are not held back for ever
        cut = await run(box, r"printf 'end\xc3'")
        assert cut.data["exit_code"] == 0 and cut.data["output"] == "end\ufffd"
    streamed = "".join(e["chunk"] for e in events)
    assert streamed == "café!\r\nend\ufffd"


@pytest.mark.parametrize("max_output_tokens", [1003, 1004])
async def test_output_beyond_the_window_is_cut_between_characters(
    workspace: Path, max_output_tokens: int
) -> None:
    """2 MB of `€` lines (5 bytes each through the terminal): more than the session keeps,
    so the model gets a head and a tail whose cuts (1003: the head's end, 1004: the tail's
    start) fall inside a character. The character is left out whole: no U+FFFD."""
    flood = f"{PY} -c \"import sys; sys.stdout.write('€\\n' * 400_000)\""
    async with Toolbox(workspace) as box:
        result = await run(box, flood, max_output_tokens=max_output_tokens, yield_time_ms=30_000)
    assert result.data["exit_code"] == 0, result.output
    assert result.data["truncated"] is True and result.data["original_bytes"] == 2_000_000
    head, marker, tail = re.split(
        r"(\n…\[\d+ bytes \(~\d+ tokens\) truncated\]…\n)", result.data["output"]
    )
    assert "\ufffd" not in head + tail
    assert set(head.replace("€\n", "")) <= {"€"} and head.startswith("€\n")
    assert set(tail.replace("€\n", "")) <= {"\n"} and tail.endswith("€\n")
    cut = int(re.findall(r"\d+", marker)[0])
    assert 2_000_000 - max_output_tokens * 4 <= cut < 2_000_000 - max_output_tokens * 4 + 8


# -- cleanup -----------------------------------------------------------------------------


async def test_closing_the_toolbox_kills_children_and_grandchildren(
    workspace: Path, spawner: str, process_table: ProcessTable
) -> None:
    async with Toolbox(workspace, settings=ToolSettings(process_table=process_table)) as box:
        started = await run(
            box,
            "sleep 1000 & echo bg=$!; bash -c 'sleep 1000 & echo gc=$!; wait'",
            yield_time_ms=250,
        )
        seen, _ = await poll_until(box, started, lambda out, _: "gc=" in out)
        leader, child, grandchild = started.data["pid"], pid_from(seen), pid_from(seen, "gc")
        assert not is_gone(child) and not is_gone(grandchild)
        manager = box.peek_service(SessionManager)
        assert manager is not None
        assert {leader, child, grandchild} <= await manager.pids()
    assert_reaped(leader)
    await wait_gone(child)
    await wait_gone(grandchild)


@linux_only
async def test_leftovers_of_exited_commands_and_escapees_are_killed(
    workspace: Path, process_table: ProcessTable
) -> None:
    async with Toolbox(workspace, settings=ToolSettings(process_table=process_table)) as box:
        # With job control the job gets a process group of its own, so the hangup when the
        # shell exits does not reach it: it outlives its command, in the same session.
        left = await run(box, "set -m; sleep 1000 </dev/null >/dev/null 2>&1 & echo bg=$!")
        assert left.data["exit_code"] == 0
        survivor = pid_from(left.data["output"])
        # setsid leaves the session and process group; found as a descendant.
        escaped = await run(box, "setsid sleep 1000 & echo bg=$!; sleep 1000", yield_time_ms=250)
        seen, _ = await poll_until(box, escaped, lambda out, _: "bg=" in out)
        escapee = pid_from(seen)
        manager = box.peek_service(SessionManager)
        assert manager is not None
        assert not is_gone(survivor) and not is_gone(escapee)
        assert {survivor, escapee, escaped.data["pid"]} <= await manager.pids()
    await wait_gone(survivor)
    await wait_gone(escapee)
    assert_reaped(escaped.data["pid"])


@linux_only
async def test_ended_sessions_are_forgotten_once_nothing_of_theirs_is_left(
    workspace: Path, process_table: ProcessTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many short commands in one toolbox: the ended sessions' groups kept for their
    leftovers stay bounded (a survey forgets those with nothing left), and the toolbox still
    kills, when it closes, what two of them left running."""
    monkeypatch.setattr(SessionManager, "RETIRED_SURVEY_MIN", 8)
    async with Toolbox(workspace, settings=ToolSettings(process_table=process_table)) as box:
        job = await run(box, "set -m; sleep 1000 </dev/null >/dev/null 2>&1 & echo bg=$!")
        # setsid forks when it leads its process group: the sleeper says its own pid.
        escaped = await run(
            box,
            "setsid sh -c 'echo $$ > escapee; exec sleep 1000' </dev/null >/dev/null 2>&1 & "
            "until [ -s escapee ]; do sleep 0.01; done; echo bg=$(cat escapee)",
        )
        leftovers = [pid_from(job.data["output"]), pid_from(escaped.data["output"])]
        manager = box.peek_service(SessionManager)
        assert manager is not None
        most = 0
        for _ in range(40):
            done = await run(box, "true")
            assert done.data["exit_code"] == 0 and done.data["session_id"] is None
            most = max(most, manager.retired_count())
        assert most <= 8  # without the survey: 42
        assert manager.session_ids() == []
        assert not any(is_gone(pid) for pid in leftovers)
    for pid in leftovers:
        await wait_gone(pid)


async def test_processes_ignoring_sigterm_are_killed(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SessionManager, "TERM_GRACE_S", 0.2)
    async with Toolbox(workspace) as box:
        started = await run(
            box, "trap '' TERM HUP INT; sleep 1000 & echo bg=$!; wait", yield_time_ms=250
        )
        seen, _ = await poll_until(box, started, lambda out, _: "bg=" in out)
        stubborn = pid_from(seen)
    assert_reaped(started.data["pid"])
    await wait_gone(stubborn)


async def test_bash_alias_runs_to_completion_or_kills_on_timeout(workspace: Path) -> None:
    async with Toolbox(workspace, enabled=["bash"]) as box:
        done = await box.call("bash", {"command": "echo hi; exit 4"})
        assert not done.is_error
        assert HEADER.match(done.output)["code"] == "4"
        assert done.data["output"] == "hi\n"

        slow = await box.call(
            "bash", {"command": "sleep 1000 & echo bg=$!; sleep 1000", "timeout_ms": 1000}
        )
        assert slow.is_error and slow.data["timed_out"] is True
        assert "timed out after" in slow.output and "killed" in slow.output
        assert_reaped(slow.data["pid"])
        await wait_gone(pid_from(slow.data["output"]))
        manager = box.peek_service(SessionManager)
        assert manager is not None and manager.session_ids() == []


# -- the session cap ---------------------------------------------------------------------


async def test_session_cap_kills_the_oldest_idle_session(workspace: Path) -> None:
    async with Toolbox(workspace, settings=ToolSettings(max_sessions=2)) as box:
        first = await run(box, "sleep 1000", yield_time_ms=250)
        second = await run(box, "sleep 1000", yield_time_ms=250)
        await write(box, first.data["session_id"])  # the first is now the most recently used
        third = await run(box, "sleep 1000", yield_time_ms=250)
        assert third.data["session_id"] is not None
        victim = second.data["session_id"]
        assert f"The session limit (2) was reached: killed session {victim}" in third.output
        assert_reaped(second.data["pid"])
        killed = await write(box, victim)
        assert killed.is_error and "killed at the session limit" in killed.output
        alive = await write(box, first.data["session_id"])
        assert not alive.is_error and alive.data["session_id"] == first.data["session_id"]


async def test_session_cap_prunes_exited_sessions_first(workspace: Path) -> None:
    async with Toolbox(workspace, settings=ToolSettings(max_sessions=2)) as box:
        running = await run(box, "sleep 1000", yield_time_ms=250)
        ending = await run(box, "sleep 1000", yield_time_ms=250)
        os.kill(ending.data["pid"], 15)  # it exits between calls; nobody has read that yet
        manager = box.peek_service(SessionManager)
        assert manager is not None
        deadline = time.monotonic() + 10
        while manager.live_count() != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        third = await run(box, "sleep 1000", yield_time_ms=250)
        assert f"dropped exited session(s) {ending.data['session_id']}" in third.output
        assert "killed session" not in third.output
        still = await write(box, running.data["session_id"])
        assert still.data["session_id"] == running.data["session_id"]


async def test_a_session_ended_at_the_cap_says_its_unread_output_was_discarded(
    workspace: Path,
) -> None:
    """A session the cap ends (killed, or dropped once exited) never returns what it printed
    since the last call; asking for it afterwards says so instead of claiming it was
    returned."""
    printer = "trap 'echo bye-bye; exit 3' HUP TERM; echo ready; while :; do sleep 0.05; done"
    async with Toolbox(workspace, settings=ToolSettings(max_sessions=2)) as box:
        victim = await run(box, printer, yield_time_ms=250)
        exiting = await run(box, printer, yield_time_ms=250)
        quiet = await run(box, "sleep 1000", yield_time_ms=250)  # kills `victim`: it prints
        assert f"killed session {victim.data['session_id']}" in quiet.output
        killed = await write(box, victim.data["session_id"])
        assert killed.is_error and "killed at the session limit to make room" in killed.output
        assert re.search(
            r"the \d+ bytes of output it printed after .* were discarded", killed.output
        )
        assert "final output was returned" not in killed.output

        manager = box.peek_service(SessionManager)
        assert manager is not None
        os.kill(exiting.data["pid"], 15)  # it prints and exits between calls
        with anyio.fail_after(20):
            await manager.get(exiting.data["session_id"]).exited_event.wait()
        await run(box, "true")  # drops `exiting`, unread
        dropped = await write(box, exiting.data["session_id"])
        assert dropped.is_error and "exited with code 3, then discarded at the session limit" in (
            dropped.output
        )
        assert re.search(
            r"the \d+ bytes of output it printed after .* were discarded", dropped.output
        )
        assert "final output was returned" not in dropped.output

        await write(box, quiet.data["session_id"], "\u0003", yield_time_ms=10_000)
        over = await write(box, quiet.data["session_id"])
        assert "exited with code 130); its final output was returned then" in over.output


async def test_output_of_a_process_that_exited_between_calls(workspace: Path) -> None:
    async with Toolbox(workspace) as box:
        started = await run(box, "echo ready; read x; echo bye", yield_time_ms=250)
        await poll_until(box, started, lambda out, _: "ready" in out)
        os.kill(started.data["pid"], 9)
        assert_pid = started.data["pid"]
        manager = box.peek_service(SessionManager)
        assert manager is not None
        deadline = time.monotonic() + 10
        while manager.live_count():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        late = await write(box, started.data["session_id"], "too late\n")
        assert late.data["exit_code"] == 137 and late.data["signal"] == "SIGKILL"
        assert "already exited; the input was not sent" in late.output
        assert_reaped(assert_pid)


# -- bad input ---------------------------------------------------------------------------


async def test_bad_inputs_are_tool_errors(workspace: Path, tmp_path: Path) -> None:
    (workspace / "file.txt").write_text("x")
    async with Toolbox(workspace) as box:
        no_session_yet = await write(box, 1)
        assert no_session_yet.is_error and "no command has been started" in no_session_yet.output

        missing = await box.call("exec_command", {"cmd": "true", "workdir": "nope"})
        assert missing.is_error and "workdir 'nope' does not exist" in missing.output
        not_dir = await box.call("exec_command", {"cmd": "true", "workdir": "file.txt"})
        assert not_dir.is_error and "not a directory" in not_dir.output
        for outside in ("..", str(tmp_path), "/etc"):
            refused = await box.call("exec_command", {"cmd": "true", "workdir": outside})
            assert refused.is_error and "outside the workspace" in refused.output
            assert refused.data["code"] == "outside_workspace"

        no_shell = await box.call("exec_command", {"cmd": "true", "shell": "/no/such/shell"})
        assert no_shell.is_error and "shell '/no/such/shell' was not found" in no_shell.output
        no_shell = await box.call("exec_command", {"cmd": "true", "shell": "nosuchshell"})
        assert no_shell.is_error and "not found" in no_shell.output

        unknown = await write(box, 12345)
        assert unknown.is_error and "Unknown session_id 12345" in unknown.output

        finished = await run(box, "true")
        assert finished.data["exit_code"] == 0

        low = await run(box, "true", yield_time_ms=5)
        assert "Note: yield_time_ms 5 is outside 250–30000; used 250." in low.output
        assert low.data["notes"] == ["yield_time_ms 5 is outside 250–30000; used 250."]
        high = await run(box, "true", yield_time_ms=10**9, max_output_tokens=0)
        assert "used 30000" in high.output and "max_output_tokens 0" in high.output
        assert high.data["exit_code"] == 0

        started = await run(box, "sleep 1000", yield_time_ms=250)
        clamped = await write(box, started.data["session_id"], yield_time_ms=1)
        assert not clamped.is_error and "yield_time_ms 1 is outside" in clamped.output

        typed = await box.call("exec_command", {"cmd": 42})
        assert typed.is_error and "cmd" in typed.output
        extra = await box.call("write_stdin", {"session_id": 1, "text": "x"})
        assert extra.is_error and "unexpected field 'text'" in extra.output


async def test_tools_are_registered_and_not_read_only(workspace: Path) -> None:
    async with Toolbox(workspace, enabled=["exec_command", "write_stdin", "bash"]) as box:
        specs = {s["name"]: s for s in box.specs()}
        assert set(specs) == {"exec_command", "write_stdin", "bash"}
        assert specs["exec_command"]["input_schema"]["required"] == ["cmd"]
        assert set(specs["exec_command"]["input_schema"]["properties"]) == {
            "cmd", "workdir", "shell", "login", "tty", "yield_time_ms", "max_output_tokens", "env"
        }  # fmt: skip
        assert set(specs["write_stdin"]["input_schema"]["properties"]) == {
            "session_id", "chars", "yield_time_ms", "max_output_tokens"
        }  # fmt: skip
        assert not any(box.is_read_only(name) for name in specs)
        assert live_session_count(box) == 0  # no manager until a command runs


# -- the output window on its own ----------------------------------------------------------


@given(
    chunks=st.lists(st.binary(min_size=0, max_size=40), max_size=40),
    head=st.integers(0, 64),
    tail=st.integers(0, 64),
    budget=st.integers(8, 200),
)
def test_output_window_keeps_exact_head_and_tail(
    chunks: list[bytes], head: int, tail: int, budget: int
) -> None:
    window = OutputWindow(head_limit=head, tail_limit=tail)
    for chunk in chunks:
        window.append(chunk)
        assert len(window) <= head + tail + 40  # bounded by the limits plus one chunk
    out = window.take()
    everything = b"".join(chunks)
    assert out.total == len(everything)
    assert out.head == everything[:head]
    rest = everything[len(out.head) :]
    assert out.tail == rest[max(len(rest) - tail, 0) :]
    assert out.dropped == len(everything) - len(out.head) - len(out.tail)
    assert window.take() == Output()

    text, cut = clip_output(out, budget)
    if cut == 0:
        expected = everything.decode(errors="replace").replace("\r\n", "\n")
        assert out.dropped == 0 and text == expected
    else:
        assert "truncated]…" in text


@pytest.mark.parametrize(
    ("tool", "args", "fragment"),
    [
        ("exec_command", {"cmd": "echo a\0b"}, "cmd: Value error, contains a NUL byte"),
        ("exec_command", {"cmd": "echo \ud800"}, "cmd contains a lone UTF-16 surrogate"),
        ("exec_command", {"cmd": "pwd", "workdir": "src\0"}, "workdir: Value error"),
        ("exec_command", {"cmd": "true", "shell": "/bin/sh\0"}, "shell: Value error"),
        ("exec_command", {"cmd": "true", "env": {"A\0B": "1"}}, "environment variable name"),
        ("exec_command", {"cmd": "true", "env": {"A=B": "1"}}, "contains '='"),
        ("exec_command", {"cmd": "true", "env": {"": "1"}}, "is empty"),
        ("exec_command", {"cmd": "true", "env": {"A": "1\0"}}, "env.A: Value error"),
        ("write_stdin", {"session_id": 1, "chars": "\udfff"}, "chars contains a lone"),
        ("bash", {"command": "echo a\0b"}, "command: Value error, contains a NUL byte"),
    ],
)
async def test_arguments_the_os_cannot_take_are_tool_errors(
    workspace: Path, tool: str, args: dict[str, Any], fragment: str
) -> None:
    async with Toolbox(workspace, enabled=["exec_command", "write_stdin", "bash"]) as box:
        result = await box.call(tool, args)
        assert result.is_error and result.data["code"] == "invalid_arguments", result.output
        assert fragment in result.output
        manager = box.peek_service(SessionManager)
        assert manager is None or manager.session_ids() == []  # nothing was started
