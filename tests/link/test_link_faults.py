"""The link against a control plane that misbehaves: malformed frames, a connection cut right
after the WebSocket upgrade, a listener that never answers. The real `Link` and a real aiohttp
session dial a real server on 127.0.0.1; whatever the server does, the link stays up (or is
dialled again) and `Link.run` never raises."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import WSMsgType, web
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runtime.link.client import Link
from runtime.link.connect import CONNECT_TIMEOUT
from runtime.link.dispatch import Dispatch, HttpDispatcher, SendEvent
from runtime.link.protocol import SUBPROTOCOL

TOKEN = "cp-token"
HEALTHZ = {"method": "GET", "path": "/healthz", "query": {}, "headers": {}}


class ProbeControlPlane:
    """An aiohttp control plane on 127.0.0.1 that a test drives frame by frame: `send_text`
    sends any text, `next_frame()` is the next frame agentd sent (parsed). The first
    `abort_after_upgrade` links are cut (transport aborted) right after the upgrade. It also
    serves `GET /healthz`, the "local API" the link's dispatcher is pointed at."""

    def __init__(self, *, abort_after_upgrade: int = 0) -> None:
        self.abort_after_upgrade = abort_after_upgrade
        self.upgrades = 0
        self._ws: web.WebSocketResponse | None = None
        self._frames_in: MemoryObjectSendStream[dict[str, Any]]
        self._frames_out: MemoryObjectReceiveStream[dict[str, Any]]
        self._frames_in, self._frames_out = anyio.create_memory_object_stream(math.inf)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> ProbeControlPlane:
        app = web.Application()
        app.router.add_get("/v1/devices/{device}/link", self._link)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        self._frames_in.close()
        self._frames_out.close()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _link(self, request: web.Request) -> web.StreamResponse:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=None)
        await ws.prepare(request)
        self.upgrades += 1
        if self.upgrades <= self.abort_after_upgrade:
            assert request.transport is not None
            request.transport.abort()  # accepted, then gone: no close handshake
            return ws
        self._ws = ws
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self._frames_in.send_nowait(json.loads(message.data))
        return ws

    async def send_text(self, text: str) -> None:
        assert self._ws is not None, "agentd is not connected"
        await self._ws.send_str(text)

    async def next_frame(self) -> dict[str, Any]:
        with anyio.fail_after(10):
            return await self._frames_out.receive()

    async def next_answer(self, text: str) -> dict[str, Any]:
        """Send `text`, then a request for /healthz. "answer" is what `text` got (None when
        the /healthz result comes first: frames are answered in order, so it got nothing);
        "healthz" is that result, the proof that the link still serves."""
        await self.send_text(text)
        await self.send_text(json.dumps(request("healthz", HEALTHZ)))
        first = await self.next_frame()
        if first.get("id") == "healthz":
            return {"answer": None, "healthz": first}
        return {"answer": first, "healthz": await self.next_frame()}


def request(request_id: Any, params: Any, method: str = "http") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


@asynccontextmanager
async def link_running(
    url: str, dispatcher: Dispatch | None = None, **options: Any
) -> AsyncIterator[tuple[Link, aiohttp.ClientSession]]:
    """The link of device `mac-1`, dialling `url`, for the body of the `with`. Should
    `Link.run` raise, the task group raises it and the test fails with it."""

    async def hello() -> dict[str, Any]:
        return {"deviceId": "mac-1", "protocol": 1}

    # connect.py's session: no total timeout, a bounded TCP connect
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        link = Link(
            session,
            control_plane=url,
            device_id="mac-1",
            token=TOKEN,
            dispatcher=dispatcher or HttpDispatcher(session, url, None),
            hello=hello,
            **{"rng": random.Random(5), **options},
        )
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(link.run)
            yield link, session
            tasks.cancel_scope.cancel()


def error_of(frame: dict[str, Any] | None) -> tuple[Any, int] | None:
    return None if frame is None else (frame["id"], frame["error"]["code"])


