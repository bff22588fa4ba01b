"""File names that are not UTF-8 (bytes Python keeps as lone surrogates): a run that meets
one completes, its events are stored and streamed, and the files API lists the directory;
the name is shown with its undecodable bytes as `\\xNN` (tools/utf8.py), and opens the
file by that name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.api.conftest import Daemon, collect_events
from tests.fakes.model_server import Turn, text, tool_call

BAD_NAME = os.fsdecode(b"new\xffname.txt")  # "new\udcffname.txt"
SHOWN = "new\\xffname.txt"

needs_byte_names = pytest.mark.skipif(
    os.uname().sysname == "Darwin", reason="APFS refuses file names that are not UTF-8"
)


@needs_byte_names
async def test_a_run_that_creates_and_lists_such_a_file_completes(
    daemon: Daemon, workspace: Path
) -> None:
    command = "printf 'hi\\n' > \"$(printf 'new\\377name.txt')\""
    daemon.model.script(
        Turn([tool_call("exec_command", {"cmd": command, "login": False})]),
        Turn([tool_call("list_dir", {"path": "."})]),
        Turn([text("done")]),
    )
    await daemon.upsert(tools=["exec_command", "list_dir"])
    run = await daemon.run()
    assert run["status"] == "completed", run
    assert (workspace / BAD_NAME).read_bytes() == b"hi\n"

    async with daemon.session.get(daemon.u(f"/v1/runs/{run['runId']}/events?after=0")) as resp:
        assert resp.status == 200
        frames = await collect_events(resp)
    events = [frame.data for frame in frames]
    [edit] = [event for event in events if event["type"] == "file_edit"]
    assert edit["path"] == f"/{SHOWN}" and edit["action"] == "create"
    listing = [e["output"] for e in events if e["type"] == "tool_result"][-1]
    assert SHOWN in listing
    assert events[-1]["type"] == "complete"
    assert f"/{SHOWN}" in events[-1]["files"]

    # the model was sent the listing: the request that carried it was valid UTF-8 JSON
    assert json.dumps(SHOWN)[1:-1] in json.dumps(daemon.model.requests[-1].body)


@needs_byte_names
async def test_the_files_api_lists_a_directory_holding_such_a_file(
    daemon: Daemon, workspace: Path
) -> None:
    (workspace / BAD_NAME).write_text("x\n")
    (workspace / "plain.txt").write_text("y\n")
    await daemon.upsert()
    run = await daemon.run()
    status, body = await daemon.get(f"/v1/runs/{run['runId']}/files?path=/")
    assert status == 200, body
    names = {entry["name"] for entry in body["data"]["entries"]}
    assert {SHOWN, "plain.txt"} <= names

    # the name as shown opens the file (the viewer asks for what the listing gave it)
    status, body = await daemon.get(
        f"/v1/runs/{run['runId']}/files/content", params={"path": f"/{SHOWN}"}
    )
    assert status == 200, body
    assert body["data"]["content"] == "x\n" and body["data"]["path"] == f"/{SHOWN}"
    status, body = await daemon.post("/v1/tools/read_file", {"path": SHOWN})
    assert status == 200 and not body["data"]["isError"], body
    assert "x" in body["data"]["output"]
    # a file really named so wins over the one its name shows
    (workspace / SHOWN).write_text("literal\n")
    status, body = await daemon.post("/v1/tools/read_file", {"path": SHOWN})
    assert "literal" in body["data"]["output"]
