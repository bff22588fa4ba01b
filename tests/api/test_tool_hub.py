"""Tool Hub slugs in an agent's `tools` (issue 12 §1): looked up at `GET {hub}/tools/{slug}`
when the agent is defined, called at `POST {hub}/tools/{slug}/invoke` when the model uses
them, against a real hub server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.tool_hub import ToolHub
from tests.api.conftest import MODEL, Daemon, DaemonFactory, collect_events
from tests.api.test_errors import assert_error
from tests.fakes.model_server import Turn, text, tool_call
from tools.base import core_tool_names

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


class Hub:
    def __init__(self) -> None:
        self.invocations: list[tuple[str, Any, str | None]] = []
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def describe(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        if slug == "jira-search":
            return web.json_response(
                {"name": "Jira search", "description": "Search Jira issues.", "inputSchema": SCHEMA}
            )
        if slug == "broken":
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"error": "no such tool"}, status=404)

    async def invoke(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.invocations.append(
            (request.match_info["slug"], body, request.headers.get("X-Agentd-Tool"))
        )
        return web.json_response({"output": f"3 issues match {body['q']!r}"})


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = Hub()
    app = web.Application()
    app.router.add_get("/tools/{slug}", hub.describe)
    app.router.add_post("/tools/{slug}/invoke", hub.invoke)
    hub.server = TestServer(app, host="127.0.0.1")
    await hub.server.start_server()
    try:
        yield hub
    finally:
        await hub.server.close()


async def hub_daemon(make_daemon: DaemonFactory, url: str) -> Daemon:
    return await make_daemon(tool_hub_url=url, manager_kw={"tool_hub": ToolHub(url, timeout=5)})


async def test_hub_tools_are_looked_up_and_called(make_daemon: DaemonFactory, hub: Hub) -> None:
    daemon = await hub_daemon(make_daemon, hub.url)
    created = await daemon.upsert("triage", tools=["read_file", "jira-search"])
    assert created["action"] == "created"
    status, body = await daemon.post(
        "/v1/agents", {"slug": "triage", "model": MODEL, "tools": ["jira-search", "no-such"]}
    )
    error = assert_error(status, body, 400, "unknown_tools")
    assert "no-such" in error["message"] and "jira-search" not in error["message"]
    status, body = await daemon.post(
        "/v1/agents", {"slug": "triage", "model": MODEL, "tools": ["broken"]}
    )
    assert "HTTP 500" in assert_error(status, body, 502, "tool_hub_unavailable")["message"]

    daemon.model.script(
        Turn([tool_call("jira-search", {"q": "login bug"})]), Turn([text("Three of them.")])
    )
    run = await daemon.run("triage", prompt="any login bugs?")
    assert run["status"] == "completed" and run["result"] == "Three of them."
    offered = {t["name"]: t for t in daemon.model.requests[0].body["tools"]}
    assert offered["jira-search"]["description"] == "Search Jira issues."
    assert offered["jira-search"]["input_schema"] == SCHEMA
    assert hub.invocations == [("jira-search", {"q": "login bug"}, "jira-search")]
    async with daemon.session.get(daemon.u(f"/v1/runs/{run['runId']}/events")) as resp:
        frames = await collect_events(resp)
    [result] = [f.data for f in frames if f.event == "tool_result"]
    assert result["output"] == "3 issues match 'login bug'" and result["isError"] is False
    assert json.loads(json.dumps(result))["tool"] == "jira-search"


async def test_an_unreachable_hub_is_a_502(make_daemon: DaemonFactory) -> None:
    daemon = await hub_daemon(make_daemon, "http://127.0.0.1:9")
    status, body = await daemon.post(
        "/v1/agents", {"slug": "triage", "model": MODEL, "tools": ["jira-search"]}
    )
    assert "cannot be reached" in assert_error(status, body, 502, "tool_hub_unavailable")["message"]


async def test_without_a_hub_an_unknown_name_stays_a_400(daemon: Daemon) -> None:
    status, body = await daemon.post(
        "/v1/agents", {"slug": "triage", "model": MODEL, "tools": ["jira-search"]}
    )
    assert "jira-search" in assert_error(status, body, 400, "unknown_tools")["message"]


@pytest.fixture
async def lenient_hub() -> AsyncIterator[tuple[str, list[str]]]:
    """A hub that describes a tool at every path it is asked about, its root included (the
    worst case for a name that is not a slug): its URL and the paths asked."""
    asked: list[str] = []

    async def describe(request: web.Request) -> web.Response:
        asked.append(request.raw_path)
        return web.json_response({"name": "anything", "description": "d", "inputSchema": SCHEMA})

    app = web.Application()
    app.router.add_get("/{tail:.*}", describe)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), asked
    finally:
        await server.close()


@pytest.mark.parametrize(
    "name",
    ["..", ".", "", "../admin", "a/b", "x y", "tool\n", "a" * 65, "caf\u00e9", "q?x=1", "%2e%2e"],
)
async def test_a_tool_name_that_is_not_a_slug_is_refused_before_the_hub_is_asked(
    make_daemon: DaemonFactory, lenient_hub: tuple[str, list[str]], name: str
) -> None:
    url, asked = lenient_hub
    daemon = await hub_daemon(make_daemon, url)
    status, body = await daemon.post(
        "/v1/agents", {"slug": "dots", "model": MODEL, "tools": ["read_file", name]}
    )
    error = assert_error(status, body, 400, "validation_error")
    assert f"tools[1] {name!r}" in error["message"], error["message"]
    assert "letters, numbers, underscores and hyphens" in error["message"]
    assert asked == []
    status, body = await daemon.get("/v1/agents/dots")
    assert_error(status, body, 404, "not_found")
    # PATCH validates the merged definition alike
    await daemon.upsert("dots", tools=["read_file"])
    async with daemon.session.patch(daemon.u("/v1/agents/dots"), json={"tools": [name]}) as resp:
        error = assert_error(resp.status, await resp.json(), 400, "validation_error")
    assert asked == []


async def test_core_tools_web_search_and_hub_slugs_are_still_names(
    make_daemon: DaemonFactory, lenient_hub: tuple[str, list[str]]
) -> None:
    url, asked = lenient_hub
    daemon = await hub_daemon(make_daemon, url)
    names = [*core_tool_names(), "web_search", "jira-search", "Jira_Search-2", "a" * 64]
    created = await daemon.upsert("named", tools=names)
    assert created["action"] == "created"
    assert sorted(asked) == ["/tools/Jira_Search-2", "/tools/" + "a" * 64, "/tools/jira-search"]
