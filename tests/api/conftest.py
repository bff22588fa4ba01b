"""A real daemon for API tests: the app on a real aiohttp server on 127.0.0.1, a real
RunManager over real SQLite, the real provider registry pointed at the fake model server,
and real HTTP clients (aiohttp and httpx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.api.app import create_app
from runtime.config import Settings
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes.model_server import FakeModelServer, Turn, text

MODEL = "claude-sonnet-4-6"


@dataclass
class Frame:
    """One SSE frame as read off the wire."""

    id: int | None = None
    event: str | None = None
    data: Any = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    data_lines: int = 0


async def read_frames(response: aiohttp.ClientResponse) -> AsyncIterator[Frame]:
    """Parse `text/event-stream` from an aiohttp response, line by line."""
    frame = Frame()
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if frame.data_lines or frame.retry is not None or frame.comments:
                yield frame
            frame = Frame()
            continue
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            frame.id = int(value)
        elif name == "event":
            frame.event = value
        elif name == "retry":
            frame.retry = int(value)
        elif name == "data":
            frame.data_lines += 1
            frame.data = json.loads(value)
    if frame.data_lines:
        yield frame


async def collect_events(response: aiohttp.ClientResponse) -> list[Frame]:
    """Every event frame of the stream (not retry/comment frames), until it ends."""
    with anyio.fail_after(15):
        return [f async for f in read_frames(response) if f.event is not None]


@dataclass
class Daemon:
    url: str
    app: web.Application
    manager: RunManager
    store: Store
    model: FakeModelServer
    settings: Settings
    workspace: Path
    session: aiohttp.ClientSession
    http: httpx.AsyncClient

    def u(self, path: str) -> str:
        return self.url + path

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.u(path), **kw) as resp:
            body = await resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body.decode()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        if body is not None:
            kw["json"] = body
        return await self.request("POST", path, **kw)

    async def upsert(self, slug: str = "helper", **fields: Any) -> dict[str, Any]:
        fields.setdefault("model", MODEL)
        fields.setdefault("tools", [])
        status, body = await self.post("/v1/agents", {"slug": slug, **fields})
        assert status in (200, 201), body
        return body["data"]

    async def run(self, agent: str = "helper", **fields: Any) -> dict[str, Any]:
        """A non-streaming run; returns the finished run's JSON."""
        fields.setdefault("prompt", "hi")
        status, body = await self.post("/v1/run", {"agent": agent, "stream": False, **fields})
        assert status == 200, body
        return body["data"]

    async def wait_status(self, run_id: str, *statuses: str) -> dict[str, Any]:
        with anyio.fail_after(10):
            while True:
                status, body = await self.get(f"/v1/runs/{run_id}")
                assert status == 200, body
                if body["data"]["status"] in statuses:
                    return body["data"]
                await anyio.sleep(0.01)


DaemonFactory = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def model_server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer(default_turn=Turn([text("default answer")])) as server:
        yield server


@pytest.fixture
async def make_daemon(
    tmp_path: Path, workspace: Path, model_server: FakeModelServer
) -> AsyncIterator[DaemonFactory]:
    started: list[tuple[TestServer, RunManager, Store, aiohttp.ClientSession, httpx.AsyncClient]]
    started = []

    async def factory(
        *,
        headers: dict[str, str] | None = None,
        manager_kw: dict[str, Any] | None = None,
        server_kw: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Daemon:
        kw.setdefault("sse_ping_interval", 15.0)
        kw.setdefault("webhook_backoff", 0.01)
        settings = Settings(workspace=workspace, state_dir=tmp_path / f"state{len(started)}", **kw)
        store = await Store.open(settings.state_dir)
        manager = RunManager(
            store,
            workspace,
            env=model_server.env(),
            max_concurrent=settings.max_concurrent_runs,
            max_queue=settings.max_queue,
            **(manager_kw or {}),
        )
        await manager.start_background()
        app = create_app(settings, manager)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(**(server_kw or {}))
        session = aiohttp.ClientSession(headers=headers)
        http = httpx.AsyncClient(headers=headers, timeout=15)
        started.append((server, manager, store, session, http))
        url = str(server.make_url("")).rstrip("/")
        return Daemon(url, app, manager, store, model_server, settings, workspace, session, http)

    try:
        yield factory
    finally:
        for server, manager, store, session, http in reversed(started):
            await session.close()
            await http.aclose()
            await manager.shutdown(grace=0)
            await server.close()
            await store.close()


@pytest.fixture
async def daemon(make_daemon: DaemonFactory) -> Daemon:
    return await make_daemon()


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 (the `receiver` fixture, at `url`): it answers the
    statuses of `script` in order, then 204; with `hold` set, each request waits for it."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    hold: anyio.Event | None = None
    tried: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # every request
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # the 204s
    attempted: anyio.Event = field(default_factory=anyio.Event)  # set by every request
    delivered: anyio.Event = field(default_factory=anyio.Event)

    @property
    def attempts(self) -> int:
        return len(self.tried)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.tried.append((dict(request.headers), body))
        self.attempted.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.script:
            return web.Response(status=self.script.pop(0))
        self.deliveries.append((dict(request.headers), body))
        self.delivered.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    hook.url = str(server.make_url("/hook"))
    try:
        yield hook
    finally:
        if hook.hold is not None:
            hook.hold.set()
        await server.close()
