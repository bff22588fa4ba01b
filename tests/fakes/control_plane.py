"""A fake control plane for `agentd connect`: an aiohttp server on 127.0.0.1 with

- `GET /v1/devices/{id}/link`: the link's WebSocket (subprotocol `agentd.link.v1`, Bearer
  token checked); it records every frame agentd sends and lets a test call agentd with
  `await cp.call(method, path, ...)` → `(result, [http.event params])`;
- `POST /v1/threads/{threadId}/events`: records every pushed batch (duplicates included, so a
  test can tell "exactly once").

`drop()` cuts the link from the server side, `restart()` stops and starts the server on the
same port, `refuse` answers 401 everywhere, `refuse_threads[thread] = status` answers that
thread's pushes with `status`, and a push of a thread in `silent_threads` is never answered.
`await wait_pushed(thread, sequence)` returns once
a thread's events up to a sequence have arrived; while `hold_pushes` is set, a push is
received (`push_requests` counts it) but not answered until the test sets that event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from collections import defaultdict
from typing import Any

from aiohttp import WSMsgType, web


class FakeControlPlane:
    def __init__(self, token: str = "cp-token", ssl_context: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.ssl_context = ssl_context  # served over HTTPS with it
        self.refuse = False
        self.hellos: list[dict[str, Any]] = []
        self.pushed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.push_batches = 0
        self.push_requests = 0
        self.hold_pushes: asyncio.Event | None = None  # a push waits for it before it is taken
        # threads whose pushes are refused, with the status to answer (a 4xx parks them)
        self.refuse_threads: dict[str, int] = {}
        self.silent_threads: set[str] = set()  # a push of theirs is never answered
        self._pushes = asyncio.Condition()
        self.connects = 0
        self._ws: web.WebSocketResponse | None = None
        self._connected = asyncio.Condition()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()  # ends the pushes never answered, so stop() need not
        # wait out aiohttp's shutdown timeout for them
        self.port = 0

    async def __aenter__(self) -> FakeControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/devices/{device}/link", self._link)
        app.router.add_post("/v1/threads/{thread}/events", self._events_route)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _authorized(self, request: web.Request) -> bool:
        return not self.refuse and request.headers.get("Authorization") == f"Bearer {self.token}"

    # -- the link ---------------------------------------------------------------------------

    async def wait_connected(self, connects: int = 1) -> None:
        async with self._connected:
            await self._connected.wait_for(lambda: self.connects >= connects and self._ws)

    async def _link(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": "bad token"}, status=401)
        ws = web.WebSocketResponse(protocols=("agentd.link.v1",), heartbeat=None)
        await ws.prepare(request)
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            if frame.get("method") == "hello":
                self.hellos.append(frame["params"])
                async with self._connected:
                    self._ws = ws
                    self.connects += 1
                    self._connected.notify_all()
            elif frame.get("method") == "http.event":
                self._events[frame["params"]["requestId"]].append(frame["params"])
            elif "id" in frame and frame["id"] in self._pending:
                future = self._pending.pop(frame["id"])
                if not future.done():
                    future.set_result(frame)
        if self._ws is ws:
            self._ws = None
        return ws

    async def send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None, "agentd is not connected"
        await self._ws.send_str(json.dumps(frame))

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        request_id: int | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """An `http` request over the link: its JSON-RPC answer and its `http.event`s."""
        request_id = request_id or next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        params: dict[str, Any] = {"method": method, "path": path, "query": query or {}}
        params["headers"] = headers or {}
        if body is not None:
            params["body"] = body
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": "http", "params": params})
        answer = await future
        return answer, self._events.pop(request_id, [])

    def events_so_far(self, request_id: int) -> list[dict[str, Any]]:
        return list(self._events.get(request_id, []))

    def new_id(self) -> int:
        return next(self._ids)

    async def drop(self) -> None:
        """Cut the link abruptly (no close handshake)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("link dropped"))
            self._pending.clear()
            await ws.close(code=1012, message=b"dropped by the test")

    # -- the events push ------------------------------------------------------------------------

    async def _events_route(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "bad token"}, status=401)
        body = await request.json()
        thread = request.match_info["thread"]
        async with self._pushes:
            self.push_requests += 1
            self._pushes.notify_all()
        if thread in self.refuse_threads:
            return web.json_response(
                {"error": "refused by the test"}, status=self.refuse_threads[thread]
            )
        if thread in self.silent_threads:
            await self._stopping.wait()  # no answer while the server runs
            raise web.HTTPServiceUnavailable()
        held = self.hold_pushes
        if held is not None:
            await held.wait()
        async with self._pushes:
            self.pushed[thread].extend(body["events"])
            self.push_batches += 1
            self._pushes.notify_all()
        return web.json_response({"accepted": len(body["events"])})

    async def wait_pushed(self, thread: str, sequence: int) -> None:
        """Until the events of `thread` up to `sequence` have been pushed."""
        async with self._pushes:
            await self._pushes.wait_for(
                lambda: any(e["sequence"] >= sequence for e in self.pushed.get(thread, []))
            )

    async def wait_pushed_from(self, thread: str, rollout_id: str, sequence: int) -> None:
        """Until the events of `thread` from rollout `rollout_id` up to `sequence` have been
        pushed (a thread made again under the same id counts from 1 again)."""
        async with self._pushes:
            await self._pushes.wait_for(
                lambda: any(
                    e["sequence"] >= sequence and e["rolloutId"] == rollout_id
                    for e in self.pushed.get(thread, [])
                )
            )

    async def wait_push_requests(self, count: int) -> None:
        """Until `count` pushes have arrived (answered or held)."""
        async with self._pushes:
            await self._pushes.wait_for(lambda: self.push_requests >= count)
