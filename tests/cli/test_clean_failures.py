"""Every failure of the command line is one clear line on stderr and a nonzero exit status,
never a traceback: a closed standard input, an output whose reader went away (141, quietly,
and what the command started is stopped), an output that cannot be written, a workspace the
daemon cannot write into, a dev URL template with `{host}`, a server that is not agentd and a
URL that is not one; and `agentd demo` stopped by SIGTERM once its app is up exits 0, as it
does on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runtime.messages import TextPart, ToolCallPart
from tests.cli.support import (
    agentd_argv,
    clean_env,
    free_port,
    http_get,
    pid_alive,
    port_accepts,
    serving_agentd,
    turn,
    wait_until,
    write_cassette,
)

# Output that cannot fit in a pipe's buffer (64 KiB): writing it goes on after the reader
# of the first line has gone.
LOTS = "seq 1 200000"
# Records the pid of the shell, which then becomes the long sleep, and says so.
STARTED = b"sleeper-started"
SLEEPER = f"echo $$ > sleeper.pid; echo {STARTED.decode()}; {LOTS}; exec sleep 60"


def assert_one_line(err: str) -> None:
    assert "Traceback" not in err and "failed unexpectedly" not in err, err
    assert len(err.splitlines()) == 1, err


def cassette(path: Path, cmd: str) -> Path:
    call = ToolCallPart(id="call_1", name="exec_command", arguments={"cmd": cmd})
    return write_cassette(path, [turn(call, stop="tool_use"), turn(TextPart(text="Done."))])


def read_some(fd: int, until: bytes, timeout: float = 60.0) -> bytes:
    """What the process writes to the pipe `fd` until `until` is in it (or it ends)."""
    data = b""
    deadline = time.monotonic() + timeout
    while until not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {until!r}; got {data[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


def first_line_then_close(
    argv: list[str], env: dict[str, str], timeout: float = 60.0, until: bytes = b"\n"
) -> tuple[bytes, int, str]:
    """Run the command as `… | head -1` does: read its output until a line (or `until`) has
    come, close the pipe, wait for the command. (the output read, its status, its stderr)"""
    with tempfile.TemporaryFile() as err:  # a file: nobody has to drain it
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
        try:
            assert proc.stdout is not None
            out = read_some(proc.stdout.fileno(), until, timeout)
            proc.stdout.close()
            code = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        return out, code, err.read().decode()


def processes_in(directory: Path) -> list[int]:
    """The live processes whose working directory is in `directory`."""
    inside = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if Path(cwd) == directory or Path(cwd).is_relative_to(directory):
            inside.append(int(entry.name))
    return inside


# -- a closed standard input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["run", "--model", "replay:tape.jsonl", "-"], "agentd run: cannot read the prompt"),
        (["tool", "read_file", "-"], "agentd tool: cannot read the arguments"),
    ],
)
def test_a_closed_stdin_is_a_usage_error(argv: list[str], what: str, workspace: Path) -> None:
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *agentd_argv(), *argv],
        cwd=workspace,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"{what}: standard input is closed\n"


# -- an output whose reader went away -----------------------------------------------------------


def test_tool_output_to_a_closed_pipe_exits_141_and_stops_the_command(workspace: Path) -> None:
    arguments = json.dumps({"cmd": SLEEPER, "yield_time_ms": 30000})
    out, code, err = first_line_then_close(
        [*agentd_argv(), "tool", "exec_command", arguments, "--workspace", str(workspace)],
        clean_env(),
        until=STARTED,
    )
    assert out.startswith(STARTED)
    assert code == 141, err
    assert err == ""
    sleeper = int((workspace / "sleeper.pid").read_text())
    wait_until(lambda: not pid_alive(sleeper), "the tool's command to be gone", timeout=10)


@pytest.mark.parametrize("as_json", [True, False])
def test_run_output_to_a_closed_pipe_exits_141_and_stops_the_run(
    as_json: bool, tmp_path: Path, workspace: Path
) -> None:
    tape = cassette(tmp_path / "tape.jsonl", SLEEPER)
    argv = [*agentd_argv(), "run", "--model", f"replay:{tape}", "--workspace", str(workspace)]
    argv += ["--state-dir", str(tmp_path / "state"), *(["--json"] if as_json else []), "go"]
    _out, code, err = first_line_then_close(argv, clean_env(), until=STARTED)
    assert code == 141, err
    assert err == ""
    sleeper = int((workspace / "sleeper.pid").read_text())
    wait_until(lambda: not pid_alive(sleeper), "the run's command to be gone", timeout=10)


def test_demo_output_to_a_closed_pipe_exits_141(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    _out, code, err = first_line_then_close(
        [*agentd_argv(), "demo", "--exit", "--workspace", str(workspace)],
        clean_env(TMPDIR=str(tmp_path)),
        timeout=120,
    )
    assert code == 141, err
    assert err == ""
    wait_until(lambda: not processes_in(workspace.resolve()), "the demo's processes to end", 10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`agentd serve` on a free port, without a token (loopback): its URL."""
    with serving_agentd(tmp_path_factory.mktemp("served")) as (url, _process):
        yield url


@pytest.mark.parametrize("as_json", [True, False])
def test_a_remote_run_to_a_closed_pipe_exits_141(
    as_json: bool, served: str, tmp_path: Path
) -> None:
    tape = cassette(tmp_path / "tape.jsonl", LOTS)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("count")
    argv = [*agentd_argv(), "run", "--url", served, "--model", f"replay:{tape}"]
    _out, code, err = first_line_then_close(
        [*argv, *(["--json"] if as_json else []), f"@{prompt}"], clean_env()
    )
    assert code == 141, err
    assert err == ""


