"""`agentd demo`, end to end: the shipped cassette drives a real run in a temporary
workspace; the app's tests pass, its server answers while the demo keeps it up, and nothing
is left running when the demo exits."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest

from runtime.cli import main
from runtime.demo import CASSETTE_PATH, DEMO_TOOLS, LIVE_MODELS
from runtime.messages import TextPart
from runtime.providers.replay import parse_cassette
from tests.cli.support import (
    REPO,
    agentd_argv,
    answers,
    clean_env,
    http_get,
    json_lines,
    pid_alive,
    port_accepts,
    wait_until,
)
from tests.fakes.demo_cassette import APP_FILES, build_cassette
from tests.fakes.model_server import FakeModelServer, Turn, text

FIXTURE = REPO / "tests" / "fixtures" / "demo_events.jsonl"
SERVER_PID = re.compile(r"\(python3 pid (\d+)\)")


@dataclass
class DemoRun:
    returncode: int
    stderr: str
    events: list[dict[str, Any]]
    workspace: Path

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def result_of(self, tool: str, cmd_part: str = "") -> dict[str, Any]:
        (call,) = [
            e
            for e in self.of_type("tool_call")
            if e["tool"] == tool and cmd_part in str(e["input"].get("cmd", ""))
        ]
        (result,) = [e for e in self.of_type("tool_result") if e["callId"] == call["callId"]]
        return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One `agentd demo --exit --json` for the whole module (it takes a few seconds)."""
    workspace = tmp_path_factory.mktemp("demo") / "workspace"
    result = subprocess.run(
        [*agentd_argv(), "demo", "--exit", "--json", "--workspace", str(workspace)],
        env=clean_env(TMPDIR=str(workspace.parent)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return DemoRun(result.returncode, result.stderr, json_lines(result.stdout), workspace)


def test_demo_exits_0(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stderr


def test_the_apps_tests_ran_and_passed(demo: DemoRun) -> None:
    result = demo.result_of("exec_command", "unittest")
    assert not result["isError"]
    assert "Process exited with code 0" in result["output"]
    assert "Ran 3 tests" in result["output"]
    assert re.search(r"^OK$", result["output"], re.MULTILINE)


def asked_dev_url(demo: DemoRun) -> dict[str, Any]:
    """The dev_url event get_dev_url emitted (the run's own announcement names a pid)."""
    (dev_url,) = [e for e in demo.of_type("dev_url") if "pid" not in e]
    return dev_url


def test_the_run_completed_with_a_dev_url_that_answered(demo: DemoRun) -> None:
    dev_url = asked_dev_url(demo)
    # The run saw the server start listening by itself (and the one the app's tests ran).
    seen = [e for e in demo.of_type("dev_url") if "pid" in e]
    assert [e["url"] for e in seen if e["port"] == dev_url["port"]] == [dev_url["url"]]
    assert dev_url["url"] == f"http://localhost:{dev_url['port']}/"
    assert "The server answered HTTP 200." in demo.result_of("get_dev_url")["output"]
    complete = demo.events[-1]
    assert complete["type"] == "complete"
    assert complete["status"] == "completed"
    assert complete["devUrl"] == dev_url["url"]
    assert sorted(complete["files"]) == sorted("/" + name for name in APP_FILES)


def test_the_apps_files_are_in_the_workspace(demo: DemoRun) -> None:
    for name in APP_FILES:
        assert (REPO / "tests" / "fakes" / "demo_app" / name).read_text() == (
            demo.workspace / name
        ).read_text()


def test_everything_is_shut_down_after_the_demo(demo: DemoRun) -> None:
    dev_url = asked_dev_url(demo)
    assert not port_accepts(dev_url["port"])
    match = SERVER_PID.search(demo.result_of("get_dev_url")["output"])
    assert match, "get_dev_url names the server's process"
    wait_until(lambda: not pid_alive(int(match.group(1))), "the app server to be gone", 5)


def test_the_recorded_fixture_is_still_what_the_demo_does(demo: DemoRun) -> None:
    """tests/fixtures/demo_events.jsonl feeds the renderer's golden test; when the demo
    changes, re-record it: `agentd demo --exit --json > tests/fixtures/demo_events.jsonl`."""

    def outline(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
        steps: list[tuple[str, ...]] = []
        for e in events:
            if e["type"] in ("tool_call", "tool_result"):
                steps.append((e["type"], e["tool"], json.dumps(e.get("input"), sort_keys=True)))
            elif e["type"] == "file_edit":
                steps.append((e["type"], e["path"], e["action"], e["diff"]))
            elif e["type"] in ("run_started", "complete") or (
                e["type"] == "dev_url" and "pid" not in e  # the run's own: timing-dependent
            ):
                steps.append((e["type"],))
        return steps

    assert outline(demo.events) == outline(json_lines(FIXTURE.read_text()))


def test_the_shipped_cassette_is_generated_from_its_source() -> None:
    # Regenerate with `python -m tests.fakes.demo_cassette` after editing the script.
    assert CASSETTE_PATH.read_text() == build_cassette()


def test_demo_keeps_the_app_up_until_ctrl_c(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    child = pexpect.spawn(
        agentd_argv()[0],
        [*agentd_argv()[1:], "demo", "--workspace", str(workspace)],
        env=clean_env(TMPDIR=str(tmp_path)),
        encoding="utf-8",
        timeout=90,
        dimensions=(50, 200),
    )
    try:
        child.expect("Press Ctrl-C to stop it and exit.")
        shown = child.before
        assert "\x1b[" in shown  # a terminal gets colours
        url = re.search(r"✔ (http://localhost:(\d+)/) answered HTTP 200", shown)
        assert url, shown
        status, body = http_get(url.group(1))
        assert status == 200 and b"<h1>Notes</h1>" in body
        status, body = http_get(url.group(1) + "api/health")
        assert status == 200 and json.loads(body) == {"ok": True}
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        assert "Traceback" not in child.before
    finally:
        if child.isalive():
            child.terminate(force=True)
    assert not port_accepts(int(url.group(2)))
    assert not answers(url.group(1))


async def test_live_demo_asks_the_model_and_records_what_it_said(tmp_path: Path) -> None:
    """--live sends the demo's task to a model API (here the wire-faithful fake Anthropic
    server) with the default model, and --record saves its turns as a cassette. This model
    answers without building anything, so the demo fails and says why on stderr, also with
    --json. (The full demo on the shipped cassette is the `demo` fixture above.)"""
    recorded = tmp_path / "recorded.jsonl"
    async with FakeModelServer() as server:
        server.script(Turn([text("I would ", "rather not.")]))
        argv = ["demo", "--live", "--record", str(recorded), "--exit", "--json"]
        proc = await asyncio.create_subprocess_exec(
            *agentd_argv(),
            *argv,
            "--workspace",
            str(tmp_path / "workspace"),
            env=clean_env(**server.env(), TMPDIR=str(tmp_path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 1
    assert err.decode() == "agentd demo: the agent finished without starting a dev server\n"
    complete = json_lines(out.decode())[-1]
    assert complete["status"] == "completed" and complete["output"] == "I would rather not."

    (request,) = server.requests
    assert request.api == "anthropic"
    assert request.body["model"] == LIVE_MODELS["ANTHROPIC_API_KEY"]  # both keys set
    assert sorted(t["name"] for t in request.body["tools"]) == sorted(DEMO_TOOLS)
    (turn,) = parse_cassette(recorded.read_text())
    assert turn.content == [TextPart(text="I would rather not.")]
    assert turn.streams == [["I would ", "rather not."]]
    # the same task as the shipped cassette's first turn: system prompt, tools and prompt
    assert turn.request == parse_cassette(CASSETTE_PATH.read_text())[0].request


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--record", "x.jsonl"], "--model and --record go with --live"),
        (["demo", "--live"], "--live needs ANTHROPIC_API_KEY or OPENAI_API_KEY"),
        (["demo", "--workspace", "/proc/no/such/dir"], "cannot create the workspace"),
    ],
)
def test_demo_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentd demo: ") and message in err
