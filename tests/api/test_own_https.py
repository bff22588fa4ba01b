"""agentd's own HTTPS requests (tools/tls.py) from real `agentd serve` and `agentd connect`
processes, which import aiohttp without reading the trust store: a webhook delivery, a
custom tool, a Tool Hub tool and the link to the control plane, each to a server on
127.0.0.1 whose CA only `SSL_CERT_FILE` names. Each succeeds with it and fails on the
certificate without it (so the requests are verified, not let through), and the commands a
run starts see the process's own `SSL_CERT_FILE`."""

from __future__ import annotations

import fcntl
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.api.conftest import MODEL, collect_events
from tests.api.daemon_process import ROOT, agentd
from tests.fakes.control_plane import FakeControlPlane
from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call
from tests.fresh_interpreter import json_printed
from tools.tls import NOWHERE, TRUST_STORE_VARIABLES, trust_store_unread

HUB_TOOL = {
    "name": "Jira search",
    "description": "Search Jira issues.",
    "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
}


def server_context(certificates: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    return context


@dataclass
class HttpsServer:
    """One HTTPS server on 127.0.0.1 for all three: a webhook receiver (`/hook`), a Tool Hub
    (`/hub/tools/...`) and a custom tool (`/tools/orders`)."""

    url: str = ""
    requests: list[str] = field(default_factory=list)
    delivered: anyio.Event = field(default_factory=anyio.Event)

    async def hook(self, request: web.Request) -> web.Response:
        self.requests.append("webhook " + json.loads(await request.read())["event"])
        self.delivered.set()
        return web.Response(status=204)

    async def describe(self, request: web.Request) -> web.Response:
        self.requests.append("hub describe")
        return web.json_response(HUB_TOOL)

    async def invoke(self, request: web.Request) -> web.Response:
        self.requests.append("hub invoke")
        return web.json_response({"output": "3 issues match"})

    async def orders(self, request: web.Request) -> web.Response:
        self.requests.append("custom tool")
        return web.json_response({"output": "order o-42 shipped"})


@pytest.fixture
async def https_server(certificates: Path) -> AsyncIterator[HttpsServer]:
    server = HttpsServer()
    app = web.Application()
    app.router.add_post("/hook", server.hook)
    app.router.add_get("/hub/tools/{slug}", server.describe)
    app.router.add_post("/hub/tools/{slug}/invoke", server.invoke)
    app.router.add_post("/tools/orders", server.orders)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(certificates))
    await site.start()
    server.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


def daemon_env(model: FakeModelServer, server: HttpsServer, ca: Path | None) -> dict[str, str]:
    env = {
        **model.env(),
        "AGENTD_CUSTOM_TOOL_URL_PREFIXES": f"{server.url}/tools/",
        "AGENTD_TOOL_HUB_URL": f"{server.url}/hub",
        "SSL_CERT_FILE": str(ca) if ca else "",
        "SSL_CERT_DIR": "",
    }
    return env


def agent(server: HttpsServer, hub_slug: str | None) -> dict[str, Any]:
    orders = {
        "name": "orders",
        "description": "Look up an order.",
        "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}},
        "invokeUrl": f"{server.url}/tools/orders",
    }
    tools: list[Any] = ["exec_command", orders, *([hub_slug] if hub_slug else [])]
    return {"slug": "a", "model": MODEL, "tools": tools, "webhookUrl": f"{server.url}/hook"}


async def test_webhooks_custom_tools_and_the_tool_hub_trust_what_ssl_cert_file_names(
    tmp_path: Path, workspace: Path, certificates: Path, https_server: HttpsServer
) -> None:
    ca = certificates / "ca.pem"
    async with FakeModelServer() as model:
        model.script(
            Turn(
                [
                    tool_call("orders", {"id": "o-42"}, id="c1"),
                    tool_call("jira-search", {"q": "login"}, id="c2"),
                    tool_call("exec_command", {"cmd": "echo cert=$SSL_CERT_FILE"}, id="c3"),
                ]
            ),
            Turn([text("done")]),
        )
        env = daemon_env(model, https_server, ca)
        async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
            async with http.post(
                proc.url + "/v1/agents", json=agent(https_server, "jira-search")
            ) as r:
                assert r.status == 201, await r.text()
            body = {"agent": "a", "prompt": "go", "stream": False}
            async with http.post(proc.url + "/v1/run", json=body) as r:
                run = (await r.json())["data"]
            assert run["status"] == "completed", run
            async with http.get(f"{proc.url}/v1/runs/{run['runId']}/events") as r:
                frames = await collect_events(r)
            with anyio.fail_after(30):
                await https_server.delivered.wait()

    results = {f.data["callId"]: f.data for f in frames if f.event == "tool_result"}
    assert [results[c]["isError"] for c in ("c1", "c2", "c3")] == [False] * 3, results
    assert results["c1"]["output"] == "order o-42 shipped"
    assert results["c2"]["output"] == "3 issues match"
    # The trust store was read nowhere only for aiohttp's import: a command sees the daemon's.
    assert f"cert={ca}" in results["c3"]["output"]
    assert set(https_server.requests) == {
        "custom tool",
        "hub describe",
        "hub invoke",
        "webhook run.completed",
    }


