"""The platform's documented run requests, driven through the HTTP API (issue 12, §2–§4):
caller-chosen thread ids, caller-managed `messages` without a thread, starting a run without
waiting, config limits, live iterations, and the legacy `context.history` / `context.files` /
`mounts`."""

from __future__ import annotations

import anyio

from tests.api.conftest import Daemon
from tests.api.test_errors import assert_error
from tests.fakes.model_server import Gate, Turn, TurnUsage, text, tool_call


async def test_a_caller_chosen_thread_id_creates_that_thread(daemon: Daemon) -> None:
    await daemon.upsert()
    daemon.model.script(Turn([text("first answer")]), Turn([text("second answer")]))
    run = await daemon.run(prompt="remember 7", threadId="thr_mine1")
    assert run["threadId"] == "thr_mine1" and run["status"] == "completed"
    status, body = await daemon.get("/v1/run/threads/thr_mine1?agent=helper")
    assert status == 200 and body["data"]["messageCount"] == 2

    again = await daemon.run(prompt="what was it?", threadId="thr_mine1")
    assert again["threadId"] == "thr_mine1"
    sent = daemon.model.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "remember 7" in str(sent[0])

    for bad in ("thr mine", "x" * 129, "../etc", "", "thr/1"):
        status, body = await daemon.post(
            "/v1/run", {"agent": "helper", "prompt": "x", "threadId": bad, "stream": False}
        )
        assert "threadId" in assert_error(status, body, 400, "validation_error")["message"]


async def test_messages_without_a_thread_id_make_no_thread(daemon: Daemon) -> None:
    await daemon.upsert()
    history = [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "Hello Ada."},
    ]
    async with daemon.session.post(
        daemon.u("/v1/run"),
        json={"agent": "helper", "messages": history, "prompt": "who am I?", "stream": False},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert "X-Thread-ID" not in resp.headers
    assert body["data"]["threadId"] is None and body["data"]["status"] == "completed"
    sent = daemon.model.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    status, threads = await daemon.get("/v1/run/threads")
    assert status == 200 and threads["data"] == []
    status, detail = await daemon.get(f"/v1/runs/{body['data']['runId']}")
    assert detail["data"]["threadId"] is None and len(detail["data"]["messages"]) == 4


async def test_a_run_started_without_waiting_answers_202_registered(daemon: Daemon) -> None:
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("done")], hold=gate, hold_after=1))
    async with daemon.session.post(
        daemon.u("/v1/run"),
        json={"agent": "helper", "prompt": "go", "stream": False, "wait": False},
    ) as resp:
        body = await resp.json()
        assert resp.status == 202, body
        assert resp.headers["X-Run-ID"] == body["data"]["runId"]
    registered = body["data"]
    assert set(registered) == {"runId", "status", "threadId"}
    assert registered["status"] == "registered" and registered["threadId"].startswith("thr_")
    with anyio.fail_after(10):
        await gate.reached.wait()  # answered before the model has finished
    gate.open()
    finished = await daemon.wait_status(registered["runId"], "completed")
    assert finished["result"] == "done"

    status, body = await daemon.post(
        "/v1/run", {"agent": "helper", "prompt": "go", "stream": True, "wait": False}
    )
    assert "wait" in assert_error(status, body, 400, "validation_error")["message"]


async def test_run_config_limits_are_400s_naming_the_field(daemon: Daemon) -> None:
    await daemon.upsert()
    for config, name in (
        ('{"maxTurns": 1e30}', "maxTurns"),
        ('{"maxTurns": 101}', "maxTurns"),
        ('{"maxTokens": 128001}', "maxTokens"),
        ('{"timeout": Infinity}', "timeout"),
        ('{"temperature": NaN}', "temperature"),
    ):
        raw = f'{{"agent": "helper", "prompt": "x", "stream": false, "config": {config}}}'
        status, body = await daemon.request(
            "POST", "/v1/run", data=raw, headers={"Content-Type": "application/json"}
        )
        assert name in assert_error(status, body, 400, "validation_error")["message"], config
    status, body = await daemon.get("/v1/runs")
    assert body["data"] == []


