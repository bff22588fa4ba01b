"""Following a run from a browser (issue 12, §5): `?access_token=` kept out of every log
line, 204 for a finished stream the client has read to its end, and 403s that name no host
path."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import Daemon, collect_events
from tests.api.test_errors import assert_error

TOKEN = "tok-browser-0123456789"


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
