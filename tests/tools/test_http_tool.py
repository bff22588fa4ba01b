"""Custom tools (`HttpTool`) against a real aiohttp server on 127.0.0.1: the request they send,
the answers they turn into results, and every failure the model must be able to act on."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tools.base import Toolbox, ToolResult
from tools.http_tool import HttpTool, HttpToolConfig, UrlAllowList, schema_problem

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^o-[0-9]+$"},
        "limit": {"type": "integer", "minimum": 1},
    },
    "required": ["order_id"],
    "additionalProperties": False,
}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ToolServer:
    """The custom tool's server: every route the tests need, and what it received."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: anyio.Event = field(default_factory=anyio.Event)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(request.method, request.path, dict(request.headers), await request.read())
        )
        route = request.path.removeprefix("/tools/")
        body = self.seen[-1].body
        if route == "echo":
            return web.json_response({"output": f"got {json.loads(body)}"})
        if route == "text":
            return web.Response(text="plain answer\nline 2")
        if route == "result":
            return web.json_response({"result": {"total": 3, "items": ["a"]}})
        if route == "plain-json":
            return web.json_response({"orders": [1, 2]})
        if route == "json-as-text":
            return web.Response(text='{"output": "not unwrapped"}', content_type="text/plain")
        if route == "refused":
            return web.json_response({"output": "order o-1 is archived", "isError": True})
        if route == "empty":
            return web.Response(status=204)
        if route == "binary":
            return web.Response(body=b"\x89PNG\x00\x01", content_type="image/png")
        if route == "latin1":
            return web.Response(
                body="café".encode("latin-1"), content_type="text/plain", charset="latin-1"
            )
        if route == "big":
            return web.Response(text="x" * 5000)
        if route == "long":
            return web.Response(text="head " + "y" * 3000 + " tail")
        if route == "boom":
            return web.Response(status=500, text="Traceback: KeyError 'order'")
        if route == "busy":
            return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")
        if route == "unprocessable":
            return web.json_response({"error": "unknown order"}, status=422)
        if route == "slow":
            await self.release.wait()
            return web.Response(text="too late")
        if route == "redirect-307":
            raise web.HTTPTemporaryRedirect("/tools/echo")
        if route == "redirect-303":
            raise web.HTTPSeeOther("/tools/text")
        if route == "redirect-out":
            raise web.HTTPTemporaryRedirect(self.url + "/private/secrets")
        if route == "redirect-loop":
            raise web.HTTPTemporaryRedirect("/tools/redirect-loop")
        return web.Response(status=404, text=f"no route {request.path}")


@pytest.fixture
async def server() -> AsyncIterator[ToolServer]:
    tool_server = ToolServer()
    test_server = TestServer(tool_server.app(), host="127.0.0.1")
    await test_server.start_server()
    tool_server.url = str(test_server.make_url("")).rstrip("/")
    try:
        yield tool_server
    finally:
        tool_server.release.set()
        await test_server.close()


def make_tool(server: ToolServer, route: str, *, name: str = "orders", **config: Any) -> HttpTool:
    config.setdefault("allow_list", UrlAllowList.parse(server.url + "/tools/"))
    return HttpTool.create(
        name=name,
        description="Look up an order.",
        input_schema=SCHEMA,
        invoke_url=f"{server.url}/tools/{route}",
        config=HttpToolConfig(**config),
    )


async def call(
    workspace: Path,
    tool: HttpTool,
    args: dict[str, Any] | None = None,
    *,
    call_id: str | None = "call-1",
    run_id: str | None = None,
) -> ToolResult:
    async with Toolbox(workspace, enabled=[], extra_tools=[tool], run_id=run_id) as box:
        return await box.call(tool.name, args or {"order_id": "o-1"}, call_id=call_id)


# -- the request ----------------------------------------------------------------------------


