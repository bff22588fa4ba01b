"""Custom tools through the API: an agent with `{name, description, inputSchema, invokeUrl}`
tools is upserted over HTTP, the model calls them, the daemon POSTs to a real tool server on
127.0.0.1 and the run's events carry its answer; the 400s at upsert; the setting."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.api.app import create_app
from runtime.config import ConfigError, Settings
from tests.api.conftest import MODEL, Daemon, DaemonFactory, collect_events
from tests.api.test_errors import assert_error
from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "pattern": "^o-[0-9]+$"}},
    "required": ["order_id"],
}


@dataclass
class OrdersServer:
    url: str = ""
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, dict(request.headers), body))
        if request.path == "/tools/orders":
            return web.json_response({"output": f"order {body['order_id']} shipped on May 2"})
        return web.Response(status=500, text="database is down")


@pytest.fixture
async def orders() -> AsyncIterator[OrdersServer]:
    server = OrdersServer()
    app = web.Application()
    app.router.add_post("/tools/{name}", server.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    server.url = str(test_server.make_url("")).rstrip("/")
    try:
        yield server
    finally:
        await test_server.close()


def order_tool(orders: OrdersServer, name: str = "orders", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Look up an order by id.",
        "inputSchema": ORDER_SCHEMA,
        "invokeUrl": f"{orders.url}/tools/{name}",
        **fields,
    }


@pytest.fixture
async def owned_daemon(
    tmp_path: Path,
    workspace: Path,
    model_server: FakeModelServer,
    orders: OrdersServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The app as `agentd serve` builds it (it opens its own store and RunManager from the
    settings), allowing the orders server's /tools/ URLs."""
    for name, value in model_server.env().items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        workspace=workspace,
        state_dir=tmp_path / "state",
        custom_tool_url_prefixes=f"{orders.url}/tools/",
        custom_tool_timeout=10,
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield str(server.make_url("")).rstrip("/"), session
    finally:
        await server.close()


async def run_and_collect(
    url: str, session: aiohttp.ClientSession, agent: str
) -> tuple[dict[str, Any], list[Any]]:
    async with session.post(
        url + "/v1/run", json={"agent": agent, "prompt": "where is o-42?", "stream": False}
    ) as resp:
        assert resp.status == 200, await resp.text()
        run = (await resp.json())["data"]
    async with session.get(f"{url}/v1/runs/{run['runId']}/events") as resp:
        frames = await collect_events(resp)
    return run, frames


async def test_a_model_calls_a_custom_tool_and_reads_its_answer(
    owned_daemon: tuple[str, aiohttp.ClientSession],
    model_server: FakeModelServer,
    orders: OrdersServer,
) -> None:
    url, session = owned_daemon
    agent = {"slug": "support", "model": MODEL, "tools": ["read_file", order_tool(orders)]}
    async with session.post(url + "/v1/agents", json=agent) as resp:
        assert resp.status == 201, await resp.text()
    model_server.script(
        Turn([tool_call("orders", {"order_id": "o-42"}, id="toolu_1")]),
        Turn([text("It shipped on May 2.")]),
    )
    run, frames = await run_and_collect(url, session, "support")
    assert run["status"] == "completed" and run["result"] == "It shipped on May 2."

    [result] = [f.data for f in frames if f.event == "tool_result"]
    assert result["callId"] == "toolu_1" and result["tool"] == "orders"
    assert (result["output"], result["isError"]) == ("order o-42 shipped on May 2", False)
    assert "error" not in [f.event for f in frames]

    [(path, headers, body)] = orders.requests
    assert (path, body) == ("/tools/orders", {"order_id": "o-42"})
    assert headers["X-Agentd-Run-Id"] == run["runId"]
    assert headers["X-Agentd-Call-Id"] == "toolu_1" and headers["X-Agentd-Tool"] == "orders"

    first, second = model_server.requests[-2:]
    offered = {tool["name"]: tool for tool in first.body["tools"]}
    assert set(offered) == {"read_file", "orders"}
    assert offered["orders"]["input_schema"] == ORDER_SCHEMA
    assert offered["orders"]["description"] == "Look up an order by id."
    assert "order o-42 shipped on May 2" in json.dumps(second.body["messages"][-1])


