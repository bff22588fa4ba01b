"""`agentd run`: the rendered stream, `--json`, `--url` against a real `agentd serve`, and the
exit statuses 0 completed, 1 failed, 2 usage error, 130 interrupted.

The model is the replay provider on small cassettes written here; everything else is real:
the daemon (in-process, or a `serve` subprocess), the tools and their processes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from runtime.cli import main
from runtime.messages import Message, TextPart, ToolCallPart
from runtime.providers.base import AssistantTurn
from runtime.providers.replay import request_fingerprint
from tests.cli.support import (
    agentd_argv,
    clean_env,
    free_port,
    http_get,
    json_lines,
    pid_alive,
    turn,
    wait_until,
    write_cassette,
)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def exec_turn(cmd: str, text: str = "") -> AssistantTurn:
    parts = [TextPart(text=text)] if text else []
    call = ToolCallPart(id="call_1", name="exec_command", arguments={"cmd": cmd})
    return turn(*parts, call, stop="tool_use")


def cassette(path: Path, cmd: str) -> Path:
    """The model runs `cmd`, then says "All done."."""
    return write_cassette(
        path,
        [exec_turn(cmd, "Running it."), turn(TextPart(text="All done."))],
    )


def run_argv(model: str, workspace: Path, state_dir: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        model,
        "--workspace",
        str(workspace),
        "--state-dir",
        str(state_dir),
        *extra,
        "do it",
    ]


# -- 0: completed ---------------------------------------------------------------------------


def test_completed_run_renders_for_a_person(
    tmp_path: Path, workspace: Path, state_dir: Path
) -> None:
    tape = cassette(tmp_path / "tape.jsonl", "echo made-by-run > made.txt && echo wrote it")
    result = subprocess.run(
        [*agentd_argv(), *run_argv(f"replay:{tape}", workspace, state_dir)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Running it.\n▶ exec_command $ echo made-by-run > made.txt && echo wrote it\n" in out
    # The file the command wrote is shown as an edit of the call, before its result.
    assert "wrote it\n✎ create /made.txt\n" in out
    assert "+made-by-run\n✓ exec_command (" in out
    assert "All done.\n■ status completed · 2 iterations · 200 in / 20 out tokens" in out
    assert "\x1b[" not in out  # not a terminal: no colours
    assert "Ctrl-C cancels" not in out  # nor a spinner
    assert (workspace / "made.txt").read_text() == "made-by-run\n"


def test_json_prints_the_raw_events(
    tmp_path: Path, workspace: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tape = cassette(tmp_path / "tape.jsonl", "echo json-mode")
    assert main(run_argv(f"replay:{tape}", workspace, state_dir, "--json")) == 0
    events = json_lines(capsys.readouterr().out)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_started" and events[0]["agent"] == "cli"
    (call,) = [e for e in events if e["type"] == "tool_call"]
    assert call["input"] == {"cmd": "echo json-mode"}
    (result,) = [e for e in events if e["type"] == "tool_result"]
    assert "Process exited with code 0" in result["output"] and not result["isError"]
    assert events[-1]["type"] == "complete"
    assert events[-1]["status"] == "completed" and events[-1]["output"] == "All done."


# -- 1: failed --------------------------------------------------------------------------------


def test_a_diverging_cassette_fails_the_run(
    tmp_path: Path, workspace: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded_for = request_fingerprint("another system prompt", [Message.user("other")], [])
    tape = write_cassette(tmp_path / "tape.jsonl", [turn(TextPart(text="hi"))], [recorded_for])
    assert main(run_argv(f"replay:{tape}", workspace, state_dir)) == 1
    out = capsys.readouterr().out
    assert "replay diverged at model turn 1" in out
    assert "AGENTD_REPLAY_STRICT=0" in out  # what a person can do about it
    assert "■ status failed" in out


def test_a_model_error_fails_the_run(
    tmp_path: Path, workspace: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-cassette.jsonl"
    assert main(run_argv(f"replay:{missing}", workspace, state_dir, "--json")) == 1
    events = json_lines(capsys.readouterr().out)
    (error,) = [e for e in events if e["type"] == "error"]
    assert error["code"] == "model_error" and "cannot read cassette" in error["message"]
    assert events[-1]["type"] == "complete" and events[-1]["status"] == "failed"


# -- 2: usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ([], "give exactly one of --agent SLUG or --model MODEL"),
        (["--agent", "a", "--model", "gpt-5"], "give exactly one of --agent SLUG or --model"),
        (["--agent", "nobody"], "agent 'nobody' does not exist"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--model", "gpt-5", "--tools", "exec_command,teleport"], "unknown tool(s): teleport"),
    ],
)
def test_usage_errors_exit_2(
    who: list[str],
    message: str,
    workspace: Path,
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["run", *who, "--workspace", str(workspace), "--state-dir", str(state_dir), "hi"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("agentd run: ") and message in captured.err


def test_a_workspace_that_is_not_a_directory_is_a_usage_error(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = run_argv(f"replay:{tmp_path / 't.jsonl'}", tmp_path / "missing", state_dir)
    assert main(argv) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_an_unusable_state_dir_is_a_usage_error(
    tmp_path: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(run_argv(f"replay:{blocker}", workspace, blocker / "state")) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentd run: cannot use the state dir") and "Traceback" not in err


# -- 130: interrupted -------------------------------------------------------------------------


def test_ctrl_c_cancels_a_long_command_and_exits_130(
    tmp_path: Path, workspace: Path, state_dir: Path
) -> None:
    tape = cassette(tmp_path / "tape.jsonl", "echo $$ > sleeper.pid; exec sleep 30")
    pid_file = workspace / "sleeper.pid"
    proc = subprocess.Popen(
        [*agentd_argv(), *run_argv(f"replay:{tape}", workspace, state_dir, "--json")],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "sleep")
        sleeper = int(pid_file.read_text())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    events = json_lines(out)
    assert events[-1]["type"] == "complete" and events[-1]["status"] == "cancelled"
    assert "cancelling the run" in err
    # the cancel request was answered before the CLI closed its connection: no stray errors
    assert "Traceback" not in err and "never retrieved" not in err, err
    wait_until(lambda: not pid_alive(sleeper), "the cancelled command to be gone", timeout=5)


def test_sigterm_stops_the_run_and_its_processes(
    tmp_path: Path, workspace: Path, state_dir: Path
) -> None:
    # `kill`, a CI timeout or a closed terminal must not leave the run's commands behind.
    tape = cassette(tmp_path / "tape.jsonl", "echo $$ > sleeper.pid; exec sleep 30")
    pid_file = workspace / "sleeper.pid"
    proc = subprocess.Popen(
        [*agentd_argv(), *run_argv(f"replay:{tape}", workspace, state_dir, "--json")],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "sleep")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    sleeper = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(sleeper), "the run's command to be gone", timeout=5)


def test_a_second_ctrl_c_quits_without_waiting(
    tmp_path: Path, workspace: Path, state_dir: Path
) -> None:
    # The command shrugs off SIGTERM, so the cancel takes a moment; the second Ctrl-C must
    # not wait for the daemon's shutdown grace (made long here) before exiting.
    stubborn = "trap '' TERM INT HUP; echo $$ > stubborn.pid; while :; do sleep 0.2; done"
    tape = cassette(tmp_path / "tape.jsonl", stubborn)
    pid_file = workspace / "stubborn.pid"
    child = pexpect.spawn(
        agentd_argv()[0],
        [*agentd_argv()[1:], *run_argv(f"replay:{tape}", workspace, state_dir)],
        env=clean_env(AGENTD_SHUTDOWN_GRACE="60"),
        encoding="utf-8",
        timeout=20,
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "command")
        stubborn_pid = int(pid_file.read_text())
        child.sendintr()
        child.expect("cancelling the run")
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130, child.before
        assert "Traceback" not in child.before and "never retrieved" not in child.before
    finally:
        if child.isalive():
            child.terminate(force=True)
    wait_until(lambda: not pid_alive(stubborn_pid), "the stubborn command to be killed", 10)


def test_ctrl_c_before_the_run_starts_exits_130(tmp_path: Path) -> None:
    # A daemon that accepts the connection and never answers: Ctrl-C lands while the CLI
    # is still defining the ad-hoc agent, before any run exists.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(20)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.Popen(
            [*agentd_argv(), "run", "--url", url, "--model", "gpt-5", "hi"],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(20)
                assert connection.recv(4096).startswith(b"POST /v1/agents ")
                proc.send_signal(signal.SIGINT)
                _out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err


# -- --url: a real `agentd serve` -------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`agentd serve` with a token on a free port, one run at a time and no queue: (its URL,
    its workspace). Shared by the tests below, which leave no run active."""
    root = tmp_path_factory.mktemp("served")
    workspace = root / "workspace"
    workspace.mkdir()
    port = free_port()
    limits = ["--max-concurrent-runs", "1", "--max-queue", "0"]
    log = root / "serve.log"
    with log.open("w") as log_file:  # a file, not a pipe nobody drains while tests run
        proc = subprocess.Popen(
            [*agentd_argv(), "serve", "--port", str(port), "--workspace", str(workspace), *limits],
            env=clean_env(AGENTD_TOKEN="s3cret", AGENTD_STATE_DIR=str(root / "state")),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return http_get(url + "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(healthy, "agentd serve to answer /healthz")
        yield url, workspace
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_url_runs_on_a_running_daemon(served: tuple[str, Path], tmp_path: Path) -> None:
    url, served_workspace = served
    tape = cassette(tmp_path / "tape.jsonl", "echo on-the-daemon > where.txt")
    argv = [*agentd_argv(), "run", "--url", url, "--model", f"replay:{tape}", "--json", "hi"]

    refused = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.startswith("agentd run: missing credentials")

    result = subprocess.run(
        [*argv[:-1], "--token", "s3cret", "hi"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    assert events[-1]["type"] == "complete" and events[-1]["status"] == "completed"
    assert (served_workspace / "where.txt").read_text() == "on-the-daemon\n"

    # AGENTD_URL and AGENTD_TOKEN stand in for the flags, as --help says; the agent the
    # first run saved as 'cli' is there to run again.
    again = subprocess.run(
        [*agentd_argv(), "run", "--agent", "cli", "again"],
        env=clean_env(AGENTD_URL=url, AGENTD_TOKEN="s3cret"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "■ status completed" in again.stdout


def test_ctrl_c_cancels_the_run_on_the_daemon(served: tuple[str, Path], tmp_path: Path) -> None:
    url, served_workspace = served
    tape = cassette(tmp_path / "tape.jsonl", "echo $$ > sleeper.pid; exec sleep 30")
    env = clean_env(AGENTD_TOKEN="s3cret")
    argv = [*agentd_argv(), "run", "--url", url, "--model", f"replay:{tape}", "--json", "hi"]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pid_file = served_workspace / "sleeper.pid"
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "sleep")
        # The daemon's one slot is taken and it queues nothing: that is not a usage error.
        busy = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1, busy.stderr
        assert busy.stderr.startswith("agentd run: ") and "the queue is full" in busy.stderr
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert json_lines(out)[-1]["status"] == "cancelled"
    assert "Traceback" not in err
    sleeper = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(sleeper), "the run's command to be gone", timeout=5)
