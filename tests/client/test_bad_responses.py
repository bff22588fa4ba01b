"""Answers that are not the daemon's envelope: a proxy's plain-text 5xx keeps the
response's request id, and a 2xx without `data` is an error, not a result."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.client import APIError, AsyncClient, ServerError


async def not_the_daemon(request: web.Request) -> web.Response:
    if request.path == "/v1/agents/broken":
        return web.Response(status=502, text="Bad Gateway", headers={"X-Request-ID": "req_9"})
    return web.json_response({"ok": True})  # JSON, but no `data` envelope


@pytest.fixture
async def url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_the_daemon)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_a_plain_text_server_error_keeps_the_request_id(url: str) -> None:
    async with AsyncClient(url, max_retries=0) as agentd:
        with pytest.raises(ServerError) as raised:
            await agentd.agents.get("broken")
    assert raised.value.status == 502 and raised.value.code == "bad_response"
    assert raised.value.request_id == "req_9"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_answer_without_the_data_envelope_is_a_bad_response(url: str, method: str) -> None:
    async with AsyncClient(url, max_retries=0) as agentd:
        with pytest.raises(APIError) as raised:
            if method == "GET":
                await agentd.agents.get("helper")
            else:
                await agentd.tools.call("read_file", {"path": "x"})
    assert raised.value.code == "bad_response"
