"""Following a run from a browser (issue 12, §5): `?access_token=` kept out of every log
line, 204 for a finished stream the client has read to its end, and 403s that name no host
path."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from runtime.daemon import RUNNER_OPTIONS
from tests.api.conftest import Daemon, DaemonFactory, collect_events
from tests.api.test_errors import assert_error

TOKEN = "tok-browser-0123456789"


class _AccessLines(logging.Handler):
    """Collects access lines; `seen` is set once `wanted` lines named `marker`."""

    def __init__(self, marker: str, wanted: int) -> None:
        super().__init__()
        self.marker, self.wanted = marker, wanted
        self.lines: list[str] = []
        self.seen = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if sum(self.marker in line for line in self.lines) >= self.wanted:
            self.seen.set()


async def test_the_access_token_never_reaches_a_log_line(
    make_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    access = logging.getLogger("agentd.test.access")
    collected = _AccessLines("/events", 2)
    access.addHandler(collected)
    daemon = await make_daemon(token=TOKEN, server_kw={**RUNNER_OPTIONS, "access_log": access})
    await daemon.post("/v1/agents", {"slug": "helper", "tools": []}, headers={"X-API-Key": TOKEN})
    _, body = await daemon.post(
        "/v1/run",
        {"agent": "helper", "prompt": "hi", "stream": False},
        headers={"X-API-Key": TOKEN},
    )
    run_id = body["data"]["runId"]
    url = daemon.u(f"/v1/runs/{run_id}/events?after=0&access_token={TOKEN}")
    async with daemon.session.get(url) as resp:
        assert resp.status == 200
        assert (await collect_events(resp))[-1].event == "complete"
    async with daemon.session.get(daemon.u(f"/v1/runs/{run_id}/events?access_token=wrong")) as resp:
        assert resp.status == 401

    try:
        with anyio.fail_after(10):  # aiohttp writes the line once the response is done
            await collected.seen.wait()
    finally:
        access.removeHandler(collected)
    lines = [record.getMessage() for record in caplog.records]
    events = [line for line in collected.lines if f"/v1/runs/{run_id}/events" in line]
    assert len(events) == 2, lines
    assert all("access_token=%5BREDACTED%5D" in line for line in events), events
    assert "after=0" in events[0] and '" 200 ' in events[0] and '" 401 ' in events[1]
    assert not [line for line in lines if TOKEN in line or "wrong" in line]


async def test_a_finished_stream_read_to_its_end_answers_204(daemon: Daemon) -> None:
    await daemon.upsert("helper")
    run = await daemon.run("helper")
    events_url = daemon.u(f"/v1/runs/{run['runId']}/events")
    async with daemon.session.get(events_url) as resp:
        frames = await collect_events(resp)
    last = frames[-1].id
    assert frames[-1].event == "complete" and last is not None

    for headers, query in (
        ({"Last-Event-ID": str(last)}, ""),
        ({"Last-Event-ID": str(last + 5)}, ""),
        ({}, f"?after={last}"),
    ):
        async with daemon.session.get(events_url + query, headers=headers) as resp:
            assert resp.status == 204, (headers, query)
            assert await resp.read() == b"" and resp.headers["X-Run-ID"] == run["runId"]
    # One event short of the end: the client still gets the `complete` event.
    async with daemon.session.get(events_url, headers={"Last-Event-ID": str(last - 1)}) as resp:
        assert resp.status == 200
        assert [f.event for f in await collect_events(resp)] == ["complete"]


async def test_a_path_outside_the_workspace_names_no_host_path(
    daemon: Daemon, workspace: Path, tmp_path: Path
) -> None:
    await daemon.upsert("helper")
    run = await daemon.run("helper")
    (workspace / "escape").symlink_to(tmp_path)
    for path in ("../secret.txt", "escape", "/../../etc/passwd", "escape/x"):
        for endpoint in ("files", "files/content"):
            status, body = await daemon.get(f"/v1/runs/{run['runId']}/{endpoint}?path={path}")
            error = assert_error(status, body, 403, "outside_workspace")
            assert str(tmp_path) not in error["message"] and str(workspace) not in error["message"]
            assert "/src/App.tsx" in error["message"]
