"""exec_command/write_stdin return early when the command waits for terminal input."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tools.base import Toolbox, ToolResult
from tools.exec import INPUT_WAIT_HEADER
from tools.input_wait import waiting_for_input

PY = shlex.quote(sys.executable)
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")
# Generous: the machine may be loaded. Detection takes ~0.1 s; the yield is 20 s, so a
# reply well under YIELD_S / 2 can only come from the early return.
YIELD_MS = 20_000
EARLY_S = YIELD_MS / 1000 / 2


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Toolbox]:
    async with Toolbox(tmp_path) as toolbox:
        yield toolbox


async def exec_command(box: Toolbox, cmd: str, **args: Any) -> tuple[ToolResult, float]:
    started = time.monotonic()
    result = await box.call(
        "exec_command", {"cmd": cmd, "login": False, "yield_time_ms": YIELD_MS, **args}
    )
    assert not result.is_error, result.output
    return result, time.monotonic() - started


def header(result: ToolResult) -> str:
    return result.output.split("\nOutput:\n", 1)[0]


@pytest.mark.parametrize(
    "cmd",
    [
        "read -p 'Name? ' n; echo hi $n",
        f"{PY} -c 'input()'",
        "cat",
    ],
)
async def test_a_command_reading_the_terminal_returns_early(box: Toolbox, cmd: str) -> None:
    result, took = await exec_command(box, cmd)
    assert took < EARLY_S, f"took {took:.1f} s: {result.output}"
    assert INPUT_WAIT_HEADER in header(result).splitlines()
    assert result.data["waiting_for_input"] is True
    assert result.data["session_id"] is not None
    await box.call("write_stdin", {"session_id": result.data["session_id"], "chars": "\x03"})


async def test_the_prompt_is_in_the_output_and_the_answer_goes_through(box: Toolbox) -> None:
    result, _ = await exec_command(box, "read -p 'Name? ' n; echo hi $n")
    assert result.data["output"].endswith("Name? ")
    session = result.data["session_id"]
    answered = await box.call(
        "write_stdin", {"session_id": session, "chars": "bob\n", "yield_time_ms": YIELD_MS}
    )
    assert "hi bob" in answered.data["output"]
    assert answered.data["exit_code"] == 0
    assert "waiting_for_input" not in answered.data


async def test_write_stdin_returns_early_at_the_next_prompt(box: Toolbox) -> None:
    script = "read -p 'First? ' a; read -p 'Second? ' b; echo done $a $b"
    result, _ = await exec_command(box, script)
    session = result.data["session_id"]
    started = time.monotonic()
    second = await box.call(
        "write_stdin", {"session_id": session, "chars": "1\n", "yield_time_ms": YIELD_MS}
    )
    assert time.monotonic() - started < EARLY_S
    assert second.data["waiting_for_input"] is True
    assert "Second? " in second.data["output"]
    done = await box.call(
        "write_stdin", {"session_id": session, "chars": "2\n", "yield_time_ms": YIELD_MS}
    )
    assert "done 1 2" in done.data["output"]


async def test_a_busy_command_is_not_waiting_for_input(box: Toolbox) -> None:
    result, took = await exec_command(box, "sleep 5", yield_time_ms=1500)
    assert took >= 1.4
    assert INPUT_WAIT_HEADER not in result.output
    assert "waiting_for_input" not in result.data
    await box.call("write_stdin", {"session_id": result.data["session_id"], "chars": "\x03"})


async def test_a_command_printing_all_along_is_not_stopped_while_it_polls_input(
    box: Toolbox,
) -> None:
    # It reads the terminal most of the time, but prints between reads: output since the
    # last look means nobody is waiting for the user, and no look is taken at all.
    cmd = "for i in $(seq 40); do echo line $i; read -t 0.05 x; done; echo finished"
    result, _ = await exec_command(box, cmd)
    assert "waiting_for_input" not in result.data
    assert result.data["exit_code"] == 0
    assert "finished" in result.data["output"]


async def test_a_pipeline_reading_a_pipe_is_not_waiting_for_input(box: Toolbox) -> None:
    # `cat` reads the pipe from `sleep`, not the terminal.
    result, took = await exec_command(box, "sleep 5 | cat", yield_time_ms=1500)
    assert took >= 1.4
    assert "waiting_for_input" not in result.data
    await box.call("write_stdin", {"session_id": result.data["session_id"], "chars": "\x03"})


async def test_bash_runs_to_completion_without_returning_at_a_prompt(tmp_path: Path) -> None:
    # The one-shot alias has no session to answer through: it waits for its timeout.
    async with Toolbox(tmp_path, enabled=["bash"]) as box:
        result = await box.call("bash", {"command": "read n", "timeout_ms": 1500})
        assert result.data.get("timed_out") is True
        assert "waiting_for_input" not in result.data


def test_a_closed_terminal_is_not_waiting() -> None:
    master, slave = os.openpty()
    os.close(slave)
    os.close(master)
    assert waiting_for_input(master) is False