async def test_posts_the_arguments_as_json_with_the_call_headers(
    workspace: Path, server: ToolServer
) -> None:
    tool = make_tool(server, "echo")
    result = await call(workspace, tool, {"order_id": "o-7", "limit": 2}, run_id="run_01")
    assert (result.output, result.is_error) == ("got {'order_id': 'o-7', 'limit': 2}", False)
    assert result.data["status"] == 200
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/tools/echo")
    assert json.loads(seen.body) == {"order_id": "o-7", "limit": 2}
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Agentd-Tool"] == "orders"
    assert seen.headers["X-Agentd-Call-Id"] == "call-1"
    assert seen.headers["X-Agentd-Run-Id"] == "run_01"
    assert "Cookie" not in seen.headers


async def test_ids_are_left_out_when_the_call_has_none(workspace: Path, server: ToolServer) -> None:
    await call(workspace, make_tool(server, "echo"), call_id=None)
    headers = server.seen[0].headers
    assert "X-Agentd-Call-Id" not in headers and "X-Agentd-Run-Id" not in headers


async def test_the_model_sees_the_schema_as_given(workspace: Path, server: ToolServer) -> None:
    tool = make_tool(server, "echo")
    async with Toolbox(workspace, enabled=["read_file"], extra_tools=[tool]) as box:
        specs = {spec["name"]: spec for spec in box.specs()}
    assert specs["orders"] == {
        "name": "orders",
        "description": "Look up an order.",
        "input_schema": SCHEMA,
    }
    other = make_tool(server, "text", name="invoices")
    assert type(tool).spec()["name"] == "orders" and other.spec()["name"] == "invoices"


async def test_arguments_are_checked_against_the_schema_before_any_request(
    workspace: Path, server: ToolServer
) -> None:
    tool = make_tool(server, "echo")
    missing = await call(workspace, tool, {"limit": 0})
    assert missing.is_error and missing.data["code"] == "invalid_arguments"
    assert "'order_id' is a required property" in missing.output
    assert "at limit: 0 is less than the minimum of 1" in missing.output
    assert "orders takes: order_id (string, required); limit (integer)" in missing.output
    extra = await call(workspace, tool, {"order_id": "o-1", "color": "red"})
    assert extra.is_error and "'color' was unexpected" in extra.output
    wrong = await call(workspace, tool, {"order_id": "x"})
    assert wrong.is_error and "at order_id: 'x' does not match '^o-[0-9]+$'" in wrong.output
    assert server.seen == []


async def test_a_schema_that_cannot_be_checked_is_an_error_not_a_crash(
    workspace: Path, server: ToolServer
) -> None:
    tool = HttpTool.create(
        name="remote_ref",
        description="",
        input_schema={"type": "object", "properties": {"a": {"$ref": "https://x.invalid/s"}}},
        invoke_url=f"{server.url}/tools/echo",
        config=HttpToolConfig(allow_list=UrlAllowList.parse("*")),
    )
    result = await call(workspace, tool, {"a": 1})
    assert result.is_error and "inputSchema cannot be checked" in result.output
    assert server.seen == []


# -- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "output"),
    [
        ("text", "plain answer\nline 2"),
        ("result", '{"total": 3, "items": ["a"]}'),
        ("plain-json", '{"orders": [1, 2]}'),
        ("json-as-text", '{"output": "not unwrapped"}'),
        ("empty", "(empty response, HTTP 204)"),
        ("binary", "(binary response: image/png, 6 bytes)"),
        ("latin1", "café"),
    ],
)
async def test_answers_become_the_result(
    workspace: Path, server: ToolServer, route: str, output: str
) -> None:
    result = await call(workspace, make_tool(server, route))
    assert (result.output, result.is_error) == (output, False)


async def test_the_tool_can_answer_with_an_error_result(
    workspace: Path, server: ToolServer
) -> None:
    result = await call(workspace, make_tool(server, "refused"))
    assert (result.output, result.is_error) == ("order o-1 is archived", True)
    assert result.data["code"] == "tool_error"


