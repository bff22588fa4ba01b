"""The thread's persisted events over HTTP, and the thread stream WebSocket: snapshot, live
events, resume with `after`, controls, two clients, a client that never reads."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

import aiohttp
import anyio
import pytest

from tests.api.conftest import Daemon, DaemonFactory
from tests.api.test_errors import assert_error
from tests.fakes.model_server import Gate, Turn, text

TOKEN = "stream-token"


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    with anyio.fail_after(15):
        message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.TEXT, message
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def recv_until(ws: aiohttp.ClientWebSocketResponse, type: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await recv(ws)
        frames.append(frame)
        if frame["type"] == type:
            return frames


def persisted(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if "sequence" in f]


async def thread_with_runs(daemon: Daemon, runs: int = 1) -> str:
    await daemon.upsert()
    thread_id = (await daemon.run(prompt="first"))["threadId"]
    for n in range(1, runs):
        await daemon.run(prompt=f"again {n}", threadId=thread_id)
    return thread_id


async def test_persisted_events_page_with_a_cursor(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon, runs=2)
    status, body = await daemon.get(f"/v1/threads/{thread_id}/events?limit=3")
    assert status == 200
    assert [e["sequence"] for e in body["data"]] == [1, 2, 3]
    assert body["meta"] == {"hasMore": True, "nextCursor": "3"}
    first = body["data"][0]
    assert set(first) == {
        "sequence",
        "rolloutId",
        "threadId",
        "runId",
        "type",
        "payload",
        "createdAt",
    }
    status, body = await daemon.get(f"/v1/threads/{thread_id}/events?after=3")
    assert [e["type"] for e in body["data"]] == [
        "run_completed",
        "run_started",
        "user_message",
        "assistant_message",
        "run_completed",
    ]
    assert body["meta"] == {"hasMore": False, "nextCursor": "8"}
    completed = body["data"][-1]["payload"]
    assert set(completed) == {"status", "usage", "iterations", "result", "error"}
    assert completed["status"] == "completed" and completed["error"] is None
    status, body = await daemon.get(f"/v1/threads/{thread_id}/events?after=8")
    assert body == {"data": [], "meta": {"hasMore": False, "nextCursor": None}}

    status, body = await daemon.get("/v1/threads/thr_missing/events")
    assert_error(status, body, 404, "not_found")
    for query in ("after=-1", "limit=0", "limit=5000", "after=x", "cursor=3"):
        status, body = await daemon.get(f"/v1/threads/{thread_id}/events?{query}")
        assert status == 400, (query, body)
    assert "cursor" in body["error"]["message"]  # a parameter it does not take is named
    status, body = await daemon.get(f"/v1/threads/{thread_id}/events?after=8&access_token=t")
    assert status == 200, body


async def test_a_stream_query_parameter_it_does_not_take_is_refused(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon)
    url = daemon.u(f"/v1/threads/{thread_id}/stream?aftr=2")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await daemon.session.ws_connect(url)
    assert refused.value.status == 400


async def test_a_plain_get_of_the_stream_is_426(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon)
    status, body = await daemon.get(f"/v1/threads/{thread_id}/stream")
    assert_error(status, body, 426, "upgrade_required")
    status, body = await daemon.get("/v1/threads/thr_missing/stream")
    assert_error(status, body, 404, "not_found")


async def test_snapshot_live_events_and_resume_with_after(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon)
    gate = Gate()
    daemon.model.script(Turn([text("live ", "text")], hold=gate, hold_after=3))
    run = await daemon.manager.start("helper", prompt="second", thread_id=thread_id)
    with anyio.fail_after(10):
        await gate.reached.wait()
    url = daemon.u(f"/v1/threads/{thread_id}/stream")
    async with daemon.session.ws_connect(url) as ws:
        snapshot = await recv(ws)
        assert snapshot["type"] == "snapshot" and snapshot["protocol_version"] == 1
        assert snapshot["thread"]["id"] == thread_id and snapshot["thread"]["agent"] == "helper"
        assert snapshot["activeRunId"] == run.run_id
        assert [e["sequence"] for e in snapshot["events"]] == [1, 2, 3, 4, 5, 6]
        assert [e["type"] for e in snapshot["events"]][4:] == ["run_started", "user_message"]
        gate.open()
        frames = await recv_until(ws, "run_completed")
    assert [f["sequence"] for f in persisted(frames)] == [7, 8]
    assert [f["type"] for f in persisted(frames)] == ["assistant_message", "run_completed"]
    live = [f for f in frames if "sequence" not in f]
    assert live and all(f["type"] == "assistant_message_delta" for f in live)
    assert all(set(f) == {"type", "threadId", "runId", "payload", "createdAt"} for f in live)
    assert "".join(f["payload"]["text"] for f in live) == "live text"
    assert all(f["runId"] == run.run_id and f["threadId"] == thread_id for f in frames)

    # A reconnect with after= gets exactly what followed.
    await daemon.manager.wait(run.run_id)
    async with daemon.session.ws_connect(url + "?after=6") as ws:
        snapshot = await recv(ws)
        assert [e["sequence"] for e in snapshot["events"]] == [7, 8]
        assert snapshot["events"] == persisted(frames)
        assert snapshot["activeRunId"] is None


async def test_controls_over_the_stream(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon)
    other_thread = (await daemon.run(prompt="elsewhere"))["threadId"]
    other_run = (await daemon.get(f"/v1/threads/{other_thread}/events"))[1]["data"][0]["runId"]
    gate = Gate()
    daemon.model.script(Turn([text("slow")], hold=gate, hold_after=2))
    run = await daemon.manager.start("helper", prompt="work", thread_id=thread_id)
    with anyio.fail_after(10):
        await gate.reached.wait()
    async with daemon.session.ws_connect(daemon.u(f"/v1/threads/{thread_id}/stream")) as ws:
        await recv(ws)  # snapshot
        await ws.send_json({"type": "pause"})
        assert await recv(ws) == {
            "type": "control_result",
            "control": "pause",
            "runId": run.run_id,
            "ok": True,
        }
        # The model turn is under way (held): the run is pausing until it stops.
        assert (await daemon.get(f"/v1/runs/{run.run_id}"))[1]["data"]["status"] == "pausing"
        await ws.send_json({"type": "input", "text": "also this", "runId": run.run_id})
        assert (await recv(ws))["control"] == "input"
        await ws.send_json({"type": "resume"})
        assert (await recv(ws))["control"] == "resume"
        await ws.send_json({"type": "pause", "runId": other_run})
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "not_found"
        await ws.send_json({"type": "cancel"})
        frames = await recv_until(ws, "control_result")
        assert frames[-1]["control"] == "cancel" and frames[-1]["runId"] == run.run_id
        completed = [f for f in frames if f["type"] == "run_completed"]
        if not completed:
            completed = [f for f in await recv_until(ws, "run_completed")][-1:]
        assert completed[0]["payload"]["status"] == "cancelled"
        # Nothing is active any more; bad frames get errors, the connection stays.
        for frame, code in (
            ({"type": "pause"}, "no_active_run"),
            ({"type": "jump"}, "invalid_frame"),
            ({"type": "input", "text": ""}, "invalid_frame"),
            ({"type": "ack", "sequence": 10**6}, "invalid_ack"),
        ):
            await ws.send_json(frame)
            reply = await recv(ws)
            assert reply["type"] == "error" and reply["code"] == code, (frame, reply)
            assert reply["message"]
        await ws.send_str("not json")
        assert (await recv(ws))["code"] == "invalid_frame"
        await ws.send_str("[" * 5000 + "]" * 5000)  # deeper than the decoder recurses
        assert "64 levels" in (await recv(ws))["message"]
        await ws.send_bytes(b"\x00")
        assert (await recv(ws))["code"] == "invalid_frame"
        await ws.send_json({"type": "ack", "sequence": 3})  # accepted silently
        await ws.send_json({"type": "resume"})
        assert (await recv(ws))["code"] == "no_active_run"
    gate.open()
    assert (await daemon.wait_status(run.run_id, "cancelled"))["status"] == "cancelled"


async def test_a_frame_holding_a_number_that_is_not_finite_is_refused(daemon: Daemon) -> None:
    """Frames go through the bodies' decoder: NaN and Infinity are not JSON there either."""
    thread_id = await thread_with_runs(daemon)
    async with daemon.session.ws_connect(daemon.u(f"/v1/threads/{thread_id}/stream")) as ws:
        await recv(ws)  # snapshot
        for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
            await ws.send_str('{"type": "ack", "sequence": ' + literal + "}")
            reply = await recv(ws)
            assert reply["type"] == "error" and reply["code"] == "invalid_frame", reply
            assert f"'sequence': {literal} is " in reply["message"], reply
            assert "numbers must be finite" in reply["message"], reply
        await ws.send_json({"type": "ack", "sequence": 1})  # the connection goes on
        await ws.send_json({"type": "pause"})
        assert (await recv(ws))["code"] == "no_active_run"


