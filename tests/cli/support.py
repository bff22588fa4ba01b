"""Running the `agentd` console script the way a person does, for the CLI and image tests:
a real subprocess with a clean environment, cassettes written with the replay helpers, and
small bounded waits on ports and files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from runtime.messages import Part
from runtime.providers.base import AssistantTurn, Usage
from runtime.providers.replay import CASSETTE_HEADER, turn_to_line

REPO = Path(__file__).resolve().parents[2]


def agentd_argv() -> list[str]:
    """The `agentd` console script installed beside this Python, or `python -m runtime` (the
    same entry) when it is not installed."""
    script = Path(sys.executable).with_name("agentd")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "runtime"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without agentd's own settings or model keys (a developer's
    AGENTD_URL must not redirect a test's run), importing this checkout (and the HOME of
    the tests, see tests/conftest.py)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AGENTD_", "RUNTOOLS_"))
        and k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "NO_COLOR")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def turn(*parts: Part, stop: str = "end_turn") -> AssistantTurn:
    return AssistantTurn(
        content=list(parts),
        stop_reason=stop,  # type: ignore[arg-type]
        usage=Usage(input_tokens=100, output_tokens=10),
        model="scripted",
    )


def write_cassette(
    path: Path, turns: Sequence[AssistantTurn], requests: Sequence[dict[str, Any] | None] = ()
) -> Path:
    """A cassette of `turns`; a turn without a request (the default) matches any
    conversation, so the test does not depend on tool outputs."""
    lines = [CASSETTE_HEADER]
    for number, one in enumerate(turns, start=1):
        request = requests[number - 1] if number <= len(requests) else None
        lines.append(turn_to_line(number, request, one, [None] * len(one.content)))  # type: ignore[arg-type]
    path.write_text("\n".join(lines) + "\n")
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def serving_agentd(
    root: Path, *, stop_timeout: float = 30.0, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`agentd serve` on a free port over `root`/workspace and `root`/state (its stderr in
    `root`/serve.log), with `env` added: its URL and process, once it listens. SIGTERM at the
    end, a kill after `stop_timeout` seconds."""
    (root / "workspace").mkdir(exist_ok=True)
    port = free_port()
    with (root / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            [*agentd_argv(), "serve", "--port", str(port), "--workspace", str(root / "workspace")],
            env=clean_env(AGENTD_STATE_DIR=str(root / "state"), **env),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(lambda: port_accepts(port) or proc.poll() is not None, "agentd serve")
        assert proc.poll() is None, (root / "serve.log").read_text()
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def answers(url: str) -> bool:
    try:
        http_get(url)
    except OSError:
        return False
    return True
