"""`runs.stream` survives a dropped connection: it reconnects with Last-Event-ID and every
event arrives once, in order, until `complete` (async and blocking clients)."""

from __future__ import annotations

import anyio

from runtime.client import AsyncClient, Client
from tests.api.conftest import Daemon
from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.model_server import Turn, text, tool_call


def script_a_run_with_a_slow_command(daemon: Daemon) -> None:
    daemon.model.script(
        Turn([tool_call("exec_command", {"cmd": "sleep 0.3; echo slept", "login": False})]),
        Turn([text("finished")]),
    )


async def test_the_async_stream_resumes_after_a_cut(daemon: Daemon) -> None:
    await daemon.upsert(tools=["exec_command"])
    script_a_run_with_a_slow_command(daemon)
    proxy = CuttingProxy(int(daemon.url.rsplit(":", 1)[1]))
    reasons: list[str] = []
    async with proxy as url, AsyncClient(url) as agentd:
        run_id = (await agentd.runs.start("helper", "go"))["runId"]
        with anyio.fail_after(20):
            events = [
                e
                async for e in agentd.runs.stream(
                    run_id, on_reconnect=lambda e: reasons.append(str(e))
                )
            ]
    assert proxy.cuts == 1 and len(reasons) == 1
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events].count("tool_call") == 1
    assert events[-1].type == "complete" and events[-1].payload["output"] == "finished"


async def test_the_blocking_stream_resumes_after_a_cut(daemon: Daemon) -> None:
    await daemon.upsert(tools=["exec_command"])
    script_a_run_with_a_slow_command(daemon)
    proxy = CuttingProxy(int(daemon.url.rsplit(":", 1)[1]))

    def follow(url: str) -> list[int]:
        with Client(url) as agentd:
            run_id = agentd.runs.start("helper", "go")["runId"]
            return [event.id for event in agentd.runs.stream(run_id)]

    async with proxy as url:
        with anyio.fail_after(20):
            ids = await anyio.to_thread.run_sync(follow, url)
    assert proxy.cuts == 1 and ids == list(range(1, len(ids) + 1)) and len(ids) > 5


async def test_the_stream_of_a_finished_run_opened_past_its_end_is_empty(
    daemon: Daemon,
) -> None:
    await daemon.upsert()
    finished = await daemon.run()
    async with AsyncClient(daemon.url, max_retries=0) as agentd:
        events = [e async for e in agentd.runs.stream(finished["runId"])]
        with anyio.fail_after(10):
            after_end = [
                e async for e in agentd.runs.stream(finished["runId"], after=events[-1].id)
            ]
    assert events[-1].type == "complete" and after_end == []
