"""`http` requests through the link to the real local API: `agentd connect` in process (the
daemon, its link, its outbox) dialling a control plane on 127.0.0.1 that sends frames as raw
text. What a request carries (its body, query and headers) reaches the local API as an HTTP
client would send it, and the answer is the one HTTP gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from runtime.config import Settings
from runtime.daemon import serve
from runtime.link.connect import LinkTarget, link_companion
from runtime.link.protocol import max_frame_bytes
from tests.link.test_link_faults import TOKEN, ProbeControlPlane, request

MAX_BODY = 4 * 1024 * 1024  # the daemon's default `max_body_bytes`


@asynccontextmanager
async def daemon_linked(
    tmp_path: Path, workspace: Path, cp: ProbeControlPlane
) -> AsyncIterator[str]:
    """`agentd connect` in process, its link dialling `cp`; yields the daemon's own URL once
    `hello` has arrived, and stops the daemon at the end."""
    settings = Settings(
        workspace=workspace,
        state_dir=tmp_path / "state",
        port=0,
        token=TOKEN,
        control_plane=cp.url,
        device_id="mac-1",
        max_body_bytes=MAX_BODY,
    )
    stop = asyncio.Event()
    urls: list[str] = []
    status: list[int] = []

    async def run() -> None:
        companion = link_companion(settings, LinkTarget(cp.url, "mac-1", TOKEN))
        status.append(
            await serve(
                settings, stop=stop, handle_signals=False, companion=companion, on_ready=urls.append
            )
        )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        try:
            hello = await cp.next_frame()
            assert hello["method"] == "hello", hello
            yield urls[0]
        finally:
            stop.set()
    assert status == [0]


async def ask(cp: ProbeControlPlane, request_id: Any, params: dict[str, Any]) -> dict[str, Any]:
    """An `http` request through the link, and its answer."""
    await cp.send_text(json.dumps(request(request_id, params)))
    with anyio.fail_after(60):
        answer = await cp.next_frame()
    assert answer.get("id") == request_id, answer
    return answer


async def over_http(url: str, method: str, path: str, body: bytes) -> dict[str, Any]:
    """The same request straight to the daemon: its status and error envelope."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, data=body, headers=headers) as response,
    ):
        return {"status": response.status, "body": await response.json()}


