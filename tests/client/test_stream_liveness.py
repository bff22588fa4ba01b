"""A half-open connection (the daemon's bytes stop arriving, nothing is closed) does not
hang `runs.stream` or `runs.wait`: the stream's read timeout, sized from the daemon's
pings, counts it as dropped, and it resumes with Last-Event-ID."""

from __future__ import annotations

import anyio
import pytest

from runtime.client import AsyncClient, Client, ClientConfig
from tests.api.conftest import DaemonFactory
from tests.client.test_stream_resume import script_a_run_with_a_slow_command
from tests.fakes.cutting_proxy import FreezingProxy

# The daemon pings every 0.2 s, so a 1.5 s silence can only be the frozen connection.
PING_INTERVAL = 0.2
READ_TIMEOUT = 1.5


async def test_the_async_stream_reconnects_when_the_connection_goes_silent(
    make_daemon: DaemonFactory,
) -> None:
    daemon = await make_daemon(sse_ping_interval=PING_INTERVAL)
    await daemon.upsert(tools=["exec_command"])
    script_a_run_with_a_slow_command(daemon)
    proxy = FreezingProxy(int(daemon.url.rsplit(":", 1)[1]))
    reasons: list[str] = []
    async with proxy as url, AsyncClient(url, stream_read_timeout=READ_TIMEOUT) as agentd:
        run_id = (await agentd.runs.start("helper", "go"))["runId"]
        with anyio.fail_after(20):
            events = [
                e
                async for e in agentd.runs.stream(
                    run_id, on_reconnect=lambda e: reasons.append(str(e))
                )
            ]
    assert proxy.freezes == 1 and len(reasons) == 1
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events].count("tool_call") == 1
    assert events[-1].type == "complete" and events[-1].payload["output"] == "finished"


async def test_the_blocking_wait_finishes_through_a_silent_connection(
    make_daemon: DaemonFactory,
) -> None:
    daemon = await make_daemon(sse_ping_interval=PING_INTERVAL)
    await daemon.upsert(tools=["exec_command"])
    script_a_run_with_a_slow_command(daemon)
    proxy = FreezingProxy(int(daemon.url.rsplit(":", 1)[1]))

    def start_and_wait(url: str) -> str:
        with Client(url, stream_read_timeout=READ_TIMEOUT) as agentd:
            run_id = agentd.runs.start("helper", "go")["runId"]
            return str(agentd.runs.wait(run_id)["status"])

    async with proxy as url:
        with anyio.fail_after(20):
            status = await anyio.to_thread.run_sync(start_and_wait, url)
    assert proxy.freezes == 1 and status == "completed"


def test_the_read_timeout_defaults_to_three_pings_and_must_be_positive() -> None:
    assert ClientConfig.resolve(env={}).stream_read_timeout == 45.0
    assert ClientConfig.resolve(stream_read_timeout=2, env={}).stream_read_timeout == 2.0
    with pytest.raises(ValueError, match="stream_read_timeout"):
        ClientConfig.resolve(stream_read_timeout=0, env={})
