"""A full disk under a real `agentd serve`: the workspace's, then the state dir's.

Each is a small tmpfs of its own (a real ENOSPC, no Docker needed; mounting needs root with
CAP_SYS_ADMIN, so the tests skip where it is refused), filled up with a ballast file the
test removes to free the space again.

- Workspace full: write_file and apply_patch fail with a `disk_full` tool error the model
  reads (and no file changes); the run goes on and completes.
- State dir full: a run whose state writes fail ends `failed` with code `storage_full`; the
  daemon keeps answering /healthz and reads; once space is freed, new runs complete.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from tests.api.conftest import read_frames
from tests.api.daemon_process import agentd
from tests.api.kill_points import check_thread
from tests.fakes.model_server import FakeModelServer, Gate, Turn, text, tool_call

MODEL = "claude-sonnet-4-6"
BIG = "x" * 399 + "\n"


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte with a ballast file; returns it (unlink it to free)."""
    ballast = disk / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as handle:
        size = len(chunk)
        while size:
            try:
                handle.write(chunk[:size])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                size //= 2
    return ballast


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_a_full_workspace_is_a_tool_error_and_changes_no_file(tmp_path: Path) -> None:
    patch = (
        "*** Begin Patch\n*** Update File: keep.txt\n original\n"
        + ("+" + BIG) * 40
        + "*** Add File: new.txt\n+"
        + BIG
        + "*** End Patch\n"
    )
    with small_disk(tmp_path / "ws", "1m") as workspace:
        (workspace / "keep.txt").write_text("original\n")
        async with FakeModelServer() as model:
            model.script(
                Turn([tool_call("write_file", {"path": "keep.txt", "content": BIG * 60})]),
                Turn([tool_call("apply_patch", {"input": patch})]),
                Turn([text("The disk is full; I stopped.")]),
                Turn([tool_call("write_file", {"path": "keep.txt", "content": BIG * 60})]),
                Turn([text("Written.")]),
            )
            env = {**model.env(), "AGENTD_WORKSPACE": str(workspace)}
            async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
                agent = {"slug": "w", "model": MODEL, "tools": ["write_file", "apply_patch"]}
                assert (await post(http, proc.url + "/v1/agents", agent))[0] == 201
                ballast = fill(workspace)
                run_body = {"agent": "w", "prompt": "write", "stream": False}
                with anyio.fail_after(60):
                    status, run = await post(http, proc.url + "/v1/run", run_body)
                assert status == 200, run
                run = run["data"]
                assert run["status"] == "completed", run
                for request in model.requests[1:3]:  # what the model read back
                    result = request.body["messages"][-1]["content"][0]
                    assert result["type"] == "tool_result" and result["is_error"], result
                    assert "the disk is full" in str(result["content"]), result
                assert (workspace / "keep.txt").read_text() == "original\n"
                assert not (workspace / "new.txt").exists()
                assert not [p for p in workspace.iterdir() if p.name.startswith(".keep")]

                ballast.unlink()  # space again: the thread carries on, its rollout catches up
                body = {**run_body, "threadId": run["threadId"]}
                with anyio.fail_after(60):
                    status, again = await post(http, proc.url + "/v1/run", body)
                assert again["data"]["status"] == "completed", again
                assert (workspace / "keep.txt").read_text() == BIG * 60
                async with http.get(
                    f"{proc.url}/v1/threads/{run['threadId']}/events?limit=1000"
                ) as resp:
                    events = (await resp.json())["data"]
                rollout = workspace / ".agentd" / "threads" / f"{run['threadId']}.jsonl"
                check_thread(events, rollout, "completed")


async def test_a_full_state_dir_fails_the_run_cleanly_and_the_daemon_serves_on(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with small_disk(tmp_path / "state", "4m") as state:
        gate = Gate()
        async with FakeModelServer(default_turn=Turn([text("fine")])) as model:
            model.script(
                Turn(
                    [text("Thinking ", "about ", "it ", "at ", "length.")], hold=gate, hold_after=3
                ),
                Turn([text("never")]),
            )
            env = {**model.env(), "AGENTD_WORKSPACE": str(workspace)}
            async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
                agent = {"slug": "s", "model": MODEL, "tools": []}
                assert (await post(http, proc.url + "/v1/agents", agent))[0] == 201
                run_body = {"agent": "s", "prompt": "go", "stream": False}
                async with anyio.create_task_group() as tg:
                    answers: list[Any] = []

                    async def run() -> None:
                        answers.append(await post(http, proc.url + "/v1/run", run_body))

                    tg.start_soon(run)
                    with anyio.fail_after(30):
                        await gate.reached.wait()
                    ballast = fill(state)
                    gate.open()
                (status, answer), *_ = answers
                assert status == 200, answer
                run = answer["data"]
                assert run["status"] == "failed", run
                assert run["error"]["code"] == "storage_full", run
                assert "out of disk space" in run["error"]["message"], run
                # The daemon serves on: health, reads, and a clear 507 for what needs space.
                with anyio.fail_after(10):
                    async with http.get(proc.url + "/healthz") as resp:
                        assert resp.status == 200
                    async with http.get(f"{proc.url}/v1/runs/{run['runId']}") as resp:
                        assert (await resp.json())["data"]["status"] == "failed"
                    async with http.get(f"{proc.url}/v1/runs/{run['runId']}/events") as resp:
                        events = [f async for f in read_frames(resp) if f.event]
                assert [f.id for f in events] == list(range(1, len(events) + 1))
                assert events[-1].event == "complete" and events[-1].data["status"] == "failed"
                assert [f.event for f in events][-2:] == ["error", "complete"], events
                with anyio.fail_after(60):  # the disk is still full: no new run
                    status, refused = await post(http, proc.url + "/v1/run", run_body)
                assert status == 507 and refused["error"]["code"] == "storage_full", refused
                ballast.unlink()  # space again: runs work
                with anyio.fail_after(60):
                    status, again = await post(http, proc.url + "/v1/run", run_body)
                assert status == 200 and again["data"]["status"] == "completed", again
