"""What makes the CLI friendlier for a person: a spinner on a terminal while a run is quiet,
--version, a prompt or a patch from stdin or a file, --keep and the dev URL, `agentd runs` and
`agentd threads`, and error messages that say what to do."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
from pathlib import Path

import pexpect
import pytest

from runtime.cli import main
from runtime.messages import TextPart, ToolCallPart
from runtime.render import EventRenderer, Spinner
from tests.cli.support import (
    agentd_argv,
    clean_env,
    free_port,
    http_get,
    json_lines,
    pid_alive,
    port_accepts,
    serving_agentd,
    turn,
    wait_until,
    write_cassette,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_spinner_says_what_the_run_waits_for_and_erases_itself() -> None:
    out = io.StringIO()
    renderer = EventRenderer(out)
    clock = FakeClock()
    spinner = Spinner(out, renderer, delay=0.5, clock=clock)

    spinner.before({"type": "run_started"})
    spinner.tick()
    assert out.getvalue() == ""  # not quiet for long enough yet
    clock.now += 3
    spinner.tick()
    assert out.getvalue().endswith("\r⠋ waiting for the model · 3s · Ctrl-C cancels\x1b[K")

    call = {"type": "tool_call", "callId": "c1", "tool": "exec_command", "input": {"cmd": "x"}}
    spinner.before(call)
    assert out.getvalue().endswith("\r\x1b[K")  # erased before the next output
    renderer.render(call)
    clock.now += 7
    spinner.tick()
    assert out.getvalue().endswith("running exec_command · 7s · Ctrl-C cancels\x1b[K")

    spinner.before({"type": "tool_output", "callId": "c1", "chunk": "partial line"})
    renderer.render({"type": "tool_output", "callId": "c1", "chunk": "partial line"})
    before = out.getvalue()
    clock.now += 5
    spinner.tick()
    assert out.getvalue() == before  # never in the middle of a line

    spinner.before({"type": "complete", "status": "completed"})
    clock.now += 5
    spinner.tick()
    assert out.getvalue() == before


def test_a_terminal_gets_the_spinner(tmp_path: Path, workspace: Path) -> None:
    tape = write_cassette(
        tmp_path / "tape.jsonl",
        [
            turn(
                ToolCallPart(id="c1", name="exec_command", arguments={"cmd": "sleep 2"}),
                stop="tool_use",
            ),
            turn(TextPart(text="Slept.")),
        ],
    )
    argv = ["run", "--model", f"replay:{tape}", "--workspace", str(workspace)]
    child = pexpect.spawn(
        agentd_argv()[0],
        [*agentd_argv()[1:], *argv, "--state-dir", str(tmp_path / "state"), "sleep"],
        env=clean_env(HOME=str(tmp_path)),
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
    )
    try:
        child.expect(r"running exec_command · \d+s · Ctrl-C cancels")
        child.expect("Slept.")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("agentd ")


def test_an_unreadable_prompt_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--model", "replay:x", f"@{tmp_path / 'missing.txt'}"]) == 2
    assert "cannot read the prompt from" in capsys.readouterr().err


def dev_server_cassette(path: Path) -> Path:
    server = "python3 -m http.server --bind 127.0.0.1 0"
    return write_cassette(
        path,
        [
            turn(
                ToolCallPart(id="c1", name="exec_command", arguments={"cmd": server}),
                stop="tool_use",
            ),
            turn(
                ToolCallPart(id="c2", name="get_dev_url", arguments={"wait_ms": 10000}),
                stop="tool_use",
            ),
            turn(TextPart(text="It is up.")),
        ],
    )


def test_run_says_the_dev_url_stops_with_it_and_shows_it_once(
    tmp_path: Path, workspace: Path
) -> None:
    tape = dev_server_cassette(tmp_path / "tape.jsonl")
    result = subprocess.run(
        [
            *agentd_argv(),
            "run",
            "--model",
            f"replay:{tape}",
            "--workspace",
            str(workspace),
            "--state-dir",
            str(tmp_path / "state"),
            "serve it",
        ],
        env=clean_env(HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("🌐 dev server: ") == 1
    assert "dev URL:" not in result.stdout  # not again in the summary
    assert "stops now, with this command; rerun with --keep" in result.stderr


def test_keep_serves_the_dev_url_until_ctrl_c(tmp_path: Path, workspace: Path) -> None:
    tape = dev_server_cassette(tmp_path / "tape.jsonl")
    proc = subprocess.Popen(
        [
            *agentd_argv(),
            "run",
            "--model",
            f"replay:{tape}",
            "--workspace",
            str(workspace),
            "--state-dir",
            str(tmp_path / "state"),
            "--keep",
            "--json",
            "serve it",
        ],
        env=clean_env(HOME=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "press Ctrl-C to stop it" in line, line
        url = line.split("keeping ", 1)[1].split(" up;", 1)[0]
        assert http_get(url)[0] == 200  # still served after the run
        proc.send_signal(signal.SIGINT)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert json_lines(out)[-1]["devUrl"] == url
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    wait_until(lambda: not port_accepts(port), "the dev server to stop", timeout=10)


def test_a_busy_port_suggests_port_0(tmp_path: Path, workspace: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [
                *agentd_argv(),
                "serve",
                "--port",
                str(port),
                "--workspace",
                str(workspace),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port 0" in result.stderr and "Traceback" not in result.stderr


def test_lists_say_when_no_daemon_answers(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in ("runs", "threads"):
        assert main([command, "--url", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"agentd {command}: cannot reach the daemon at {url}")
        assert "is `agentd serve` running at that URL?" in err


# -- against a running daemon --------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon_url(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("listed")
    with serving_agentd(root, stop_timeout=20, AGENTD_TOKEN="list-token") as (url, proc):
        yield url
    assert not pid_alive(proc.pid)


def test_runs_and_threads_list_what_the_daemon_holds(
    daemon_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tape = write_cassette(tmp_path / "tape.jsonl", [turn(TextPart(text="ok"))] * 3)
    env = clean_env(AGENTD_URL=daemon_url, AGENTD_TOKEN="list-token")
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("first")
    # The prompt from a file (@FILE), then from stdin (-).
    for prompt, stdin in ((f"@{prompt_file}", None), ("-", "second")):
        done = subprocess.run(
            [*agentd_argv(), "run", "--model", f"replay:{tape}", "--json", prompt],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    token = ["--url", daemon_url, "--token", "list-token"]

    assert main(["runs", *token, "--json"]) == 0
    runs = json_lines(capsys.readouterr().out)
    assert [r["prompt"] for r in runs] == ["second", "first"]
    assert main(["runs", *token, "--limit", "1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["RUN", "STATUS", "AGENT", "AGE", "TOKENS", "PROMPT"]
    assert len(table) == 2 and runs[0]["runId"] in table[1] and "completed" in table[1]
    assert main(["runs", *token, "--status", "failed"]) == 0
    assert capsys.readouterr().err == "no runs\n"

    assert main(["threads", *token, "--agent", "cli"]) == 0
    threads = capsys.readouterr().out.splitlines()
    assert threads[0].split() == ["THREAD", "AGENT", "MESSAGES", "UPDATED"]
    assert {r["threadId"] for r in runs} == {line.split()[0] for line in threads[1:]}
    assert main(["threads", *token, "--json"]) == 0
    assert {t["id"] for t in json_lines(capsys.readouterr().out)} == {r["threadId"] for r in runs}

    assert main(["runs", "--url", daemon_url]) == 2
    assert "pass --token or set AGENTD_TOKEN" in capsys.readouterr().err
