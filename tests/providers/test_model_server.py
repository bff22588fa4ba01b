"""The fake model server's own contract (other suites rely on it): queueing, defaults,
gates, request recording, and the wire framing of each API."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.fakes.model_server import FakeModelServer, Gate, HttpError, Turn, text, tool_call


async def post(server: FakeModelServer, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(server.url + path, json=body, timeout=10)


async def test_unscripted_requests_get_a_clear_400_or_the_default_turn() -> None:
    async with FakeModelServer() as server:
        resp = await post(server, "/v1/messages", {"model": "m", "stream": True})
        assert resp.status_code == 400
        assert "nothing scripted for request #1" in resp.json()["error"]["message"]
        server.default_turn = Turn([text("default")])
        resp = await post(server, "/v1/chat/completions", {"model": "m", "stream": True})
        assert resp.status_code == 200 and '"content":"default"' in resp.text
        assert [r.api for r in server.requests] == ["anthropic", "chat"]


async def test_chat_framing_is_data_only_and_ends_with_done() -> None:
    async with FakeModelServer() as server:
        server.script(Turn([text("a"), tool_call("f", {"x": 1}, chunks=2)]))
        resp = await post(server, "/v1/chat/completions", {"model": "m", "stream": True})
        frames = [f for f in resp.text.split("\n\n") if f]
        assert all(f.startswith("data: ") for f in frames)
        assert frames[-1] == "data: [DONE]"
        # No usage chunk unless stream_options.include_usage was requested.
        assert all('"usage"' not in f for f in frames)
        assert json.loads(frames[-2][6:])["choices"][0]["finish_reason"] == "tool_calls"


async def test_anthropic_and_responses_frames_name_their_events() -> None:
    async with FakeModelServer() as server:
        server.script(Turn([text("a")]), Turn([text("b")]))
        resp = await post(server, "/v1/messages", {"model": "m", "stream": True})
        events = [f.split("\n")[0] for f in resp.text.split("\n\n") if f]
        assert events[0] == "event: message_start" and events[-1] == "event: message_stop"
        assert "event: ping" in events
        resp = await post(server, "/v1/responses", {"model": "m", "stream": True})
        frames = [f for f in resp.text.split("\n\n") if f]
        assert frames[0].startswith("event: response.created\n")
        last = json.loads(frames[-1].split("data: ", 1)[1])
        assert last["type"] == "response.completed"
        assert last["sequence_number"] == len(frames) - 1


async def test_http_error_in_each_format() -> None:
    async with FakeModelServer() as server:
        server.script(HttpError(529, retry_after_ms=5), HttpError(429, retry_after="1"))
        resp = await post(server, "/v1/messages", {"model": "m", "stream": True})
        assert resp.status_code == 529 and resp.headers["retry-after-ms"] == "5"
        assert resp.json()["error"]["type"] == "overloaded_error"
        resp = await post(server, "/v1/chat/completions", {"model": "m", "stream": True})
        assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
        assert resp.json()["error"]["code"] == "rate_limit_exceeded"


async def test_gate_holds_the_stream_until_opened() -> None:
    async with FakeModelServer() as server:
        gate = Gate()
        server.script(Turn([text("one", "two")], hold=gate, hold_after=3))
        task = asyncio.create_task(
            post(server, "/v1/chat/completions", {"model": "m", "stream": True})
        )
        await asyncio.wait_for(gate.reached.wait(), 10)
        request = await server.wait_for_requests(1)
        assert request.body == {"model": "m", "stream": True}
        assert not task.done()
        gate.open()
        resp = await asyncio.wait_for(task, 10)
        assert '"content":"two"' in resp.text and resp.text.endswith("data: [DONE]\n\n")
