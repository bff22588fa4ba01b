"""Which failures the client retries, how long it waits, and when it must not repeat a
request: against a scripted HTTP server on 127.0.0.1 that answers with the daemon's error
envelope."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.client import (
    AsyncClient,
    AuthorizationError,
    ConflictError,
    ServerError,
    is_retryable,
)
from runtime.providers.retry import RetryPolicy


@dataclass
class ScriptedDaemon:
    """Answers each request with the next scripted (status, headers), then 200 `{"data"}`."""

    url: str = ""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        if self.script:
            status, headers = self.script.pop(0)
            body = {
                "error": {"code": "scripted", "message": f"scripted {status}", "requestId": "req_1"}
            }
            return web.Response(
                status=status,
                text=json.dumps(body),
                content_type="application/json",
                headers=headers,
            )
        return web.json_response({"data": {"ok": True}})


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedDaemon]:
    daemon = ScriptedDaemon()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", daemon.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    daemon.url = str(server.make_url("")).rstrip("/")
    try:
        yield daemon
    finally:
        await server.close()


def recording_client(url: str, slept: list[float], max_retries: int = 3) -> AsyncClient:
    async def record(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(base_delay=0.5, max_delay=8, sleep=record)
    return AsyncClient(url, max_retries=max_retries, retry_policy=policy)


async def test_a_read_is_retried_through_server_errors_honouring_retry_after(
    scripted: ScriptedDaemon,
) -> None:
    scripted.script = [(503, {"Retry-After": "2"}), (502, {}), (500, {})]
    slept: list[float] = []
    async with recording_client(scripted.url, slept) as agentd:
        assert await agentd.runs.get("run_1") == {"ok": True}
    assert len(scripted.requests) == 4
    assert slept[0] == 2.0  # the server's Retry-After
    assert 0.75 * 1.0 <= slept[1] <= 1.0 and 0.75 * 2.0 <= slept[2] <= 2.0  # backoff, jitter


async def test_retries_stop_after_max_retries(scripted: ScriptedDaemon) -> None:
    scripted.script = [(500, {})] * 5
    slept: list[float] = []
    async with recording_client(scripted.url, slept, max_retries=2) as agentd:
        with pytest.raises(ServerError) as failed:
            await agentd.agents.list()
    assert len(scripted.requests) == 3 and len(slept) == 2
    assert failed.value.status == 500 and is_retryable(failed.value)


async def test_a_run_start_is_not_repeated_after_a_500(scripted: ScriptedDaemon) -> None:
    """A 500 on POST /v1/run may have started the run: repeating it could start two."""
    scripted.script = [(500, {})]
    slept: list[float] = []
    async with recording_client(scripted.url, slept) as agentd:
        with pytest.raises(ServerError):
            await agentd.runs.start("helper", "hi")
        scripted.script = [(500, {})]
        with pytest.raises(ServerError):
            await agentd.runs.send_input("run_1", "hi")
    assert scripted.requests == ["POST /v1/run", "POST /v1/runs/run_1/input"]
    assert slept == []


async def test_a_start_refused_with_503_is_repeated(scripted: ScriptedDaemon) -> None:
    """503 (starting, shutting down) means the daemon did not act: safe to send again."""
    scripted.script = [(503, {"Retry-After": "1"}), (503, {"Retry-After": "1"})]
    slept: list[float] = []
    async with recording_client(scripted.url, slept) as agentd:
        with pytest.raises(Exception, match="X-Run-ID"):
            await agentd.runs.start("helper", "hi")  # the scripted 200 has no run headers
    assert scripted.requests == ["POST /v1/run"] * 3 and slept == [1.0, 1.0]


async def test_client_errors_are_not_retried(scripted: ScriptedDaemon) -> None:
    scripted.script = [(403, {}), (409, {})]
    slept: list[float] = []
    async with recording_client(scripted.url, slept) as agentd:
        with pytest.raises(AuthorizationError) as forbidden:
            await agentd.runs.files("run_1", "/../etc")
        with pytest.raises(ConflictError):
            await agentd.runs.cancel("run_1")
    assert len(scripted.requests) == 2 and slept == []
    assert forbidden.value.code == "scripted" and forbidden.value.request_id == "req_1"
    assert not is_retryable(forbidden.value)


def test_is_retryable_classifies_by_type() -> None:
    from runtime.client import (
        APIError,
        NetworkError,
        NotFoundError,
        RateLimitError,
        ValidationError,
    )

    assert is_retryable(NetworkError("down"))
    assert is_retryable(RateLimitError(429, "queue_full", "full"))
    assert is_retryable(ServerError(503, "starting", "starting"))
    assert is_retryable(APIError(408, "timeout", "slow"))
    assert not is_retryable(ValidationError(400, "invalid_request", "bad"))
    assert not is_retryable(NotFoundError(404, "not_found", "gone"))
    assert not is_retryable(ValueError("not ours"))
