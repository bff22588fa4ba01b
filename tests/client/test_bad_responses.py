"""Answers that are not the daemon's envelope: a proxy's plain-text 5xx keeps the
response's request id, and a 2xx without `data` is an error, not a result; an event stream
cut off mid-event, or with a frame that is not an event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.client import APIError, AsyncClient, ServerError, parse_sse
from runtime.providers.retry import RetryPolicy


async def not_the_daemon(request: web.Request) -> web.Response:
    if request.path == "/v1/agents/broken":
        return web.Response(status=502, text="Bad Gateway", headers={"X-Request-ID": "req_9"})
    if request.path == "/v1/runs":  # another server's JSON error, not agentd's envelope
        return web.json_response({"error": "no route for GET /v1/runs"}, status=400)
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


async def test_a_json_error_without_agentds_envelope_is_a_bad_response(url: str) -> None:
    async with AsyncClient(url, max_retries=0) as agentd:
        with pytest.raises(APIError) as raised:
            await agentd.runs.list()
    assert raised.value.status == 400 and raised.value.code == "bad_response"
    assert "no route for GET /v1/runs" in raised.value.message


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_answer_without_the_data_envelope_is_a_bad_response(url: str, method: str) -> None:
    async with AsyncClient(url, max_retries=0) as agentd:
        with pytest.raises(APIError) as raised:
            if method == "GET":
                await agentd.agents.get("helper")
            else:
                await agentd.tools.call("read_file", {"path": "x"})
    assert raised.value.code == "bad_response"


EVENTS = [
    {"id": 1, "runId": "run_x", "threadId": None, "type": "run_started"}
    | {"ts": "2026-01-01T00:00:00Z", "agent": "a", "version": 1, "model": "m"},
    {"id": 2, "runId": "run_x", "threadId": None, "type": "complete"}
    | {"ts": "2026-01-01T00:00:01Z", "status": "completed", "output": "ok", "iterations": 1},
]


def frame(event: dict[str, object]) -> bytes:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def lines_of(body: bytes) -> AsyncIterator[bytes]:
    for line in body.splitlines(keepends=True):
        yield line


async def test_an_event_cut_off_by_the_end_of_the_body_is_not_yielded() -> None:
    whole = frame(EVENTS[0]) + frame(EVENTS[1])
    cut = whole[: whole.index(b"data:", len(frame(EVENTS[0]))) + 20]
    assert [f.id async for f in parse_sse(lines_of(whole))] == ["1", "2"]
    assert [f.id async for f in parse_sse(lines_of(cut))] == ["1"]
    assert [f.id async for f in parse_sse(lines_of(whole.rstrip(b"\n")))] == ["1"]


@asynccontextmanager
async def raw_server(answers: list[bytes]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP/1.1 server that answers each connection's request with the next of `answers`
    as a close-delimited body (no Content-Length, no chunks: the connection's end is the
    body's end, as behind an HTTP/1.0 proxy); the requests' heads, in order."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        body = answers[min(len(heads), len(answers)) - 1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
        writer.write(b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()
        await server.wait_closed()


async def test_a_stream_cut_mid_event_resumes_after_the_last_whole_event() -> None:
    first = frame(EVENTS[0]) + frame(EVENTS[1])[:40]
    async with raw_server([first, frame(EVENTS[1])]) as (url, heads):
        async with AsyncClient(url, retry_policy=RetryPolicy(base_delay=0.01)) as agentd:
            with anyio.fail_after(60):
                got = [(e.id, e.type) async for e in agentd.runs.stream("run_x")]
    assert got == [(1, "run_started"), (2, "complete")]
    assert [b"last-event-id: 1" in h.lower() for h in heads] == [False, True]


async def test_an_event_frame_that_is_not_an_event_is_a_bad_response() -> None:
    broken = b'id: 1\nevent: text\ndata: {"not": "an event"\n\n'
    async with raw_server([broken]) as (url, _):
        async with AsyncClient(url, max_retries=0) as agentd:
            with pytest.raises(APIError) as raised:
                with anyio.fail_after(60):
                    _ = [e async for e in agentd.runs.stream("run_x")]
    assert raised.value.code == "bad_response"
    assert "run_x" in raised.value.message