class RunsHandler(BaseHTTPRequestHandler):
    """A daemon's `GET /v1/runs` with 500 runs (long prompts: ~0.5 MB of JSON lines)."""

    def do_GET(self) -> None:
        runs = [
            {
                "runId": f"run_{n:04d}",
                "status": "completed",
                "agent": "cli",
                "createdAt": "2026-01-01T00:00:00Z",
                "usage": {"inputTokens": 1, "outputTokens": 1},
                "prompt": "p" * 1000,
            }
            for n in range(500)
        ]
        body = json.dumps({"data": runs, "meta": {"hasMore": False}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def runs_server() -> Iterator[str]:
    yield from serving(ThreadingHTTPServer(("127.0.0.1", 0), RunsHandler))


def test_runs_to_a_closed_pipe_exits_141(runs_server: str) -> None:
    argv = [*agentd_argv(), "runs", "--url", runs_server, "--json", "--limit", "500"]
    out, code, err = first_line_then_close(argv, clean_env())
    assert json.loads(out.split(b"\n", 1)[0])["runId"] == "run_0000"
    assert code == 141, err
    assert err == ""


# -- an output that cannot be written ---------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("extra", [["--json"], ["--limit", "1"]])
def test_a_full_output_is_one_line_and_exit_1(runs_server: str, extra: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*agentd_argv(), "runs", "--url", runs_server, *extra],
            env=clean_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr == "agentd runs: cannot write the output: No space left on device\n"


# -- a workspace the daemon cannot write into ---------------------------------------------------


def on_workspace(command: str, workspace: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`agentd run` or `agentd demo`, whose daemon runs in the process, on `workspace`."""
    argv = {
        "run": ["run", "--model", "replay:tape.jsonl", "--state-dir", str(tmp_path / "state")],
        "demo": ["demo", "--exit"],
    }[command]
    prompt = ["hi"] if command == "run" else []
    return subprocess.run(
        [*agentd_argv(), *argv, "--workspace", str(workspace), *prompt],
        env=clean_env(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_workspace_without_room_for_agentd_is_a_usage_error(
    command: str, tmp_path: Path, workspace: Path
) -> None:
    (workspace / ".agentd").write_text("not a directory")
    result = on_workspace(command, workspace, tmp_path)
    assert result.returncode == 2, result.stderr
    assert_one_line(result.stderr)
    assert result.stderr.startswith(f"agentd {command}: cannot use the workspace ")
    assert f"{workspace / '.agentd'} is not a directory" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_read_only_workspace_is_a_usage_error(
    command: str, tmp_path: Path, workspace: Path
) -> None:
    workspace.chmod(0o555)
    try:
        result = on_workspace(command, workspace, tmp_path)
    finally:
        workspace.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert_one_line(result.stderr)
    assert f"{workspace} is not writable" in result.stderr


# -- the dev URL template ---------------------------------------------------------------------


def serve_argv(workspace: Path, tmp_path: Path, port: int, template: str) -> list[str]:
    return [
        *agentd_argv(),
        "serve",
        "--port",
        str(port),
        "--workspace",
        str(workspace),
        "--state-dir",
        str(tmp_path / "state"),
        "--dev-url-template",
        template,
    ]


def test_serve_takes_host_in_the_dev_url_template(tmp_path: Path, workspace: Path) -> None:
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            serve_argv(workspace, tmp_path, port, "http://{host}:{port}/"),
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(lambda: port_accepts(port) or proc.poll() is not None, "agentd serve")
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unknown_placeholder_names_the_ones_there_are(tmp_path: Path, workspace: Path) -> None:
    result = subprocess.run(
        serve_argv(workspace, tmp_path, 0, "http://{hostname}/"),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "agentd serve: dev URL template 'http://{hostname}/' is not valid: unknown placeholder "
        "{hostname}; use {port}, and optionally {sandboxId} and {host}\n"
    )


# -- a server that is not agentd, a URL that is not one ------------------------------------------


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[str]:
    """`python -m http.server`'s handler: an HTML 404 for every API path."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    yield from serving(ThreadingHTTPServer(("127.0.0.1", 0), handler))


@pytest.mark.parametrize("command", ["runs", "threads"])
def test_a_server_that_is_not_agentd_is_said_in_one_line(command: str, web_server: str) -> None:
    result = subprocess.run(
        [*agentd_argv(), command, "--url", web_server],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"agentd {command}: {web_server} answered HTTP 404 without agentd's JSON; is this an "
        "agentd daemon?\n"
    )


@pytest.mark.parametrize(
    "argv", [["runs", "--url", "notaurl"], ["run", "--url", "notaurl", "--agent", "x", "hi"]]
)
def test_a_url_without_a_scheme_is_a_usage_error(argv: list[str]) -> None:
    result = subprocess.run(
        [*agentd_argv(), *argv], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"agentd {argv[0]}: 'notaurl' is not a valid URL: give the daemon's http:// or "
        "https:// URL\n"
    )


# -- SIGTERM once the demo's app is up ------------------------------------------------------------


def test_sigterm_once_the_demo_app_is_up_exits_0(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*agentd_argv(), "demo", "--workspace", str(tmp_path / "workspace")],
        env=clean_env(TMPDIR=str(tmp_path)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        shown = read_some(proc.stdout.fileno(), b"Press Ctrl-C to stop it", 120).decode()
        url = re.search(r"✔ (http://localhost:(\d+)/) answered HTTP 200", shown)
        assert url, shown
        assert http_get(url.group(1))[0] == 200
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    wait_until(lambda: not port_accepts(int(url.group(2))), "the app to stop", timeout=10)
