"""`agentd serve` as a real process: settings from flags and env, refusal to listen openly
without a token, readiness, SIGTERM with a run in flight, lazy SDK imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from runtime.cli import build_parser, main
from runtime.config import ConfigError, Settings
from tests.api.conftest import MODEL, collect_events
from tests.api.daemon_process import agentd
from tests.fakes.model_server import FakeModelServer, Gate, Turn, text, tool_call

ROOT = Path(__file__).resolve().parents[2]


# -- settings and the command line ---------------------------------------------------------


def test_settings_layer_flags_over_env_over_defaults(tmp_path: Path) -> None:
    env = {
        "AGENTD_PORT": "9001",
        "RUNTOOLS_PORT": "9002",  # AGENTD_ wins over RUNTOOLS_
        "RUNTOOLS_STATE_DIR": str(tmp_path / "s"),
        "RUNTOOLS_DEV_URL_TEMPLATE": "https://{port}-{sandboxId}.example",
        "RUNTOOLS_SANDBOX_ID": "sbx-1",
        "AGENTD_TOKEN": "tok",
        "AGENTD_LOG_LEVEL": "DEBUG",
        "AGENTD_SHUTDOWN_GRACE": "2.5",
    }
    settings = Settings.load({"host": "0.0.0.0", "port": None}, env=env)
    assert settings.port == 9001 and settings.host == "0.0.0.0"
    assert settings.state_dir == tmp_path / "s" and settings.sandbox_id == "sbx-1"
    assert settings.dev_url_template.startswith("https://{port}") and settings.token == "tok"
    assert settings.log_level == "debug" and settings.shutdown_grace == 2.5
    assert Settings.load({"port": 7000}, env=env).port == 7000
    defaults = Settings.load({}, env={})
    assert defaults.host == "127.0.0.1" and defaults.port == 7777 and defaults.token is None
    assert defaults.state_dir == Path("~/.local/state/agentd").expanduser()
    assert defaults.workspace == Path.cwd()
    assert "tok" not in repr(settings)


def test_invalid_settings_name_their_source() -> None:
    with pytest.raises(ConfigError, match="AGENTD_PORT"):
        Settings.load({}, env={"AGENTD_PORT": "many"})
    with pytest.raises(ConfigError, match="--max-queue"):
        Settings.load({"max_queue": "-1"}, env={})
    with pytest.raises(ConfigError, match="without an API token"):
        Settings.load({"host": "0.0.0.0"}, env={}).check()
    with pytest.raises(ConfigError, match="template"):
        Settings.load({"dev_url_template": "http://{nope}"}, env={}).check()
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        Settings.load({"host": host}, env={}).check()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # `.` and `..` match the id's characters but vanish from the link's URL path.
        ({"device_id": ".."}, "--device-id: must not be . or .."),
        ({"device_id": "."}, "--device-id: must not be . or .."),
        ({"control_plane": "http://cp.test/?tenant=1"}, "--control-plane: must be a base URL"),
        ({"control_plane": "http://cp.test/#x"}, "--control-plane: must be a base URL"),
        ({"control_plane": "ftp://cp.test"}, "--control-plane: must be an http:// or https://"),
        ({"public_url": "https://x.test/?a=1"}, "--public-url: must be a base URL"),
    ],
)
def test_link_and_url_settings_that_would_dial_elsewhere_are_refused(
    flags: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load(flags, env={})
    message = str(raised.value)
    assert expected in message
    # The value is named once, and pydantic's "Value error, " is not shown.
    value = next(iter(flags.values()))
    assert message.count(repr(value)) == 1 and "Value error" not in message
    assert Settings.load({"device_id": "mac-1.home", "control_plane": "https://cp.test/"}, env={})


def test_every_serve_flag_is_documented_with_its_env_var(capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag, var in (
        ("--host", "AGENTD_HOST"),
        ("--port", "AGENTD_PORT"),
        ("--workspace", "AGENTD_WORKSPACE"),
        ("--state-dir", "RUNTOOLS_STATE_DIR"),
        ("--token", "AGENTD_TOKEN"),
        ("--sandbox-id", "RUNTOOLS_SANDBOX_ID"),
        ("--dev-url-template", "RUNTOOLS_DEV_URL_TEMPLATE"),
        ("--log-level", "AGENTD_LOG_LEVEL"),
    ):
        assert flag in out and var in out
    assert build_parser().parse_args(["serve"]).func.__name__ == "cmd_serve"


def test_listening_openly_without_a_token_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("AGENTD_TOKEN", raising=False)
    monkeypatch.delenv("RUNTOOLS_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "without an API token" in err and "AGENTD_TOKEN" in err
    assert main(["serve", "--port", "not-a-port"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["bogus"]) == 2


def test_starting_does_not_import_the_model_sdks() -> None:
    """Import time is most of a Python daemon's start-up: the SDKs load on first use."""
    code = (
        "import sys, runtime.cli, runtime.daemon, runtime.api.app, runtime.runs, "
        "runtime.store, runtime.providers.registry\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'anthropic', 'openai'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- the real process ----------------------------------------------------------------------


async def test_serve_sigterm_finishes_the_run_in_flight_then_exits_0(
    tmp_path: Path, workspace: Path
) -> None:
    async with FakeModelServer() as model:
        gate = Gate()
        model.script(Turn([text("finished ", "in grace")], hold=gate, hold_after=2))
        env = {**model.env(), "AGENTD_SHUTDOWN_GRACE": "20"}
        async with (
            agentd(tmp_path, workspace, env) as proc,
            aiohttp.ClientSession() as http,
        ):
            async with http.get(proc.url + "/readyz") as resp:
                assert resp.status == 200
            async with http.post(
                proc.url + "/v1/agents", json={"slug": "a", "model": MODEL, "tools": []}
            ) as resp:
                assert resp.status == 201
            stream = await http.post(proc.url + "/v1/run", json={"agent": "a", "prompt": "go"})
            run_id = stream.headers["X-Run-ID"]
            # The first model call waits for the SDK import (seconds on a loaded machine).
            with anyio.fail_after(60):
                await gate.reached.wait()

            proc.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                while True:  # draining: new runs refused, reads still answered
                    async with http.get(proc.url + "/readyz") as resp:
                        if resp.status == 503:
                            break
                    await anyio.sleep(0.01)
            async with http.post(
                proc.url + "/v1/run", json={"agent": "a", "prompt": "more", "stream": False}
            ) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "shutting_down"
            async with http.get(proc.url + f"/v1/runs/{run_id}") as resp:
                assert resp.status == 200 and (await resp.json())["data"]["status"] == "running"

            gate.open()
            frames = await collect_events(stream)
            stream.close()
            assert frames[-1].data["status"] == "completed"
            assert frames[-1].data["output"] == "finished in grace"
            with anyio.fail_after(15):
                assert await proc.process.wait() == 0
        assert any("agentd stopped" in line for line in proc.log)


async def test_runs_past_the_grace_period_are_interrupted_and_stay_readable(
    tmp_path: Path, workspace: Path
) -> None:
    async with FakeModelServer() as model:
        gate = Gate()
        model.script(Turn([text("never")], hold=gate, hold_after=1))
        env = {**model.env(), "AGENTD_SHUTDOWN_GRACE": "0.2"}
        async with (
            agentd(tmp_path, workspace, env) as proc,
            aiohttp.ClientSession() as http,
        ):
            async with http.post(
                proc.url + "/v1/agents", json={"slug": "a", "model": MODEL, "tools": []}
            ) as resp:
                assert resp.status == 201
            stream = await http.post(proc.url + "/v1/run", json={"agent": "a", "prompt": "go"})
            run_id = stream.headers["X-Run-ID"]
            # The first model call waits for the SDK import (seconds on a loaded machine).
            with anyio.fail_after(60):
                await gate.reached.wait()
            proc.process.send_signal(signal.SIGTERM)
            frames = await collect_events(stream)
            stream.close()
            assert frames[-1].event == "complete"
            assert frames[-1].data["status"] == "interrupted"
            with anyio.fail_after(15):
                assert await proc.process.wait() == 0
            gate.open()

        # The next daemon on the same state dir still has it, with its events.
        async with (
            agentd(tmp_path, workspace, model.env()) as proc,
            aiohttp.ClientSession() as http,
        ):
            async with http.get(proc.url + f"/v1/runs/{run_id}") as resp:
                run = (await resp.json())["data"]
            assert run["status"] == "interrupted" and run["error"]["code"] == "interrupted"
            async with http.get(proc.url + f"/v1/runs/{run_id}/events?after=0") as resp:
                replayed = await collect_events(resp)
            assert [f.data for f in replayed] == [f.data for f in frames]
            proc.process.send_signal(signal.SIGINT)
            with anyio.fail_after(15):
                assert await proc.process.wait() == 0


async def test_a_token_protects_a_daemon_on_all_interfaces(tmp_path: Path, workspace: Path) -> None:
    env = {"AGENTD_TOKEN_UNUSED": "x"}
    async with (
        agentd(tmp_path, workspace, env, "--host", "0.0.0.0", "--token", "t-123") as proc,
        aiohttp.ClientSession() as http,
    ):
        url = proc.url.replace("0.0.0.0", "127.0.0.1")
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(url + "/v1/agents") as resp:
            assert resp.status == 401
        async with http.get(url + "/v1/agents", headers={"X-API-Key": "t-123"}) as resp:
            assert resp.status == 200 and json.loads(await resp.text())["data"] == []
        proc.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await proc.process.wait() == 0


async def test_no_secret_or_token_reaches_the_log_at_debug_level(
    tmp_path: Path, workspace: Path
) -> None:
    """The model echoes secrets into tool calls: the API key, a credential in the daemon's
    environment, and the per-agent ones the daemon only learns from the agents (a `secrets`
    env value, an `*_API_KEY` env value, a custom model's apiKey), also into the paths of
    failed calls, whose error text is logged at debug level. The events stream is read with
    ?access_token=. Not one of them may appear in the daemon's stderr at --log-level debug."""
    api_key = "sk-ant-" + os.urandom(12).hex()
    agent_secret = "agent-secret-" + os.urandom(8).hex()
    agent_key = "agent-key-" + os.urandom(8).hex()
    custom_key = "custom-key-" + os.urandom(8).hex()
    env_secret = "ghp_" + os.urandom(12).hex()
    token = "tok-" + os.urandom(12).hex()
    secrets = [api_key, agent_secret, agent_key, custom_key, env_secret, token]
    async with (
        FakeModelServer(api_key=api_key) as model,
        FakeModelServer(api_key=custom_key) as custom,
    ):
        echo = f"echo {agent_secret} {api_key} {env_secret}"
        model.script(
            Turn(
                [
                    tool_call("exec_command", {"cmd": echo, "login": False}),
                    tool_call("read_file", {"path": f"missing-{agent_secret}-{agent_key}.txt"}),
                ]
            ),
            Turn([text(f"done: {agent_secret} {api_key} {env_secret}")]),
        )
        custom.script(
            Turn([tool_call("read_file", {"path": f"missing-{custom_key}.txt"})]),
            Turn([text(f"done: {custom_key}")]),
        )
        env = {**model.env(), "GITHUB_AUTH_TOKEN": env_secret}
        async with (
            agentd(tmp_path, workspace, env, "--log-level", "debug", "--token", token) as proc,
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
        ):
            agents = [
                {
                    "slug": "a",
                    "model": MODEL,
                    "tools": ["exec_command", "read_file"],
                    "env": {"DEPLOY_TOKEN": agent_secret, "SERVICE_API_KEY": agent_key},
                    "secrets": ["DEPLOY_TOKEN"],
                },
                {
                    "slug": "c",
                    "model": {
                        "provider": "custom",
                        "endpoint": custom.url,
                        "format": "anthropic",
                        "apiKey": custom_key,
                    },
                    "tools": ["read_file"],
                },
            ]
            runs = []
            for agent in agents:
                async with http.post(proc.url + "/v1/agents", json=agent) as resp:
                    assert resp.status == 201, await resp.text()
                body = {"agent": agent["slug"], "prompt": "go", "stream": False}
                async with http.post(proc.url + "/v1/run", json=body) as resp:
                    runs.append((await resp.json())["data"])
                assert runs[-1]["status"] == "completed", runs[-1]
            async with aiohttp.ClientSession() as browser:  # an EventSource: no headers
                events_url = f"{proc.url}/v1/runs/{runs[0]['runId']}/events?access_token={token}"
                async with browser.get(events_url + "&after=0") as resp:
                    assert resp.status == 200
                    frames = await collect_events(resp)
            assert frames[-1].event == "complete"
            proc.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await proc.process.wait() == 0
    log = "\n".join(proc.log)
    assert "access_token=[REDACTED]" in log  # the access log line is there, without it
    failed_calls = [line for line in proc.log if "read_file call" in line]
    assert len(failed_calls) == 2 and all("[REDACTED]" in line for line in failed_calls), log
    assert any("DEBUG" in line for line in proc.log)
    for secret in secrets:
        assert secret not in log


def test_the_first_requests_load_the_api_the_tools_and_the_run_machinery_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """Metrics, the OpenAPI document, an agent upserted and run right after start-up, before
    any warm-up: the /v1 handlers, the tool modules and the run machinery (loop, lifecycle,
    providers...), which start-up does not import, are imported by worker threads, never on
    the event loop, and so is the document built."""
    root = Path(__file__).resolve().parents[2]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.api.first_request", str(workspace)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200, 201, 200], done.stderr
    assert report["result"] == "hello from the cassette"
    # (but the HTTP tool, whose allow-list read the Settings' custom tool URL prefixes)
    assert report["loaded_at_start"] == ["tools.http_tool"]
    assert report["missing"] == []
    assert report["on_loop"] == []
    assert report["openapi_on_loop"] == [False]  # built once, by a worker thread


@pytest.mark.parametrize("part", ["machinery", "v1"])
def test_run_machinery_or_api_that_cannot_load_is_a_clear_503_not_a_hang(
    tmp_path: Path, part: str
) -> None:
    """A module of the run machinery (or of the /v1 API) that fails to import: every /v1/
    request answers 503 naming it (the error envelope, never a 500 or a wait), /readyz says
    so, /healthz is up."""
    root = Path(__file__).resolve().parents[2]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.api.first_request", str(workspace), "broken", part],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    upsert, listing, readyz, healthz = json.loads(done.stdout.strip().splitlines()[-1])
    for status, body in (upsert, listing, readyz):
        assert status == 503, body
        assert body["error"]["code"] == "unavailable"
        assert "importing runtime.no_such_module failed" in body["error"]["message"]
        assert "ModuleNotFoundError" in body["error"]["message"]
    assert healthz[0] == 200
    assert "Traceback" in done.stderr  # the daemon log has the details