async def test_any_body_the_local_api_takes_fits_in_a_frame_and_a_larger_one_gets_its_413(
    tmp_path: Path, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A control plane's JSON encoder may escape any character (Go's writes `<` as
    `\\u003c`): a body the local API takes (up to `max_body_bytes`) can make a frame six times
    longer. Frames of more than 16 MiB used to end the link (1009), unanswered."""
    caplog.set_level(logging.WARNING, logger="agentd.link")
    async with ProbeControlPlane() as cp, daemon_linked(tmp_path, workspace, cp) as url:
        # 3.5 MB of `<`: under the body cap, a frame of 21 MB once escaped
        content = "<" * 3_500_000
        params = {"method": "POST", "path": "/v1/tools/write_file", "headers": {}}
        params["body"] = {"path": "big.txt", "content": content}
        frame = json.dumps(request(1, params)).replace("<", "\\u003c")
        assert 16 * 1024 * 1024 < len(frame) < max_frame_bytes(MAX_BODY)
        await cp.send_text(frame)
        with anyio.fail_after(60):
            answer = await cp.next_frame()
        assert answer["id"] == 1 and answer["result"]["status"] == 200, str(answer)[:300]
        assert (workspace / "big.txt").stat().st_size == len(content)

        # Over the body cap, under the frame bound: HTTP's own 413 and its envelope.
        params["body"] = {"path": "big.txt", "content": "y" * (MAX_BODY + 1)}
        await cp.send_text(json.dumps(request(2, params)))
        with anyio.fail_after(60):
            answer = await cp.next_frame()
        direct = await over_http(url, "POST", params["path"], json.dumps(params["body"]).encode())
        assert answer["id"] == 2 and answer["result"]["status"] == direct["status"] == 413
        relayed = answer["result"]["body"]["error"]
        assert {k: v for k, v in relayed.items() if k != "requestId"} == {
            k: v for k, v in direct["body"]["error"].items() if k != "requestId"
        }

        # Over the frame bound: not read; the link is closed (1009) and dialled again.
        params["body"] = {"path": "big.txt", "content": "z" * max_frame_bytes(MAX_BODY)}
        with contextlib.suppress(ConnectionError):  # agentd closes the link while it is sent
            await cp.send_text(json.dumps(request(3, params)))
        with anyio.fail_after(60):
            hello = await cp.next_frame()
        assert hello["method"] == "hello" and cp.upgrades == 2  # request 3 got no answer
        answer = await ask(cp, 4, {"method": "GET", "path": "/healthz"})
        assert answer["result"]["status"] == 200
    messages = [r.getMessage() for r in caplog.records]
    assert any("closing it" in m and "exceeds limit" in m for m in messages), messages
    assert any("lost (1009)" in m for m in messages), messages


async def test_a_body_is_sent_as_compact_utf8_so_it_is_not_longer_than_over_http(
    tmp_path: Path, workspace: Path
) -> None:
    """The body used to be re-encoded with `json.dumps`'s defaults: every non-ASCII
    character as a 6-byte escape, so 3 MB of text in a 2-byte script (Greek, Cyrillic, ...)
    became 9 MB, over the 4 MiB cap, and got a 413 that HTTP would not give."""
    content = "é" * 1_500_000  # 3 MB of UTF-8
    async with ProbeControlPlane() as cp, daemon_linked(tmp_path, workspace, cp):
        params = {"method": "POST", "path": "/v1/tools/write_file", "headers": {}}
        params["body"] = {"path": "greek.txt", "content": content}
        await cp.send_text(json.dumps(request(1, params), ensure_ascii=False))
        with anyio.fail_after(60):
            answer = await cp.next_frame()
        assert answer["result"]["status"] == 200, str(answer)[:300]
    assert (workspace / "greek.txt").read_text() == content


async def test_query_and_header_values_null_left_out_lists_repeated_objects_refused(
    tmp_path: Path, workspace: Path
) -> None:
    """JSON values that are not strings used to reach the API as Python's text of them:
    `{"cursor": null}` was `cursor=None` (a 400), a list `['a', 'b']`."""

    async def get(query: Any, headers: Any = None) -> dict[str, Any]:
        params = {"method": "GET", "path": "/v1/runs", "query": query, "headers": headers or {}}
        return await ask(cp, "q", params)

    async with ProbeControlPlane() as cp, daemon_linked(tmp_path, workspace, cp):
        # null: the parameter is left out; a number is its JSON text
        answer = await get({"cursor": None, "agent": None, "limit": 5})
        assert answer["result"]["status"] == 200, answer
        assert answer["result"]["body"]["data"] == []
        # a list: the parameter repeated, which this route refuses as HTTP does
        answer = await get({"agent": ["a", "b"]})
        assert answer["result"]["status"] == 400
        message = answer["result"]["body"]["error"]["message"]
        assert "agent given more than once" in message, message
        # a header likewise: null left out, a number its text
        answer = await get({}, {"X-Request-ID": None})
        assert answer["result"]["headers"]["X-Request-ID"] != "None"
        answer = await get({}, {"X-Request-ID": 12345})
        assert answer["result"]["headers"]["X-Request-ID"] == "12345"
        # anything else is invalid params, naming the key
        for query in ({"agent": {"slug": "a"}}, {"agent": ["a", None]}, {"agent": [["a"]]}):
            answer = await get(query)
            assert answer["error"]["code"] == -32602, (query, answer)
            assert "params.query['agent']" in answer["error"]["message"]
        answer = await get({}, {"X-Request-ID": {"a": 1}})
        assert answer["error"]["code"] == -32602
        assert "params.headers['X-Request-ID']" in answer["error"]["message"]


async def test_a_result_carries_no_header_of_the_loopback_hop(
    tmp_path: Path, workspace: Path
) -> None:
    """The result's body is re-encoded in the frame: the local response's `Content-Length`
    (and `Transfer-Encoding`, `Connection`, `Date`) described the loopback hop, not it."""
    async with ProbeControlPlane() as cp, daemon_linked(tmp_path, workspace, cp):
        answer = await ask(cp, 1, {"method": "GET", "path": "/v1/runs"})
        headers = {k.lower() for k in answer["result"]["headers"]}
    assert "content-type" in headers and "x-request-id" in headers
    assert not headers & {"content-length", "transfer-encoding", "connection", "date"}
