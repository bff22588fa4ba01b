"""`agentd run` picks a run's stream up again when the connection breaks mid-run."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.cli import RunWatcher, embedded_daemon
from runtime.client import DaemonClient
from runtime.config import Settings
from runtime.messages import TextPart, ToolCallPart
from tests.cli.support import turn, write_cassette


class CuttingProxy:
    """Forwards TCP to the daemon; the connection that carries `POST /v1/run` is cut once
    the daemon has sent a `tool_call` event on it (the run itself goes on)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        daemon_r, daemon_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        armed = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if b"POST /v1/run " in data:
                    armed.set()
                daemon_w.write(data)
                await daemon_w.drain()

        async def downstream() -> None:
            while data := await daemon_r.read(65536):
                client_w.write(data)
                await client_w.drain()
                if armed.is_set() and b"event: tool_call" in data:
                    self.cuts += 1
                    return

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_w, daemon_w):
            writer.close()


@pytest.fixture
async def daemon_url(tmp_path: Path) -> AsyncIterator[str]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    settings = Settings(host="127.0.0.1", port=0, workspace=workspace, state_dir=tmp_path / "state")
    async with embedded_daemon(settings) as url:
        yield url


async def test_a_broken_stream_is_followed_again_without_losing_or_repeating_events(
    daemon_url: str, tmp_path: Path
) -> None:
    tape = write_cassette(
        tmp_path / "tape.jsonl",
        [
            turn(
                ToolCallPart(
                    id="call_1",
                    name="exec_command",
                    arguments={"cmd": "sleep 0.5; echo slept", "login": False},
                ),
                stop="tool_use",
            ),
            turn(TextPart(text="finished")),
        ],
    )
    port = int(daemon_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port)
    out = io.StringIO()
    async with proxy as proxied_url, DaemonClient(proxied_url) as client:
        await client.upsert_agent({"slug": "cli", "model": f"replay:{tape}"})
        watcher = RunWatcher(client, as_json=True, out=out)
        final = await watcher.watch({"agent": "cli", "prompt": "hi"})

    assert proxy.cuts == 1
    assert final is not None and final["status"] == "completed" and final["output"] == "finished"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("tool_result") == 1
    assert events[-1]["type"] == "complete"