async def test_long_answers_keep_head_and_tail(workspace: Path, server: ToolServer) -> None:
    result = await call(workspace, make_tool(server, "long", max_output_bytes=200))
    assert not result.is_error and result.output.startswith("head ")
    assert result.output.endswith(" tail") and "truncated" in result.output
    assert result.data["bytes"] == 3010 and result.data["truncated_bytes"] > 2800


async def test_answers_over_the_size_cap_are_refused(workspace: Path, server: ToolServer) -> None:
    result = await call(workspace, make_tool(server, "big", max_response_bytes=1000))
    assert result.is_error and result.data["code"] == "response_too_large"
    assert "more than 1000 bytes" in result.output and "Ask for less" in result.output


@pytest.mark.parametrize(
    ("route", "status", "phrases"),
    [
        ("boom", 500, ["HTTP 500 Internal Server Error", "KeyError 'order'", "retry once"]),
        ("busy", 429, ["HTTP 429", "retry later (Retry-After: 7)", "slow down"]),
        ("unprocessable", 422, ["HTTP 422", "Check the arguments", '"unknown order"']),
        ("missing", 404, ["HTTP 404 Not Found", "no route /tools/missing"]),
    ],
)
async def test_other_statuses_are_errors_with_the_status_and_body(
    workspace: Path, server: ToolServer, route: str, status: int, phrases: list[str]
) -> None:
    result = await call(workspace, make_tool(server, route))
    assert result.is_error and result.data["code"] == "http_error"
    assert result.data["status"] == status
    for phrase in phrases:
        assert phrase in result.output


# -- failures of the connection -------------------------------------------------------------


async def test_a_server_that_is_down_is_unreachable(workspace: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tools/echo"
    tool = HttpTool.create(
        name="down",
        description="",
        input_schema={"type": "object"},
        invoke_url=url,
        config=HttpToolConfig(allow_list=UrlAllowList.parse(url)),
    )
    result = await call(workspace, tool, {})
    assert result.is_error and result.data["code"] == "unreachable"
    assert "could not be reached" in result.output and "retry later" in result.output


async def test_a_slow_server_times_out(workspace: Path, server: ToolServer) -> None:
    result = await call(workspace, make_tool(server, "slow", timeout=0.2))
    assert result.is_error and result.data["code"] == "timeout"
    assert "did not answer within 0.2 seconds" in result.output
    assert server.paths() == ["/tools/slow"]


# -- the allow-list and redirects -----------------------------------------------------------


async def test_an_invoke_url_outside_the_allow_list_is_never_called(
    workspace: Path, server: ToolServer
) -> None:
    for allow_list in (UrlAllowList(), UrlAllowList.parse(server.url + "/other")):
        result = await call(workspace, make_tool(server, "echo", allow_list=allow_list))
        assert result.is_error and result.data["code"] == "url_not_allowed"
        assert "is not allowed by this daemon" in result.output
    assert server.seen == []


async def test_redirects_are_followed_within_the_allow_list(
    workspace: Path, server: ToolServer
) -> None:
    result = await call(workspace, make_tool(server, "redirect-307"), {"order_id": "o-2"})
    assert result.output == "got {'order_id': 'o-2'}"
    assert [(s.method, s.path) for s in server.seen] == [
        ("POST", "/tools/redirect-307"),
        ("POST", "/tools/echo"),
    ]
    assert json.loads(server.seen[1].body) == {"order_id": "o-2"}
    server.seen.clear()
    result = await call(workspace, make_tool(server, "redirect-303"))
    assert result.output == "plain answer\nline 2"
    assert [(s.method, s.path, s.body) for s in server.seen][1] == ("GET", "/tools/text", b"")


async def test_redirects_out_of_the_allow_list_are_not_followed(
    workspace: Path, server: ToolServer
) -> None:
    result = await call(workspace, make_tool(server, "redirect-out"))
    assert result.is_error and result.data["code"] == "redirect_not_allowed"
    assert f"{server.url}/private/secrets" in result.output
    assert server.paths() == ["/tools/redirect-out"]


async def test_redirect_loops_end(workspace: Path, server: ToolServer) -> None:
    result = await call(workspace, make_tool(server, "redirect-loop", max_redirects=3))
    assert result.is_error and result.data["code"] == "too_many_redirects"
    assert server.paths() == ["/tools/redirect-loop"] * 4


def test_allow_list_prefixes_match_whole_origins_and_path_segments() -> None:
    allow = UrlAllowList.parse(" https://API.example.com/tools , http://127.0.0.1:8080/")
    assert allow.allows("https://api.example.com/tools")
    assert allow.allows("https://api.example.com:443/tools/orders?x=1")
    assert allow.allows("http://127.0.0.1:8080/anything")
    for refused in (
        "https://api.example.com/toolsmith",  # not a path segment boundary
        "https://api.example.com/tools/../admin",  # normalised to /admin
        "https://api.example.com/tools/%2e%2e/admin",
        "https://api.example.com.evil.net/tools",
        "https://api.example.com@evil.net/tools",
        "https://api.example.com:8443/tools",
        "http://api.example.com/tools",
        "http://127.0.0.1:8081/",
        "ftp://api.example.com/tools",
        "/tools",
        "not a url",
    ):
        assert not allow.allows(refused), refused
    assert UrlAllowList.parse("https://a.example/x/").allows("https://a.example/x/y")
    assert not UrlAllowList.parse("https://a.example/x/").allows("https://a.example/x")
    assert not UrlAllowList() and not UrlAllowList.parse(" , ")
    everything = UrlAllowList.parse("*")
    assert everything.allows("http://anywhere.example/") and not everything.allows("file:///x")
    assert everything.describe() == "any http(s) URL" and UrlAllowList().describe() == "no URL"
    assert allow.describe() == "https://api.example.com/tools, http://127.0.0.1:8080/"


@pytest.mark.parametrize(
    "entry", ["ftp://x.example/", "x.example/tools", "https://x.example/?a=1", "https://u@x/"]
)
def test_bad_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="custom tool URL prefix"):
        UrlAllowList.parse(entry)


