"""Bearer / X-API-Key authentication; /healthz and /readyz stay open."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from runtime.api.app import build_routes
from runtime.api.v1 import load_v1
from tests.api.conftest import Daemon, DaemonFactory, collect_events

TOKEN = "s3cret-token-value"


@pytest.fixture
async def secured(make_daemon: DaemonFactory) -> Daemon:
    return await make_daemon(token=TOKEN)


@pytest.mark.parametrize(
    "path", ["/v1/agents", "/v1/runs", "/openapi.json", "/metrics", "/v1/run/threads", "/nope"]
)
async def test_requests_without_credentials_are_401(secured: Daemon, path: str) -> None:
    async with secured.session.get(secured.u(path)) as resp:
        body = await resp.json()
    assert resp.status == 401 and body["error"]["code"] == "unauthorized"
    assert "Authorization: Bearer" in body["error"]["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.headers["X-Request-ID"] == body["error"]["requestId"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-API-Key": TOKEN + "x"},
        {"Authorization": "Bearer"},
    ],
)
async def test_wrong_credentials_are_401(secured: Daemon, headers: dict[str, str]) -> None:
    async with secured.session.get(secured.u("/v1/agents"), headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {TOKEN}"}, {"authorization": f"bearer {TOKEN}"}]
)
async def test_bearer_token_is_accepted(secured: Daemon, headers: dict[str, str]) -> None:
    async with secured.session.get(secured.u("/v1/agents"), headers=headers) as resp:
        assert resp.status == 200


async def test_x_api_key_is_accepted(secured: Daemon) -> None:
    status, body = await secured.get("/v1/agents", headers={"X-API-Key": TOKEN})
    assert status == 200 and body["data"] == []


async def test_health_and_readiness_need_no_credentials(secured: Daemon) -> None:
    for path in ("/healthz", "/readyz"):
        status, body = await secured.get(path)
        assert status == 200 and body["data"]["status"] == "ok"


async def test_event_streams_accept_an_access_token_query_for_eventsource(
    secured: Daemon,
) -> None:
    auth = {"X-API-Key": TOKEN}
    await secured.post(
        "/v1/agents", {"slug": "helper", "model": "claude-x", "tools": []}, headers=auth
    )
    status, body = await secured.post(
        "/v1/run", {"agent": "helper", "prompt": "hi", "stream": False}, headers=auth
    )
    run_id = body["data"]["runId"]
    async with secured.session.get(secured.u(f"/v1/runs/{run_id}/events")) as resp:
        assert resp.status == 401
    url = secured.u(f"/v1/runs/{run_id}/events?access_token={TOKEN}")
    async with secured.session.get(url) as resp:
        assert resp.status == 200
        frames = await collect_events(resp)
    assert frames[-1].event == "complete"
    # Only the event streams take it: elsewhere a query token is not a credential.
    status, _ = await secured.get(f"/v1/runs/{run_id}?access_token={TOKEN}")
    assert status == 401


async def test_browsers_on_allowed_origins_get_cors_headers(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(token=TOKEN, cors_origins="https://console.example")
    preflight = {
        "Origin": "https://console.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,last-event-id",
    }
    async with daemon.session.options(daemon.u("/v1/runs"), headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://console.example"
        assert "Last-Event-ID" in resp.headers["Access-Control-Allow-Headers"]
    headers = {"Origin": "https://console.example", "X-API-Key": TOKEN}
    async with daemon.session.get(daemon.u("/v1/runs"), headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "https://console.example"
        assert "X-Run-ID" in resp.headers["Access-Control-Expose-Headers"]
    # Other origins get nothing that would let a browser read the answer.
    other = {"Origin": "https://evil.example", "X-API-Key": TOKEN}
    async with daemon.session.get(daemon.u("/v1/runs"), headers=other) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with daemon.session.options(
        daemon.u("/v1/runs"), headers={**preflight, "Origin": "https://evil.example"}
    ) as resp:
        assert resp.status in (401, 405)
        assert "Access-Control-Allow-Origin" not in resp.headers


async def raw_get(daemon: Daemon, target: bytes, header: bytes) -> tuple[int, dict[str, Any]]:
    """GET `target` with one header line sent as the bytes given (aiohttp's client would
    refuse, or re-encode, bytes that are not text); the status and the JSON body."""
    host, port = daemon.url.split("//", 1)[1].rsplit(":", 1)
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: x", header, b"Connection: close"]
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(b"".join(line + b"\r\n" for line in lines if line) + b"\r\n")
        answer = b""
        with anyio.fail_after(10):
            while True:
                try:
                    answer += await stream.receive()
                except anyio.EndOfStream:
                    break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe",
        b"X-API-Key: \xff\xfe",
        b"X-API-Key: \xc3\xa9",
        b"Authorization: Bearer s3cret-token-value\xff",
    ],
    ids=["bearer-not-utf8", "api-key-not-utf8", "api-key-non-ascii", "token-then-not-utf8"],
)
async def test_a_credential_that_is_not_text_is_a_401(secured: Daemon, header: bytes) -> None:
    status, body = await raw_get(secured, b"/v1/agents", header)
    assert status == 401 and body["error"]["code"] == "unauthorized", body


async def test_an_access_token_query_that_is_not_utf8_is_a_401(secured: Daemon) -> None:
    status, body = await raw_get(secured, b"/v1/runs/run_x/events?access_token=%FF%FE", b"")
    assert status == 401 and body["error"]["code"] == "unauthorized", body


async def test_a_non_ascii_token_is_compared_as_utf8(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(token="t\u00f6ken-\u00e9")
    header = "X-API-Key: t\u00f6ken-\u00e9".encode()
    status, _ = await raw_get(daemon, b"/v1/agents", header)
    assert status == 200
    status, body = await raw_get(daemon, b"/v1/agents", header[:-1])  # half of the é
    assert status == 401 and body["error"]["code"] == "unauthorized", body


async def test_the_preflight_allows_every_method_the_routes_have(
    make_daemon: DaemonFactory,
) -> None:
    """PATCH /v1/agents/{slugOrId} is documented: a browser must be allowed to send it."""
    daemon = await make_daemon(token=TOKEN, cors_origins="https://console.example")
    preflight = {
        "Origin": "https://console.example",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "content-type,x-api-key",
    }
    async with daemon.session.options(daemon.u("/v1/agents/helper"), headers=preflight) as resp:
        assert resp.status == 204
        allowed = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    operations = [*build_routes().operations, *load_v1().table.operations]
    assert allowed == {op.method for op in operations} | {"OPTIONS"}
    assert {"GET", "POST", "PATCH", "DELETE"} <= allowed
    # and the PATCH itself answers with the CORS headers
    headers = {"Origin": "https://console.example", "X-API-Key": TOKEN}
    await daemon.post("/v1/agents", {"slug": "helper", "model": "claude-x"}, headers=headers)
    async with daemon.session.patch(
        daemon.u("/v1/agents/helper"), json={"description": "d"}, headers=headers
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Access-Control-Allow-Origin"] == "https://console.example"
