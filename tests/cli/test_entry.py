"""The `agentd` command's entry (runtime/__main__.py): the command line loads with the garbage
collector paused; the daemon commands keep it paused until they listen, the others resume it
before they run."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

import runtime
from runtime.cli import main
from tests.cli.support import clean_env


@pytest.fixture
def collector_paused() -> Iterator[None]:
    """As runtime/__main__.py leaves it for runtime.cli."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_the_agentd_command_is_the_entry_that_pauses_the_collector() -> None:
    (script,) = entry_points(group="console_scripts", name="agentd")
    assert script.value == "runtime.__main__:main"
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--version"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, f"agentd {runtime.__version__}\n"), done.stderr


@pytest.mark.usefixtures("collector_paused")
def test_a_command_other_than_the_daemon_runs_with_the_collector_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tool", "no_such_tool", "{}"]) == 2
    assert gc.isenabled()
    assert "unknown tool 'no_such_tool'" in capsys.readouterr().err


@pytest.mark.usefixtures("collector_paused")
def test_the_daemon_leaves_the_collector_paused_until_it_listens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A daemon that cannot start (its workspace is missing) returned before it listened: the
    collector is still paused (run_daemon and resume_gc_after_start own it from here)."""
    argv = ["serve", "--port", "0", "--workspace", "/nonexistent/dir"]
    assert main(argv) == 2
    assert not gc.isenabled()
    assert "is not a directory" in capsys.readouterr().err