def test_schema_problems_are_named() -> None:
    assert schema_problem(SCHEMA) is None
    problem = schema_problem({"type": "object", "properties": {"a": {"type": "strng"}}})
    assert problem is not None and "'strng' is not valid" in problem
    assert "properties.a.type" in problem
    assert "'(' is not a 'regex'" in str(schema_problem({"type": "object", "pattern": "("}))
    for draft in ([], 5):
        assert "$schema must be a string" in str(schema_problem({"$schema": draft}))
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    assert schema_problem(draft7) is None
    assert schema_problem({**draft7, "dependentRequired": 5}) is None  # not a draft-7 keyword
    assert schema_problem({"dependentRequired": 5}) is not None


async def test_the_schema_draft_decides_how_arguments_are_checked(
    workspace: Path, server: ToolServer
) -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "number", "maximum": 5, "exclusiveMaximum": True}},
    }
    tool = HttpTool.create(
        name="draft4",
        description="",
        input_schema=schema,
        invoke_url=f"{server.url}/tools/echo",
        config=HttpToolConfig(allow_list=UrlAllowList.parse(server.url)),
    )
    refused = await call(workspace, tool, {"n": 5})
    assert refused.is_error and "at n: 5 is greater than or equal to the maximum" in refused.output
    assert (await call(workspace, tool, {"n": 4})).output == "got {'n': 4}"
    broken = HttpTool.create(
        name="broken",
        description="",
        input_schema={"$schema": [], "type": "object"},
        invoke_url=f"{server.url}/tools/echo",
        config=HttpToolConfig(allow_list=UrlAllowList.parse(server.url)),
    )
    assert (await call(workspace, broken, {"a": 1})).output == "got {'a': 1}"
