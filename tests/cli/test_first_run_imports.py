"""A first run in a daemon whose warm-up is over imports nothing on the event loop; in a
fresh daemon, none of agentd's modules or an SDK's resources.

The hardening rule: nothing heavy is imported on the event loop during a run (an import
there stalls every stream of the daemon). `agentd serve` loads the /v1 API, the run
machinery, the tools and the model SDKs in a worker thread once it listens, and rehearses a
first request of every model API (runtime/providers/rehearsal.py), so that a run's first
model request, tool calls and events import nothing there. The daemon runs as a real
process with an import spy (tests/cli/spied_daemon.py), armed once its warm-up is over.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from tests.cli.spied_daemon import ARMED, ON_LOOP
from tests.cli.support import clean_env
from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

LISTENING = re.compile(r"listening on (http://\S+)")
REHEARSED = "first requests rehearsed"
NOT_REHEARSED = "could not be rehearsed"
TOKEN = "first-run-token"
PATCH = "*** Begin Patch\n*** Update File: a.txt\n@@\n-hello\n+hello world\n*** End Patch\n"


async def imported_on_the_loop(tmp_path: Path, model: str, *, at_rest: bool) -> list[str]:
    """The modules a first run with tool calls imports on the event loop's thread of a real
    `agentd serve`, posted once its warm-up is over (`at_rest`) or the moment it listens."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "a.txt").write_text("hello\n")
    async with FakeModelServer() as model_server:
        model_server.script(
            Turn([tool_call("exec_command", {"cmd": "echo hi"}, id="c1")]),
            Turn([tool_call("apply_patch", {"input": PATCH}, id="c2")]),
            Turn([tool_call("read_file", {"path": "a.txt"}, id="c3")]),
            Turn([tool_call("list_dir", {"path": "."}, id="c4")]),
            Turn([text("done")]),
        )
        argv = [sys.executable, "-m", "tests.cli.spied_daemon", "serve", "--port", "0"]
        argv += ["--state-dir", str(tmp_path / "state"), "--workspace", str(workspace)]
        argv += ["--token", TOKEN, "--log-level", "info"]
        env = clean_env(**model_server.env(), AGENTD_DEFAULT_MODEL=model)
        process = await anyio.open_process(argv, cwd=workspace, env=env, stderr=-1)
        lines: list[str] = []
        buffer = b""

        async def read_until(*wanted: str) -> str:
            """The first line holding any of `wanted`."""
            nonlocal buffer
            assert process.stderr is not None
            while True:
                for line in lines:
                    if any(text in line for text in wanted):
                        return line
                chunk = await process.stderr.receive()
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                lines.extend(raw.decode(errors="replace") for raw in complete)

        try:
            with anyio.fail_after(60):
                match = LISTENING.search(await read_until("listening on"))
                assert match is not None
                url = match.group(1)
                if at_rest:
                    # the warm-up's last step, once the other SDKs are loaded
                    await read_until(REHEARSED, NOT_REHEARSED)
                process.send_signal(signal.SIGUSR1)
                await read_until(ARMED)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            tools = ["exec_command", "apply_patch", "read_file", "list_dir"]
            agent = {"slug": "first", "model": model, "tools": tools}
            run = {"agent": "first", "prompt": "go", "stream": False}
            async with aiohttp.ClientSession(headers=headers) as http:
                async with http.post(url + "/v1/agents", json=agent) as resp:
                    assert resp.status == 201, await resp.text()
                async with http.post(url + "/v1/run", json=run) as resp:
                    assert resp.status == 200, await resp.text()
                    result = (await resp.json())["data"]
                    assert result["status"] == "completed", result
            assert (workspace / "a.txt").read_text() == "hello world\n"
            assert len(model_server.requests) == 5
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20), anyio.CancelScope(shield=True):
                assert process.stderr is not None
                async for chunk in process.stderr:
                    buffer += chunk
                lines.extend(raw.decode(errors="replace") for raw in buffer.split(b"\n"))
                await process.wait()
    if at_rest:
        assert not [line for line in lines if NOT_REHEARSED in line]
    return [line.split(ON_LOOP, 1)[1] for line in lines if ON_LOOP in line]


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gpt-5"])
async def test_a_first_run_with_tools_imports_nothing_on_the_event_loop(
    tmp_path: Path, model: str
) -> None:
    assert await imported_on_the_loop(tmp_path, model, at_rest=True) == []


# What a fresh daemon's first run must not import on the event loop either: agentd's own
# modules, the modules of the run's workspace watch (`WorkspaceWatch.open`), and the SDK
# resource its provider calls (imported where the provider is made). What the first request
# imports of the HTTP stack and the SDK's tracing is left to the rehearsal, which the warm-up
# makes once no run is active (see runtime.daemon.rehearse_first_requests).
NEVER_ON_THE_LOOP = ("runtime", "tools", "pathspec", "anthropic.resources", "openai.resources")


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gpt-5"])
async def test_a_fresh_daemon_s_first_run_imports_none_of_agentd_or_an_sdk_resource_on_the_loop(
    tmp_path: Path, model: str
) -> None:
    imported = await imported_on_the_loop(tmp_path, model, at_rest=False)
    assert [name for name in imported if name.startswith(NEVER_ON_THE_LOOP)] == []
