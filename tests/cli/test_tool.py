"""`agentd tool NAME '{json}'`: one tool call. A command's output on stdout (once) and how it
ended on stderr; other tools' text on stdout and their events rendered on stderr; exit status
0 (ok), 1 (the tool returned an error, the command exited non-zero or was still running) or
2 (usage error)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
from pathlib import Path

import pytest

from runtime.cli import main
from tests.cli.support import agentd_argv, clean_env, json_lines, pid_alive, wait_until


def test_console_script_runs_a_command_in_the_workspace(workspace: Path) -> None:
    result = subprocess.run(
        [*agentd_argv(), "tool", "exec_command", '{"cmd": "echo tool-ran; pwd"}'],
        cwd=workspace.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Process exited with code 0" in result.stderr
    # The command's output, once, as the command wrote it; nothing else on stdout.
    assert result.stdout.count("tool-ran") == 1 and "tool-ran" not in result.stderr
    # --workspace defaults to the current directory
    assert result.stdout == f"tool-ran\n{workspace.parent.resolve()}\n"


def test_a_commands_whole_output_reaches_stdout_past_the_runs_live_cap(workspace: Path) -> None:
    """A run's live view of one call is capped (2 MiB); the CLI's stdout is the command's own
    output, every byte of it (7 MB here)."""
    result = subprocess.run(
        [*agentd_argv(), "tool", "exec_command", '{"cmd": "seq 1 1000000"}'],
        cwd=workspace,
        env=clean_env(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = "".join(f"{n}\n" for n in range(1, 1_000_001)).encode()
    assert len(result.stdout) == len(expected) and result.stdout == expected


def test_workspace_flag_and_events_on_stderr(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = json.dumps({"path": "notes/hello.txt", "content": "hi\n"})
    assert main(["tool", "write_file", args, "--workspace", str(workspace)]) == 0
    assert (workspace / "notes" / "hello.txt").read_text() == "hi\n"
    captured = capsys.readouterr()
    assert "notes/hello.txt" in captured.out
    # The edit renders as `agentd run` shows it: a diff, not JSON.
    assert "✎ create notes/hello.txt\n" in captured.err and "  +hi\n" in captured.err
    assert "{" not in captured.err


def test_a_tool_error_exits_1(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["tool", "read_file", '{"path": "missing.txt"}', "--workspace", str(workspace)]) == 1
    )
    assert "missing.txt does not exist" in capsys.readouterr().out


def test_arguments_the_tool_rejects_exit_1(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid JSON the tool's schema refuses is the model's kind of mistake: a tool error.
    assert main(["tool", "exec_command", '{"command": "ls"}', "--workspace", str(workspace)]) == 1
    assert "missing required field 'cmd'" in capsys.readouterr().out


def test_a_command_that_exits_non_zero_exits_1(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tool", "exec_command", '{"cmd": "exit 3"}', "--workspace", str(workspace)]) == 1
    assert "Process exited with code 3" in capsys.readouterr().err


def test_a_command_still_running_when_the_wait_ends_is_stopped_and_said_so(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = json.dumps({"cmd": "echo started; sleep 30", "yield_time_ms": 300})
    assert main(["tool", "exec_command", args, "--workspace", str(workspace)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "started\n"
    assert "the command was still running (session 1)" in captured.err
    assert "has been stopped" in captured.err and "yield_time_ms" in captured.err


PATCH = """*** Begin Patch
*** Add File: hello.py
+print("hello")
*** End Patch
"""


def test_apply_patch_reads_the_patch_from_a_file_or_stdin(
    workspace: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patch_file = tmp_path / "hello.patch"
    patch_file.write_text(PATCH)
    assert main(["tool", "apply_patch", f"@{patch_file}", "--workspace", str(workspace)]) == 0
    assert (workspace / "hello.py").read_text() == 'print("hello")\n'
    captured = capsys.readouterr()
    assert "✎ create hello.py" in captured.err and '  +print("hello")' in captured.err

    (workspace / "hello.py").unlink()
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"input": PATCH})))
    assert main(["tool", "apply_patch", "-", "--workspace", str(workspace)]) == 0
    assert (workspace / "hello.py").exists()

    assert main(["tool", "read_file", f"@{tmp_path / 'none.json'}"]) == 2
    assert "cannot read the arguments from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tool", "read_file", "{not json"], "arguments are not valid JSON"),
        (["tool", "read_file", '["a.txt"]'], "arguments must be a JSON object"),
        (["tool", "no_such_tool", "{}"], "unknown tool 'no_such_tool'; tools: exec_command"),
        (["tool", "list_dir", "{}", "--workspace", "/nonexistent/dir"], "is not a directory"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("agentd tool: ") and message in captured.err


def test_json_output(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tool", "exec_command", '{"cmd": "echo out"}', "--workspace", str(workspace)]
    assert main([*argv, "--json"]) == 0
    (ok,) = json_lines(capsys.readouterr().out)
    assert set(ok) == {"output", "isError", "data"}
    assert ok["isError"] is False
    assert ok["data"]["exit_code"] == 0 and ok["data"]["output"] == "out\n"
    assert ok["output"].startswith("Wall time: ")

    assert main(["tool", "read_file", '{"path": "nope"}', "--workspace", str(workspace), "--json"])
    (failed,) = json_lines(capsys.readouterr().out)
    assert failed["isError"] is True and "nope does not exist" in failed["output"]


def test_ctrl_c_stops_the_command_and_exits_130(workspace: Path) -> None:
    args = json.dumps({"cmd": "echo $$ > sleeper.pid; exec sleep 30", "yield_time_ms": 30000})
    proc = subprocess.Popen(
        [*agentd_argv(), "tool", "exec_command", args, "--workspace", str(workspace)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = workspace / "sleeper.pid"
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", "sleep")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    sleeper = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(sleeper), "the command to be stopped", timeout=5)