async def test_two_clients_see_the_same_events(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon)
    url = daemon.u(f"/v1/threads/{thread_id}/stream?after=4")
    async with daemon.session.ws_connect(url) as one, daemon.session.ws_connect(url) as two:
        assert (await recv(one))["events"] == [] and (await recv(two))["events"] == []
        daemon.model.script(Turn([text("for ", "both")]))
        await daemon.run(prompt="shared", threadId=thread_id)
        seen_one = await recv_until(one, "run_completed")
        seen_two = await recv_until(two, "run_completed")
    assert [f["sequence"] for f in persisted(seen_one)] == [5, 6, 7, 8]
    assert persisted(seen_one) == persisted(seen_two)
    assert [f for f in seen_one if "sequence" not in f] == [
        f for f in seen_two if "sequence" not in f
    ]


async def test_authentication_by_header_or_access_token(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(token=TOKEN, headers={"Authorization": f"Bearer {TOKEN}"})
    thread_id = await thread_with_runs(daemon)
    path = f"/v1/threads/{thread_id}/stream"
    async with aiohttp.ClientSession() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await anonymous.ws_connect(daemon.u(path))
        assert refused.value.status == 401
        async with anonymous.ws_connect(daemon.u(f"{path}?access_token={TOKEN}")) as ws:
            assert (await recv(ws))["type"] == "snapshot"
        async with anonymous.get(daemon.u(f"/v1/threads/{thread_id}/events")) as resp:
            assert resp.status == 401
    async with daemon.session.ws_connect(daemon.u(path)) as ws:
        assert len((await recv(ws))["events"]) == 4


class RawWebSocket:
    """A WebSocket client on a bare socket with a tiny receive buffer, which reads only when
    told to (aiohttp's client reads ahead into memory on its own)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, daemon: Daemon, path: str) -> RawWebSocket:
        host, port = daemon.url.removeprefix("http://").split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        raw = cls(sock)
        try:
            sock.connect((host, int(port)))
        except BlockingIOError:
            await anyio.wait_writable(sock)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.send(request.encode())
        while b"\r\n\r\n" not in raw.buffer:
            await raw.read_some()
        head, _, raw.buffer = raw.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return raw

    async def read_some(self) -> bool:
        await anyio.wait_readable(self.sock)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        self.buffer += data
        return bool(data)

    async def frames_until_close(self) -> tuple[int, int, bytes]:
        """Read (data frames, their bytes, the close frame's payload) until a close frame."""
        count = size = 0
        while True:
            frame = self._next_frame()
            if frame is None:
                assert await self.read_some(), "connection ended without a close frame"
                continue
            opcode, payload = frame
            if opcode == 0x8:
                return count, size, payload
            count += 1
            size += len(payload)

    def _next_frame(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                return None
            length, offset = struct.unpack("!H", data[2:4])[0], 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + length:
            return None
        self.buffer = data[offset + length :]
        return opcode, data[offset : offset + length]

    def send_close(self, code: int) -> None:
        mask = os.urandom(4)
        payload = struct.pack("!H", code)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.send(bytes([0x88, 0x80 | len(payload)]) + mask + masked)

    async def at_eof(self) -> bool:
        with anyio.fail_after(10):
            while await self.read_some():
                pass
        return True

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_never_reads_is_dropped_and_the_run_goes_on(daemon: Daemon) -> None:
    thread_id = await thread_with_runs(daemon)
    hub = daemon.manager.thread_events
    hub.queue_size, hub.max_queued_bytes = 50, 256 * 1024
    log = await hub.log(thread_id)
    path = f"/v1/threads/{thread_id}/stream?after=4"
    stalled = await RawWebSocket.connect(daemon, path)
    try:
        async with daemon.session.ws_connect(daemon.u(path)) as reader:
            assert (await recv(reader))["type"] == "snapshot"
            with anyio.fail_after(15):
                while log.subscriber_count < 2:
                    await anyio.sleep(0.01)
            chunk = "x" * 16 * 1024
            sent = 0
            # Far more than the stalled client's socket buffers and queue can hold; the reader
            # keeps up (each event is read before the next is published).
            with anyio.fail_after(30):
                while log.subscriber_count == 2:
                    sent += 1
                    log.publish("run_x", "tool_output_delta", {"callId": "c", "chunk": chunk})
                    frame = await recv(reader)
                    assert frame["type"] == "tool_output_delta"
                    assert sent < 5000, "the stalled client was never dropped"
            assert log.subscriber_count == 1  # the reader's subscription
            # The thread's runs go on, and the reader sees them.
            daemon.model.script(Turn([text("unaffected")]))
            result = await daemon.run(prompt="still fine", threadId=thread_id)
            assert result["status"] == "completed"
            frames = await recv_until(reader, "run_completed")
            assert [f["sequence"] for f in persisted(frames)] == [5, 6, 7, 8]
        # The stalled client, once it reads, finds what fitted in the socket buffers, then a
        # close frame saying why it was dropped and where to resume.
        count, size, close = await stalled.frames_until_close()
        assert 0 < count < sent and size < sent * len(chunk)
        code = struct.unpack("!H", close[:2])[0]
        assert code == 4001
        assert close[2:].decode() == "slow client: resume with after=4"
        stalled.send_close(1000)
        assert await stalled.at_eof()
    finally:
        stalled.close()
    # Resuming with after= loses nothing.
    status, body = await daemon.get(f"/v1/threads/{thread_id}/events?after=4")
    assert status == 200 and [e["sequence"] for e in body["data"]] == [5, 6, 7, 8]