async def test_a_runs_iterations_and_usage_are_live(daemon: Daemon) -> None:
    await daemon.upsert(tools=["list_dir"])
    gate = Gate()
    daemon.model.script(
        Turn([tool_call("list_dir", {})], usage=TurnUsage(input_tokens=120, output_tokens=7)),
        Turn([text("two turns")], hold=gate, hold_after=1),
    )
    _, body = await daemon.post(
        "/v1/run", {"agent": "helper", "prompt": "look", "stream": False, "wait": False}
    )
    run_id = body["data"]["runId"]
    with anyio.fail_after(10):
        await gate.reached.wait()
    _, body = await daemon.get(f"/v1/runs/{run_id}")
    assert body["data"]["status"] == "running" and body["data"]["iterations"] == 1
    assert body["data"]["usage"]["inputTokens"] == 120
    assert body["data"]["usage"]["outputTokens"] == 7
    _, body = await daemon.get("/v1/runs")
    assert body["data"][0]["iterations"] == 1 and body["data"][0]["usage"]["outputTokens"] == 7
    gate.open()
    assert (await daemon.wait_status(run_id, "completed"))["iterations"] == 2


async def test_legacy_context_history_and_files(daemon: Daemon) -> None:
    await daemon.upsert()
    (daemon.workspace / "src").mkdir()
    (daemon.workspace / "src" / "App.tsx").write_text("export const App = () => <h1>Hi</h1>;\n")
    (daemon.workspace / "big.txt").write_text("x" * 70_000)
    previous = [
        {"role": "user", "content": "make a page"},
        {"role": "assistant", "content": "Made src/App.tsx."},
    ]
    status, body = await daemon.post(
        "/v1/agents/helper/run",
        {
            "message": "now add a title",
            "context": {
                "history": previous,
                "files": ["/src/App.tsx", "big.txt"],
                "ticket": "T-1",
            },
        },
    )
    assert status == 200, body
    assert body["data"]["status"] == "completed" and body["data"]["warnings"] == []
    sent = daemon.model.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "make a page" in str(sent[0]) and "Made src/App.tsx." in str(sent[1])
    prompt = sent[2]["content"][0]["text"]
    assert prompt.startswith("now add a title") and '<file path="/src/App.tsx">' in prompt
    assert "export const App" in prompt and "T-1" in prompt
    assert "[cut: the file has 70000 bytes, 65536 are shown" in prompt

    for files, problem in (
        (["../outside.txt"], "outside the workspace"),
        (["/nope.tsx"], "does not exist"),
        (["/src"], "is not a file"),
        (["/a\x00b"], "NUL"),
        ("src/App.tsx", "list of workspace paths"),
    ):
        status, body = await daemon.post(
            "/v1/run/helper", {"message": "x", "context": {"files": files}}
        )
        assert problem in assert_error(status, body, 400, body["error"]["code"])["message"]
    status, body = await daemon.post(
        "/v1/run/helper", {"message": "x", "context": {"history": [{"role": "robot"}]}}
    )
    assert "context.history" in assert_error(status, body, 400, "validation_error")["message"]


async def test_legacy_mounts_are_recorded_with_a_warning(daemon: Daemon) -> None:
    await daemon.upsert()
    mounts = [{"type": "volume", "name": "cache", "path": "/workspace/.cache"}]
    status, body = await daemon.post("/v1/run/helper", {"message": "x", "mounts": mounts})
    assert status == 200, body
    [warning] = body["data"]["warnings"]
    assert "mounts" in warning and "not mounted" in warning
    status, detail = await daemon.get(f"/v1/runs/{body['data']['id']}")
    assert detail["data"]["metadata"]["mounts"] == mounts
    assert detail["data"]["metadata"]["warnings"] == [warning]
