"""The files endpoints (confined to the workspace) and the threads endpoints."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from runtime.api.routes.files import MAX_ENTRIES
from tests.api.conftest import Daemon
from tests.api.test_errors import assert_error
from tests.fakes.model_server import Gate, Turn, text


@pytest.fixture
async def run_id(daemon: Daemon) -> str:
    await daemon.upsert()
    return (await daemon.run())["runId"]


async def test_listing_the_workspace(daemon: Daemon, run_id: str, workspace: Path) -> None:
    (workspace / "src").mkdir()
    (workspace / "src" / "app.py").write_text("print('hi')\n")
    (workspace / "README.md").write_text("# hi\n")
    (workspace / "link").symlink_to(workspace / "README.md")

    status, body = await daemon.get(f"/v1/runs/{run_id}/files?path=/")
    assert status == 200
    listing = body["data"]
    assert listing["path"] == "/"
    entries = {e["name"]: e for e in listing["entries"]}
    # Directories first; .agentd holds the threads' rollout files (docs/design.md).
    assert [e["name"] for e in listing["entries"]][:2] == [".agentd", "src"]
    assert entries["src"]["type"] == "dir" and entries["src"]["path"] == "/src"
    assert entries["README.md"]["type"] == "file" and entries["README.md"]["size"] == 5
    assert entries["link"]["type"] == "symlink" and entries["README.md"]["modifiedAt"]

    status, body = await daemon.get(f"/v1/runs/{run_id}/files?path=src")
    assert status == 200 and body["data"]["path"] == "/src"
    assert [e["path"] for e in body["data"]["entries"]] == ["/src/app.py"]
    status, body = await daemon.get(f"/v1/runs/{run_id}/files")
    assert status == 200 and body["data"]["path"] == "/"


async def test_reading_files(daemon: Daemon, run_id: str, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("héllo wörld\n")
    (workspace / "blob.bin").write_bytes(bytes(range(256)))
    status, body = await daemon.get(f"/v1/runs/{run_id}/files/content?path=/notes.txt")
    assert status == 200
    data = body["data"]
    assert data == {
        "path": "/notes.txt",
        "size": len("héllo wörld\n".encode()),
        "offset": 0,
        "encoding": "utf-8",
        "content": "héllo wörld\n",
        "truncated": False,
    }
    status, body = await daemon.get(f"/v1/runs/{run_id}/files/content?path=blob.bin")
    assert body["data"]["encoding"] == "base64"
    assert base64.b64decode(body["data"]["content"]) == bytes(range(256))
    # Byte ranges; a character cut in half by the range is dropped, not garbled.
    status, body = await daemon.get(
        f"/v1/runs/{run_id}/files/content?path=notes.txt&offset=0&limit=2"
    )
    assert body["data"]["content"] == "h" and body["data"]["truncated"] is True
    status, body = await daemon.get(
        f"/v1/runs/{run_id}/files/content?path=notes.txt&offset=3&limit=100"
    )
    assert body["data"]["content"] == "llo wörld\n" and body["data"]["truncated"] is False


async def test_a_listing_past_the_limit_is_the_first_entries_in_order_and_says_so(
    daemon: Daemon, run_id: str, workspace: Path
) -> None:
    big = workspace / "big"
    big.mkdir()
    names = [f"f{i:05d}" for i in range(MAX_ENTRIES + 50)]
    for name in reversed(names):
        (big / name).touch()
    (big / "zz_subdir").mkdir()  # last by name, first as a directory
    status, body = await daemon.get(f"/v1/runs/{run_id}/files", params={"path": "/big"})
    assert status == 200
    listing = body["data"]
    assert listing["truncated"] is True and listing["total"] == MAX_ENTRIES + 51
    listed = [e["name"] for e in listing["entries"]]
    assert listed == ["zz_subdir", *names[: MAX_ENTRIES - 1]]
    # a listing within the limit is whole, and says so
    status, body = await daemon.get(f"/v1/runs/{run_id}/files", params={"path": "/"})
    assert body["data"]["truncated"] is False
    assert body["data"]["total"] == len(body["data"]["entries"]) == len(os.listdir(workspace))


async def test_paths_are_taken_exactly_as_given(
    daemon: Daemon, run_id: str, workspace: Path
) -> None:
    """A name may begin or end with whitespace, or begin with `~`: the path a listing gives
    reads that file, never another one (only leading `/`s are dropped: they mean the root)."""
    names = ["notes.txt", "notes.txt ", " notes.txt", "notes.txt\t", "~", "~root"]
    for name in names:
        (workspace / name).write_text(f"the file {name!r}")
    (workspace / " dir ").mkdir()
    (workspace / " dir " / "a.txt").write_text("a")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files", params={"path": "/"})
    listed = {e["name"]: e["path"] for e in body["data"]["entries"]}
    for name in names:
        assert listed[name] == "/" + name
        for path in ("/" + name, name, "//" + name):
            status, body = await daemon.get(
                f"/v1/runs/{run_id}/files/content", params={"path": path}
            )
            assert status == 200, body
            assert body["data"]["content"] == f"the file {name!r}" and body["data"]["path"] == (
                "/" + name
            )
    status, body = await daemon.get(f"/v1/runs/{run_id}/files", params={"path": "/ dir "})
    assert status == 200 and body["data"]["path"] == "/ dir "
    assert [e["path"] for e in body["data"]["entries"]] == ["/ dir /a.txt"]
    status, body = await daemon.get(f"/v1/runs/{run_id}/files", params={"path": " "})
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files", params={"path": "~"})
    assert_error(status, body, 400, "not_a_directory")


async def test_paths_are_confined_to_the_workspace(
    daemon: Daemon, run_id: str, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("top secret")
    (workspace / "escape").symlink_to(outside)
    (workspace / "escape_dir").symlink_to(tmp_path)
    for path in ("../outside.txt", "escape", "escape_dir", "escape_dir/outside.txt", "/../.."):
        for endpoint in ("files/content", "files"):
            status, body = await daemon.get(f"/v1/runs/{run_id}/{endpoint}?path={path}")
            error = assert_error(status, body, 403, "outside_workspace")
            assert "top secret" not in str(body) and "outside" in error["message"]
    # An absolute path is taken relative to the workspace root, never the host's root.
    status, body = await daemon.get(f"/v1/runs/{run_id}/files/content?path=/etc/passwd")
    assert_error(status, body, 404, "not_found")


async def test_missing_paths_and_wrong_kinds(daemon: Daemon, run_id: str, workspace: Path) -> None:
    (workspace / "dir").mkdir()
    (workspace / "file.txt").write_text("x")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files/content?path=nope.txt")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files?path=nope")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files/content?path=dir")
    assert_error(status, body, 400, "is_a_directory")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files?path=file.txt")
    assert_error(status, body, 400, "not_a_directory")
    status, body = await daemon.get(f"/v1/runs/{run_id}/files/content")
    assert "'path'" in assert_error(status, body, 400, "validation_error")["message"]
    status, body = await daemon.get("/v1/runs/run_nope/files")
    assert_error(status, body, 404, "not_found")
    if hasattr(os, "mkfifo"):
        os.mkfifo(workspace / "pipe")
        status, body = await daemon.get(f"/v1/runs/{run_id}/files/content?path=pipe")
        assert_error(status, body, 400, "not_a_file")


async def test_threads_list_get_delete(daemon: Daemon) -> None:
    await daemon.upsert("one")
    await daemon.upsert("two")
    first = await daemon.run("one")
    second = await daemon.run("two")
    status, body = await daemon.get("/v1/run/threads")
    assert status == 200
    assert {t["id"] for t in body["data"]} == {first["threadId"], second["threadId"]}
    status, body = await daemon.get("/v1/run/threads?agent=one")
    assert [t["id"] for t in body["data"]] == [first["threadId"]]
    assert body["data"][0]["messageCount"] == 2

    status, body = await daemon.request("DELETE", f"/v1/run/threads/{first['threadId']}")
    assert status == 200 and body["data"] == {"id": first["threadId"], "deleted": True}
    status, body = await daemon.get(f"/v1/run/threads/{first['threadId']}")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.request("DELETE", f"/v1/run/threads/{first['threadId']}")
    assert_error(status, body, 404, "not_found")
    # Reusing the id starts that thread again, empty.
    again = await daemon.run("one", prompt="x", threadId=first["threadId"])
    assert again["threadId"] == first["threadId"]
    status, body = await daemon.get(f"/v1/run/threads/{first['threadId']}")
    assert status == 200 and body["data"]["messageCount"] == 2


async def test_a_thread_with_an_active_run_cannot_be_deleted(daemon: Daemon) -> None:
    import anyio

    from tests.api.conftest import collect_events

    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("busy")], hold=gate, hold_after=1))
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "x"}
    ) as resp:
        thread_id = resp.headers["X-Thread-ID"]
        with anyio.fail_after(10):
            await gate.reached.wait()
        status, body = await daemon.request("DELETE", f"/v1/run/threads/{thread_id}")
        assert "cancel" in assert_error(status, body, 409, "thread_busy")["message"]
        status, body = await daemon.post(
            "/v1/run", {"agent": "helper", "prompt": "y", "threadId": thread_id}
        )
        assert_error(status, body, 409, "conflict")
        gate.open()
        await collect_events(resp)
