"""`agentd run` picks a run's stream up again when the connection breaks mid-run."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.cli import RunWatcher, embedded_daemon
from runtime.client import AsyncClient
from runtime.config import Settings
from runtime.messages import TextPart, ToolCallPart
from tests.cli.support import turn, write_cassette
from tests.fakes.cutting_proxy import CuttingProxy


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
    async with proxy as proxied_url, AsyncClient(proxied_url) as client:
        await client.agents.upsert({"slug": "cli", "model": f"replay:{tape}"})
        watcher = RunWatcher(client, as_json=True, out=out)
        final = await watcher.watch({"agent": "cli", "prompt": "hi"})

    assert proxy.cuts == 1
    assert final is not None and final["status"] == "completed" and final["output"] == "finished"
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("tool_result") == 1
    assert events[-1]["type"] == "complete"