async def test_the_model_reads_custom_tool_failures_and_can_recover(
    owned_daemon: tuple[str, aiohttp.ClientSession],
    model_server: FakeModelServer,
    orders: OrdersServer,
) -> None:
    url, session = owned_daemon
    agent = {
        "slug": "support",
        "model": MODEL,
        "tools": [order_tool(orders), order_tool(orders, name="refunds")],
    }
    async with session.post(url + "/v1/agents", json=agent) as resp:
        assert resp.status == 201, await resp.text()
    model_server.script(
        Turn([tool_call("orders", {"order_id": "42"}, id="toolu_1")]),
        Turn([tool_call("refunds", {"order_id": "o-42"}, id="toolu_2")]),
        Turn([tool_call("orders", {"order_id": "o-42"}, id="toolu_3")]),
        Turn([text("done")]),
    )
    run, frames = await run_and_collect(url, session, "support")
    assert run["status"] == "completed"
    results = {f.data["callId"]: f.data for f in frames if f.event == "tool_result"}
    invalid, failed, ok = results["toolu_1"], results["toolu_2"], results["toolu_3"]
    assert invalid["isError"] and "Invalid arguments for orders" in invalid["output"]
    assert "'42' does not match" in invalid["output"]
    assert failed["isError"] and "HTTP 500" in failed["output"]
    assert "database is down" in failed["output"]
    assert not ok["isError"] and ok["output"] == "order o-42 shipped on May 2"
    assert [path for path, _, _ in orders.requests] == ["/tools/refunds", "/tools/orders"]


# -- refused at upsert ----------------------------------------------------------------------


async def test_custom_tools_are_refused_when_no_url_is_allowed(
    daemon: Daemon, orders: OrdersServer
) -> None:
    status, body = await daemon.post(
        "/v1/agents", {"slug": "support", "model": MODEL, "tools": [order_tool(orders)]}
    )
    message = assert_error(status, body, 400, "custom_tool_url_not_allowed")["message"]
    assert f"orders → {orders.url}/tools/orders" in message
    assert "allows no URL" in message and "AGENTD_CUSTOM_TOOL_URL_PREFIXES" in message
    status, body = await daemon.get("/v1/agents/support")
    assert status == 404


async def test_only_allowed_urls_pass(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(custom_tool_url_prefixes="https://tools.example/v1")

    async def upsert(url: str) -> tuple[int, Any]:
        tool = {"name": "lookup", "inputSchema": {"type": "object"}, "invokeUrl": url}
        return await daemon.post("/v1/agents", {"slug": "a", "model": MODEL, "tools": [tool]})

    for refused in (
        "https://tools.example/v2/lookup",
        "https://tools.example/v1x",
        "https://tools.example.evil.net/v1/lookup",
        "http://tools.example/v1/lookup",
        "https://tools.example/v1/../admin",
    ):
        status, body = await upsert(refused)
        message = assert_error(status, body, 400, "custom_tool_url_not_allowed")["message"]
        assert "lookup → " in message and "https://tools.example/v1" in message
    status, body = await upsert("https://tools.example/v1/lookup")
    assert status == 201, body


async def test_custom_tool_names_must_not_be_core_tool_names(
    make_daemon: DaemonFactory, orders: OrdersServer
) -> None:
    daemon = await make_daemon(custom_tool_url_prefixes=orders.url)
    tools = [order_tool(orders, name="read_file"), order_tool(orders, name="exec_command")]
    status, body = await daemon.post("/v1/agents", {"slug": "a", "model": MODEL, "tools": tools})
    message = assert_error(status, body, 400, "tool_name_conflict")["message"]
    assert "read_file, exec_command are core tool names" in message


async def test_custom_tool_schemas_must_be_json_schema(
    make_daemon: DaemonFactory, orders: OrdersServer
) -> None:
    daemon = await make_daemon(custom_tool_url_prefixes=orders.url)
    schema = {"type": "object", "properties": {"order_id": {"type": "text"}}}
    tool = order_tool(orders, inputSchema=schema)
    status, body = await daemon.post("/v1/agents", {"slug": "a", "model": MODEL, "tools": [tool]})
    message = assert_error(status, body, 400, "invalid_input_schema")["message"]
    assert "custom tool orders" in message and "'text' is not valid" in message


# -- the setting ----------------------------------------------------------------------------


def test_the_allow_list_setting_is_checked_when_loaded() -> None:
    settings = Settings.load(
        {}, env={"AGENTD_CUSTOM_TOOL_URL_PREFIXES": "https://a.example/x, http://127.0.0.1:9/"}
    )
    allow = settings.custom_tool_allow_list
    assert allow.allows("https://a.example/x/y") and allow.allows("http://127.0.0.1:9/z")
    assert not allow.allows("https://b.example/x")
    assert not Settings.load({}, env={}).custom_tool_allow_list
    with pytest.raises(ConfigError, match=r"AGENTD_CUSTOM_TOOL_URL_PREFIXES.*'ftp://x'"):
        Settings.load({}, env={"AGENTD_CUSTOM_TOOL_URL_PREFIXES": "ftp://x"})
    with pytest.raises(ConfigError, match="--custom-tool-timeout"):
        Settings.load({"custom_tool_timeout": 0}, env={})
