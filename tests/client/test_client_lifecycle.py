"""A blocking `Client` that is never closed does not keep the interpreter from exiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio

from tests.api.conftest import Daemon

REPO = Path(__file__).resolve().parents[2]


def run_python(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20,
    )


async def test_an_unclosed_client_that_made_a_call_lets_the_interpreter_exit(
    daemon: Daemon,
) -> None:
    source = f"""
        from runtime.client import Client
        client = Client({daemon.url!r}, token="unused")
        print(len(client.agents.list()), "agents")
        print("exiting")
    """
    # In a thread: the daemon runs on this test's loop and must answer meanwhile.
    done = await anyio.to_thread.run_sync(run_python, source)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["0 agents", "exiting"]
    assert "Unclosed client session" not in done.stderr


def test_an_unclosed_client_that_was_only_made_lets_the_interpreter_exit() -> None:
    done = run_python(
        """
        from runtime.client import Client
        client = Client("http://127.0.0.1:9", token="unused")
        print("exiting")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"


def test_a_client_dropped_without_close_is_shut_down_and_close_is_idempotent() -> None:
    done = run_python(
        """
        import gc, threading
        from runtime.client import Client
        before = threading.active_count()
        Client("http://127.0.0.1:9")
        gc.collect()
        closed = Client("http://127.0.0.1:9")
        closed.close()
        closed.close()
        with Client("http://127.0.0.1:9"):
            pass
        print(threading.active_count() - before)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n"
