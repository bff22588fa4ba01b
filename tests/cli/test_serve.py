"""`agentd serve` refuses unusable paths with a usage error that names them (the daemon
itself is exercised in tests/api/test_daemon.py and tests/image/test_entrypoint.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from runtime.cli import main
from runtime.store import Store


def test_an_unusable_state_dir_is_named(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["serve", "--port", "0", "--workspace", str(workspace)]
    assert main([*argv, "--state-dir", str(blocker / "state")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"agentd serve: cannot use the state dir {blocker / 'state'}: ")
    assert "choose another with --state-dir or AGENTD_STATE_DIR" in err
    assert "cannot listen" not in err


def test_a_missing_workspace_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--port", "0", "--state-dir", str(tmp_path / "state")]
    assert main([*argv, "--workspace", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


async def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(
    tmp_path: Path, workspace: Path
) -> None:
    state = tmp_path / "state"
    async with await Store.open(state):  # this process is "the first daemon"
        argv = ["serve", "--port", "0", "--workspace", str(workspace), "--state-dir", str(state)]
        with anyio.fail_after(60):
            second = await anyio.run_process(
                [sys.executable, "-m", "runtime.cli", *argv], check=False
            )
    assert second.returncode == 2, second.stderr
    err = second.stderr.decode()
    assert f"in use by process {os.getpid()}" in err and str(state) in err
    async with await Store.open(state):  # closing the first released the lock
        pass