async def test_malformed_frames_get_json_rpc_errors_and_the_link_stays_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentd.link")
    healthz = json.dumps(HEALTHZ)
    cases: list[tuple[str, tuple[Any, int] | None]] = [
        # Notifications are never answered: a bad one is logged and dropped.
        ('{"jsonrpc":"2.0","method":"http.cancel","params":[1]}', None),
        ('{"jsonrpc":"2.0","method":"http.cancel","params":{"requestId":{"a":1}}}', None),
        ('{"jsonrpc":"2.0","method":"http.cancel","params":{}}', None),
        ('{"jsonrpc":"2.0","method":"http","params":' + healthz + "}", None),
        ('{"jsonrpc":"2.0","method":"nope","params":{}}', None),
        # An id JSON-RPC does not allow: the request is invalid, its id unknown (null).
        ('{"jsonrpc":"2.0","method":"http","id":[1],"params":' + healthz + "}", (None, -32600)),
        ('{"jsonrpc":"2.0","method":"http","id":{"a":1},"params":' + healthz + "}", (None, -32600)),
        ('{"jsonrpc":"2.0","method":"http","id":true,"params":' + healthz + "}", (None, -32600)),
        ('{"jsonrpc":"2.0","method":"http","id":1e400,"params":' + healthz + "}", (None, -32600)),
        ('{"jsonrpc":"2.0","method":5,"id":3}', (3, -32600)),
        ('{"jsonrpc":"2.0","id":4}', (4, -32600)),
        # Not JSON-RPC 2.0, but the id can be read: the answer names it.
        ('{"jsonrpc":"1.0","method":"http","id":5}', (5, -32600)),
        ('{"method":"http","id":"5b","params":' + healthz + "}", ("5b", -32600)),
        ('{"jsonrpc":"1.0","method":"http","id":[5]}', (None, -32600)),
        ("[1, 2]", (None, -32600)),
        # Not JSON at all: NaN, or nested past the parser's recursion limit.
        ('{"jsonrpc":"2.0","method":"http","id":NaN,"params":{}}', (None, -32700)),
        ("[" * 100_000, (None, -32700)),
        ("{", (None, -32700)),
        # Requests with bad params, or an unknown method: answered with their own id.
        ('{"jsonrpc":"2.0","method":"http.cancel","id":6,"params":{"requestId":[1]}}', (6, -32602)),
        ('{"jsonrpc":"2.0","method":"http","id":"7","params":[1]}', ("7", -32602)),
        ('{"jsonrpc":"2.0","method":"http","id":8}', (8, -32602)),
        (json.dumps(request(9, {**HEALTHZ, "path": "relative"})), (9, -32602)),
        ('{"jsonrpc":"2.0","method":"nope","id":10,"params":{}}', (10, -32601)),
    ]
    async with ProbeControlPlane() as cp, link_running(cp.url) as (link, _):
        hello = await cp.next_frame()
        assert hello["method"] == "hello" and hello["params"]["deviceId"] == "mac-1"
        for text, expected in cases:
            exchange = await cp.next_answer(text)
            assert error_of(exchange["answer"]) == expected, text[:80]
            assert exchange["healthz"]["result"]["body"] == {"ok": True}, text[:80]
        # http.cancel sent as a request (with an id) is answered; one of a null id is valid.
        exchange = await cp.next_answer(json.dumps(request(11, {"requestId": 1}, "http.cancel")))
        assert exchange["answer"] == {"jsonrpc": "2.0", "id": 11, "result": {}}
        await cp.send_text(json.dumps(request(None, HEALTHZ)))
        answer = await cp.next_frame()
        assert answer["id"] is None and answer["result"]["status"] == 200
        assert link.connects == 1  # the same link all along
    dropped = [r for r in caplog.records if "dropped a notification" in r.getMessage()]
    assert len(dropped) == 5


async def test_an_unexpected_failure_in_one_request_is_answered_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="agentd.link")
    async with ProbeControlPlane() as cp, aiohttp.ClientSession() as local:
        real = HttpDispatcher(local, cp.url, None)

        async def dispatcher(params: Mapping[str, Any], send_event: SendEvent) -> dict[str, Any]:
            if params.get("path") == "/boom":
                raise RuntimeError("a bug in the dispatcher")
            return await real(params, send_event)

        async with link_running(cp.url, dispatcher) as (link, _):
            await cp.next_frame()  # hello
            exchange = await cp.next_answer(json.dumps(request(1, {**HEALTHZ, "path": "/boom"})))
            assert error_of(exchange["answer"]) == (1, -32603)
            assert exchange["healthz"]["result"]["status"] == 200
            assert link.connects == 1
    (record,) = [r for r in caplog.records if "http request 1 failed" in r.getMessage()]
    assert record.exc_info is not None and "a bug in the dispatcher" in str(record.exc_info[1])


async def test_a_link_cut_right_after_the_upgrade_is_dialled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentd.link")
    async with ProbeControlPlane(abort_after_upgrade=2) as cp, link_running(cp.url):
        # `hello` fails on a transport already closing, or goes out just before the link reads
        # its end: either way a dropped link, dialled again after the backoff (at most 0.5 s,
        # then 1 s), until the third upgrade, which the control plane keeps.
        hello = await cp.next_frame()
        assert hello["method"] == "hello" and cp.upgrades == 3
        await cp.send_text(json.dumps(request(1, HEALTHZ)))
        answer = await cp.next_frame()
        assert answer["id"] == 1 and answer["result"]["status"] == 200
    drops = [
        r
        for r in caplog.records
        if "dropped during the handshake" in r.getMessage() or "lost" in r.getMessage()
    ]
    assert len(drops) >= 2


async def test_a_listener_that_never_answers_is_dialled_again_after_the_handshake_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentd.link")
    accepted_in, accepted = anyio.create_memory_object_stream[int](math.inf)
    dials = 0

    async def never_answer(stream: SocketStream) -> None:
        nonlocal dials
        dials += 1
        accepted_in.send_nowait(dials)
        async with stream:
            try:
                async for _ in stream:  # read the upgrade request, answer nothing
                    pass
            except anyio.BrokenResourceError:
                pass  # the link gave up on this dial

    async with (
        accepted_in,
        accepted,
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as server,
    ):
        server.start_soon(listener.serve, never_answer)
        port = listener.extra(SocketAttribute.local_port)
        async with link_running(f"http://127.0.0.1:{port}", handshake_timeout=0.2) as (link, _):
            with anyio.fail_after(10):
                assert await accepted.receive() == 1
                assert await accepted.receive() == 2  # the first dial timed out, then this
            assert link.connects == 0
        server.cancel_scope.cancel()
    timed_out = [r for r in caplog.records if "no handshake with" in r.getMessage()]
    assert timed_out and "within 0.2 s" in timed_out[0].getMessage()