async def test_without_the_ca_each_request_fails_on_the_certificate(
    tmp_path: Path, workspace: Path, https_server: HttpsServer
) -> None:
    async with FakeModelServer() as model:
        model.script(Turn([tool_call("orders", {"id": "o-42"}, id="c1")]), Turn([text("done")]))
        env = daemon_env(model, https_server, ca=None)
        async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
            async with http.post(
                proc.url + "/v1/agents", json=agent(https_server, "jira-search")
            ) as r:
                refused = await r.json()
            assert r.status >= 400 and "CERTIFICATE_VERIFY_FAILED" in refused["error"]["message"]

            async with http.post(proc.url + "/v1/agents", json=agent(https_server, None)) as r:
                assert r.status == 201, await r.text()
            body = {"agent": "a", "prompt": "go", "stream": False}
            async with http.post(proc.url + "/v1/run", json=body) as r:
                run = (await r.json())["data"]
            async with http.get(f"{proc.url}/v1/runs/{run['runId']}/events") as r:
                frames = await collect_events(r)
            [result] = [f.data for f in frames if f.event == "tool_result"]
            assert result["isError"] and "CERTIFICATE_VERIFY_FAILED" in result["output"]

            retried = 'agentd_webhook_deliveries_total{event="run.completed",outcome="retried"}'
            with anyio.fail_after(30):
                while True:  # the delivery's first attempt fails and is retried
                    async with http.get(proc.url + "/metrics") as r:
                        if retried in await r.text():
                            break
                    await anyio.sleep(0.05)
            assert any("CERTIFICATE_VERIFY_FAILED" in line for line in proc.log)
    assert https_server.requests == []


@pytest.mark.parametrize("trusted", [True, False])
async def test_agentd_connect_dials_an_https_control_plane_with_the_trust_store(
    tmp_path: Path, workspace: Path, certificates: Path, trusted: bool
) -> None:
    async with FakeControlPlane("cp-token", ssl_context=server_context(certificates)) as cp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AGENTD_TOKEN": "cp-token",
            "SSL_CERT_FILE": str(certificates / "ca.pem") if trusted else "",
            "SSL_CERT_DIR": "",
        }
        argv = [sys.executable, "-m", "runtime.cli", "connect", "--control-plane", cp.url]
        argv += ["--device-id", "mac-1", "--port", "0", "--workspace", str(workspace)]
        argv += ["--state-dir", str(tmp_path / "state")]
        process = await anyio.open_process(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            with anyio.fail_after(60):
                if trusted:
                    await cp.wait_connected()
                    assert cp.hellos[0]["deviceId"] == "mac-1"
                else:
                    assert process.stderr is not None
                    said = b""
                    async for chunk in process.stderr:  # until a dial fails, and why
                        said += chunk
                        if b"CERTIFICATE_VERIFY_FAILED" in said:
                            break
                    assert cp.connects == 0
        finally:
            process.terminate()
            with anyio.CancelScope(shield=True):
                await process.wait()


def test_agentd_serve_imports_aiohttp_without_reading_the_trust_store(
    tmp_path: Path, certificates: Path
) -> None:
    """Every default trust store load before `agentd serve` opens its store (here it stops
    there: another process holds the state dir's lock) found nothing to read, and the
    process's `SSL_CERT_FILE` is its own again afterwards. Custom tools and a Tool Hub are
    configured: checking those settings imports aiohttp."""
    state = tmp_path / "state"
    state.mkdir()
    script = (
        "import json, os, ssl, sys\n"
        "reads = []\n"
        "default_paths = ssl.SSLContext.set_default_verify_paths\n"
        "def spied(context):\n"
        "    reads.append(os.environ.get('SSL_CERT_FILE'))\n"
        "    default_paths(context)\n"
        "ssl.SSLContext.set_default_verify_paths = spied\n"
        "from runtime.cli import main\n"
        "status = main(['serve', '--port', '0', '--state-dir', sys.argv[1]])\n"
        "print(json.dumps([status, reads, os.environ.get('SSL_CERT_FILE')]))\n"
    )
    env = {
        **os.environ,
        "SSL_CERT_FILE": str(certificates / "ca.pem"),
        "AGENTD_CUSTOM_TOOL_URL_PREFIXES": "https://tools.test/",
        "AGENTD_TOOL_HUB_URL": "https://hub.test",
    }
    with open(state / "agentd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status, reads, after = json_printed("-c", script, str(state), env=env, timeout=120)
    assert status == 2  # the state dir is locked: it stopped before listening
    assert reads and set(reads) == {NOWHERE}
    assert after == str(certificates / "ca.pem")


@pytest.mark.parametrize("before", [None, "/etc/mine.pem"])
def test_trust_store_unread_puts_the_environment_back(
    before: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TRUST_STORE_VARIABLES:
        if before is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, before)
    with trust_store_unread():
        assert ssl.create_default_context().get_ca_certs() == []
    assert [os.environ.get(name) for name in TRUST_STORE_VARIABLES] == [before, before]
