"""`agentd connect`: the link to a fake control plane, end to end (real daemon, real WebSocket,
real SDK against the fake model server)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.config import Settings
from runtime.daemon import serve
from runtime.link.connect import LinkTarget, link_companion
from runtime.link.protocol import SUBPROTOCOL, backoff
from runtime.store import Store
from tests.fakes.control_plane import FakeControlPlane
from tests.fakes.model_server import FakeModelServer, Gate, Turn, text, tool_call

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cp-token"


@asynccontextmanager
async def connected(
    tmp_path: Path, workspace: Path, cp: FakeControlPlane, model: FakeModelServer
) -> AsyncIterator[asyncio.Event]:
    """`agentd connect` in process; yields its stop event once the link is up."""
    for name, value in model.env().items():
        os.environ[name] = value
    settings = Settings(
        workspace=workspace,
        state_dir=tmp_path / "state",
        port=0,
        token=TOKEN,
        control_plane=cp.url,
        device_id="mac-1",
    )
    stop = asyncio.Event()
    status: list[int] = []

    async def run() -> None:
        companion = link_companion(settings, LinkTarget(cp.url, "mac-1", TOKEN))
        status.append(await serve(settings, stop=stop, handle_signals=False, companion=companion))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(30):
            await cp.wait_connected()
        try:
            yield stop
        finally:
            stop.set()
    assert status == [0]


@pytest.fixture
def env_restored() -> Any:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


async def test_hello_then_the_whole_api_over_the_link(
    tmp_path: Path, workspace: Path, env_restored: Any
) -> None:
    (workspace / "notes.txt").write_text("hello from the mac\n")
    async with FakeControlPlane(TOKEN) as cp, FakeModelServer() as model:
        model.script(
            Turn([text("Reading."), tool_call("read_file", {"path": "notes.txt"}, id="c1")]),
            Turn([text("It says hello.")]),
        )
        async with connected(tmp_path, workspace, cp, model):
            (hello,) = cp.hellos
            assert hello["deviceId"] == "mac-1" and hello["protocol"] == 1
            assert hello["platform"] in ("linux", "darwin") and hello["activeRuns"] == []
            assert hello["workspace"] == str(workspace) and "exec_command" in hello["tools"]
            assert hello["agentdVersion"]

            answer, _ = await cp.call(
                "POST",
                "/v1/agents",
                body={"slug": "mac", "model": "claude-sonnet-4-6", "tools": ["read_file"]},
            )
            assert answer["result"]["status"] == 201, answer
            assert answer["result"]["body"]["data"]["slug"] == "mac"

            # A streamed run: its SSE events as http.event notifications, then the result.
            answer, events = await cp.call(
                "POST", "/v1/run", body={"agent": "mac", "prompt": "what does it say?"}
            )
            assert answer["result"]["status"] == 200 and answer["result"]["body"] is None
            kinds = [e["event"] for e in events]
            assert kinds[0] == "run_started" and kinds[-1] == "complete"
            assert "tool_result" in kinds and [int(e["id"]) for e in events] == list(
                range(1, len(events) + 1)
            )
            assert events[-1]["data"]["output"] == "It says hello."
            run_id = events[0]["data"]["runId"]

            # Reads, files, a direct tool call, validation errors: the same handlers.
            answer, _ = await cp.call("GET", f"/v1/runs/{run_id}")
            assert answer["result"]["body"]["data"]["status"] == "completed"
            answer, _ = await cp.call(
                "GET", f"/v1/runs/{run_id}/files/content", query={"path": "/notes.txt"}
            )
            assert answer["result"]["status"] == 200
            assert "hello from the mac" in str(answer["result"].get("body") or "") + str(
                answer["result"].get("bodyText") or ""
            )
            answer, _ = await cp.call("POST", "/v1/tools/read_file", body={"path": "notes.txt"})
            assert "hello from the mac" in answer["result"]["body"]["data"]["output"]
            answer, _ = await cp.call("POST", "/v1/agents", body={"slug": 7})
            assert answer["result"]["status"] == 400
            assert answer["result"]["body"]["error"]["code"] == "validation_error"
            answer, _ = await cp.call("GET", "/metrics")
            assert "bodyText" in answer["result"]

            # The thread's persisted events reach the control plane, in order, once.
            thread_id = events[0]["data"]["threadId"]
            with anyio.fail_after(20):
                while not any(e["type"] == "run_completed" for e in cp.pushed.get(thread_id, [])):
                    await anyio.sleep(0.05)
            sequences = [e["sequence"] for e in cp.pushed[thread_id]]
            assert sequences == list(range(1, len(sequences) + 1))


async def test_controls_and_http_cancel_over_the_link(
    tmp_path: Path, workspace: Path, env_restored: Any
) -> None:
    gate = Gate()
    async with FakeControlPlane(TOKEN) as cp, FakeModelServer() as model:
        model.script(Turn([text("slow ", "answer")], hold=gate, hold_after=3))
        async with connected(tmp_path, workspace, cp, model):
            await cp.call(
                "POST",
                "/v1/agents",
                body={"slug": "mac", "model": "claude-sonnet-4-6", "tools": []},
            )
            stream_id = cp.new_id()
            streaming = asyncio.ensure_future(
                cp.call(
                    "POST", "/v1/run", body={"agent": "mac", "prompt": "go"}, request_id=stream_id
                )
            )
            with anyio.fail_after(20):
                await gate.reached.wait()
                while not cp.events_so_far(stream_id):
                    await anyio.sleep(0.02)
            run_id = cp.events_so_far(stream_id)[0]["data"]["runId"]
            answer, _ = await cp.call("POST", f"/v1/runs/{run_id}/pause")
            assert answer["result"]["status"] == 200
            # http.cancel stops the stream, not the run.
            await cp.send(
                {"jsonrpc": "2.0", "method": "http.cancel", "params": {"requestId": stream_id}}
            )
            with anyio.fail_after(10):
                answer, _ = await streaming
            assert answer["result"]["cancelled"] is True
            answer, _ = await cp.call("GET", f"/v1/runs/{run_id}")
            assert answer["result"]["body"]["data"]["status"] in ("pausing", "paused")
            gate.open()
            answer, _ = await cp.call("POST", f"/v1/runs/{run_id}/resume")
            assert answer["result"]["status"] == 200
            # Follow it to the end again, as a control plane does after a cancel or a drop.
            answer, events = await cp.call(
                "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "1"}
            )
            assert events[0]["id"] == "2" and events[-1]["event"] == "complete"
            # Unknown methods and bad params are JSON-RPC errors, never a dead link.
            await cp.send({"jsonrpc": "2.0", "id": 999, "method": "nope", "params": {}})
            answer, _ = await cp.call("GET", "relative/path")
            assert answer["error"]["code"] == -32602


async def test_link_drops_and_a_control_plane_restart_lose_no_event(
    tmp_path: Path, workspace: Path, env_restored: Any
) -> None:
    rng = random.Random(1414)
    command = "for i in $(seq 1 30); do echo line $i; sleep 0.05; done"
    async with FakeControlPlane(TOKEN) as cp, FakeModelServer() as model:
        turns = [
            Turn([tool_call("exec_command", {"cmd": command, "yield_time_ms": 10000}, id=f"c{i}")])
            for i in range(4)
        ]
        model.script(*turns, Turn([text("done")]))
        async with connected(tmp_path, workspace, cp, model):
            await cp.call(
                "POST",
                "/v1/agents",
                body={"slug": "mac", "model": "claude-sonnet-4-6", "tools": ["exec_command"]},
            )
            stream_id = cp.new_id()
            first = asyncio.ensure_future(
                cp.call(
                    "POST", "/v1/run", body={"agent": "mac", "prompt": "go"}, request_id=stream_id
                )
            )
            with anyio.fail_after(30):
                while not cp.events_so_far(stream_id):
                    await anyio.sleep(0.02)
            run_id = cp.events_so_far(stream_id)[0]["data"]["runId"]
            seen = list(cp.events_so_far(stream_id))
            for drop in range(4):
                await anyio.sleep(rng.uniform(0.05, 0.4))
                seen = cp.events_so_far(stream_id) if drop == 0 else seen
                if drop == 2:
                    await cp.restart()
                else:
                    await cp.drop()
                with anyio.fail_after(60):
                    await cp.wait_connected(drop + 2)
            first.cancel()
            # Resume the stream from the last event id seen before the first drop.
            last = int(seen[-1]["id"])
            answer, rest = await cp.call(
                "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last)}
            )
            assert answer["result"]["status"] == 200
            assert [int(e["id"]) for e in rest] == list(range(last + 1, last + 1 + len(rest)))
            assert rest[-1]["event"] == "complete" and rest[-1]["data"]["status"] == "completed"
            thread_id = seen[0]["data"]["threadId"]
            with anyio.fail_after(30):
                while not any(e["type"] == "run_completed" for e in cp.pushed[thread_id]):
                    await anyio.sleep(0.05)
    store = await Store.open(tmp_path / "state")
    try:
        stored = [e.to_dict() for e in await store.thread_events_after(thread_id)]
    finally:
        await store.close()
    assert cp.pushed[thread_id] == stored  # every persisted event exactly once, in order
    assert cp.connects == 5


def test_backoff_is_full_jitter_doubling_to_thirty_seconds() -> None:
    rng = random.Random(7)
    # at any attempt: 2.0**1024 overflowed (a control plane away for some hours)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (20, 30.0), (5000, 30.0)]:
        waits = [backoff(attempt, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) > ceiling * 0.8  # spread over the whole range
    assert SUBPROTOCOL == "agentd.link.v1"


async def test_a_refused_token_stops_agentd_connect_within_ten_seconds(
    tmp_path: Path, workspace: Path
) -> None:
    async with FakeControlPlane(TOKEN) as cp:
        cp.refuse = True
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENTD_TOKEN": "wrong"}
        started = time.monotonic()
        process = await anyio.run_process(
            [
                sys.executable,
                "-m",
                "runtime.cli",
                "connect",
                "--control-plane",
                cp.url,
                "--device-id",
                "mac-1",
                "--port",
                "0",
                "--workspace",
                str(workspace),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
    assert process.returncode == 1
    assert "refused the token" in process.stderr.decode()
    assert elapsed < 10 + 5  # the daemon's own start-up on a loaded machine aside


def test_connect_names_what_is_missing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "connect", "--device-id", "x"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--control-plane / AGENTD_CONTROL_PLANE" in result.stderr
    assert "--token / AGENTD_TOKEN" in result.stderr


async def test_an_event_larger_than_aiohttps_line_buffer_is_relayed_and_asked_for_again(
    tmp_path: Path, workspace: Path, env_restored: Any
) -> None:
    """One SSE event of 700 KB (a file written whole: its `tool_call` carries the content) is
    one `data:` line longer than aiohttp's `readline` takes; it used to end the stream in
    -32603, and asking again with `Last-Event-ID` failed at the same event for ever."""
    content = "x" * 700_000
    async with FakeControlPlane(TOKEN) as cp, FakeModelServer() as model:
        model.script(
            Turn([tool_call("write_file", {"path": "big.txt", "content": content}, id="c1")]),
            Turn([text("written")]),
        )
        async with connected(tmp_path, workspace, cp, model):
            await cp.call(
                "POST",
                "/v1/agents",
                body={"slug": "mac", "model": "claude-sonnet-4-6", "tools": ["write_file"]},
            )
            answer, events = await cp.call(
                "POST", "/v1/run", body={"agent": "mac", "prompt": "write it"}
            )
            assert answer["result"]["status"] == 200, answer
            kinds = [e["event"] for e in events]
            assert kinds[0] == "run_started" and kinds[-1] == "complete", kinds
            (call,) = [e for e in events if e["event"] == "tool_call"]
            assert content in json.dumps(call["data"])
            assert (workspace / "big.txt").read_text() == content
            # The result's headers are the route's, not the loopback hop's framing.
            assert "Transfer-Encoding" not in answer["result"]["headers"]
            # Asked again from the event before it, the stream goes through it to the end.
            before = events[kinds.index("tool_call") - 1]["id"]
            answer, rest = await cp.call(
                "GET",
                f"/v1/runs/{events[0]['data']['runId']}/events",
                headers={"Last-Event-ID": before},
            )
            assert answer["result"]["status"] == 200, answer
            assert [e["event"] for e in rest] == kinds[kinds.index("tool_call") :]
            assert rest[0]["data"] == call["data"]