class CeilingsNoted(random.Random):
    """The link's backoff draws: each wait is 0 (the test does not sit them out) and the
    ceiling it was drawn under is noted, so a test reads the backoff the link computed."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return 0.0


OnLink = Callable[[int, web.WebSocketResponse], Awaitable[None]]


@asynccontextmanager
async def listener(on_link: OnLink) -> AsyncIterator[str]:
    """A control plane on 127.0.0.1 (its URL) that hands its n-th link to `on_link(n, ws)`.
    Pings are not answered by aiohttp (`autoping=False`): they reach `on_link` as messages."""
    links = 0

    async def link(request: web.Request) -> web.StreamResponse:
        nonlocal links
        links += 1
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=None, autoping=False)
        await ws.prepare(request)
        await on_link(links, ws)
        return ws

    app = web.Application()
    app.router.add_get("/v1/devices/{device}/link", link)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_link_is_dead_after_dead_after_of_silence_not_at_the_first_late_pong(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The contract: a ping every `ping_interval`, dead after `dead_after` of silence.
    aiohttp's `heartbeat` closed the link half a ping interval after a ping that had no pong
    (22.5 s, not 45): a control plane that does not answer pings saw one ping, not the
    `dead_after / ping_interval` the contract gives it."""
    caplog.set_level(logging.WARNING, logger="agentd.link")
    seen_in, seen = anyio.create_memory_object_stream[tuple[str, int, int]](math.inf)

    async def silent(number: int, ws: web.WebSocketResponse) -> None:
        seen_in.send_nowait(("opened", number, 0))
        pings = 0
        async for message in ws:  # hello, then pings, never answered; nothing is sent
            pings += message.type == WSMsgType.PING
        seen_in.send_nowait(("ended", number, pings))

    async with seen_in, seen, listener(silent) as url:
        async with link_running(url, ping_interval=0.1, dead_after=1.0, rng=CeilingsNoted()):
            with anyio.fail_after(30):
                assert await seen.receive() == ("opened", 1, 0)
                what, number, pings = await seen.receive()
                assert await seen.receive() == ("opened", 2, 0)  # dialled again
    assert (what, number) == ("ended", 1)
    assert pings >= 3  # ~9 (one every 0.1 s for 1 s); aiohttp's heartbeat closed after 1
    assert any("nothing heard for 1 s" in r.getMessage() for r in caplog.records)


async def test_a_quiet_link_whose_pings_are_answered_stays_up() -> None:
    """Pongs are what a quiet control plane says: they keep the link alive however long no
    request comes (the silence that kills a link counts every frame, pongs too)."""
    pinged_in, pinged = anyio.create_memory_object_stream[int](math.inf)

    async def quiet(number: int, ws: web.WebSocketResponse) -> None:
        async for message in ws:
            if message.type == WSMsgType.PING:
                await ws.pong(message.data)
                pinged_in.send_nowait(number)

    async with pinged_in, pinged, listener(quiet) as url:
        async with link_running(url, ping_interval=0.05, dead_after=0.3) as (link, _):
            with anyio.fail_after(30):
                for _ in range(20):  # 1 s and more: past `dead_after` three times over
                    assert await pinged.receive() == 1  # the first link, all along
            assert link.connects == 1


async def test_a_link_dropped_at_once_backs_off_until_one_stays_up() -> None:
    """A control plane that takes the link and drops it at once (it refuses the device after
    the upgrade, say) used to be dialled ~4 times a second for ever: the backoff started again
    after every upgrade. It starts again only after a link that stayed up `stable_after`."""
    rng = CeilingsNoted()
    opened_in, opened = anyio.create_memory_object_stream[int](math.inf)

    async def drop_all_but_the_fourth(number: int, ws: web.WebSocketResponse) -> None:
        opened_in.send_nowait(number)
        await ws.receive()  # hello
        pings = 0
        while number == 4 and pings < 5:  # up 5 ping intervals (0.5 s): past `stable_after`
            pings += (await ws.receive()).type == WSMsgType.PING
        await ws.close(code=1008, message=b"device not allowed")

    async with opened_in, opened, listener(drop_all_but_the_fourth) as url:
        async with link_running(url, rng=rng, ping_interval=0.1, stable_after=0.2):
            with anyio.fail_after(30):
                for number in range(1, 8):  # the 7th is dialled after the 6th wait is drawn
                    assert await opened.receive() == number
    # three drops at once: 0.5, 1, 2; the fourth link stayed up: 0.5 again, then 1, 2
    assert rng.ceilings[:6] == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0]
