"""The whole flow through the real server: upsert → run (SSE) with the fake model server →
events → detail → the thread continues → history."""

from __future__ import annotations

import json

import anyio
import httpx_sse

from tests.api.conftest import MODEL, Daemon, collect_events
from tests.fakes.model_server import Turn, TurnUsage, text, thinking


async def test_upsert_run_stream_detail_and_thread_continuation(daemon: Daemon) -> None:
    agent = await daemon.upsert("helper", systemPrompt="Be brief.")
    assert agent["action"] == "created" and agent["version"] == 1
    assert agent["endpoint"] == "/v1/agents/helper/run"

    daemon.model.script(
        Turn(
            [thinking("Greet them."), text("Hello", ", world")],
            usage=TurnUsage(input_tokens=20, output_tokens=4),
        ),
        Turn([text("You said hi before.")]),
    )
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "hi", "metadata": {"k": "v"}}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        run_id, thread_id = resp.headers["X-Run-ID"], resp.headers["X-Thread-ID"]
        frames = await collect_events(resp)

    assert [f.id for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0].event == "run_started" and frames[-1].event == "complete"
    for frame in frames:
        assert frame.data_lines == 1
        assert frame.data["id"] == frame.id and frame.data["type"] == frame.event
        assert frame.data["runId"] == run_id and frame.data["threadId"] == thread_id
    streamed = "".join(f.data["content"] for f in frames if f.event == "text")
    assert streamed == "Hello, world"
    complete = frames[-1].data
    assert complete["status"] == "completed" and complete["output"] == "Hello, world"
    assert complete["usage"]["inputTokens"] == 20

    # The model saw the agent's system prompt and the user's message.
    first = daemon.model.requests[0].body
    assert first["model"] == MODEL
    assert "Be brief." in json.dumps(first["system"])

    status, detail = await daemon.get(f"/v1/runs/{run_id}")
    assert status == 200
    run = detail["data"]
    assert run["status"] == "completed" and run["output"] == "Hello, world"
    assert run["metadata"] == {"k": "v"} and run["threadId"] == thread_id
    assert run["startedAt"] and run["finishedAt"] and run["usage"]["outputTokens"] == 4
    assert [m["role"] for m in run["messages"]] == ["user", "assistant"]

    # The same thread continues: the model receives the earlier conversation.
    second = await daemon.run("helper", prompt="again?", threadId=thread_id)
    assert second["status"] == "completed" and second["result"] == "You said hi before."
    assert second["threadId"] == thread_id
    assert second["executionMode"] == "in_sandbox" and second["sandboxId"] == "local"
    sent = daemon.model.requests[1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]

    status, thread = await daemon.get(f"/v1/run/threads/{thread_id}")
    assert status == 200 and thread["data"]["agent"] == "helper"
    assert len(thread["data"]["messages"]) == 4

    status, history = await daemon.get("/v1/runs?agent=helper")
    assert status == 200
    assert [r["runId"] for r in history["data"]] == [second["runId"], run_id]
    assert history["meta"] == {"hasMore": False, "nextCursor": None}


async def test_a_standard_sse_client_reads_the_stream(daemon: Daemon) -> None:
    await daemon.upsert()
    daemon.model.script(Turn([text("one ", "two")]))
    async with httpx_sse.aconnect_sse(
        daemon.http, "POST", daemon.u("/v1/run"), json={"agent": "helper", "prompt": "go"}
    ) as source:
        assert source.response.headers["x-run-id"].startswith("run_")
        frames = [sse async for sse in source.aiter_sse()]
    # The opening `retry:` frame carries no data: EventSource dispatches nothing for it.
    assert frames[0].retry == 2000 and frames[0].data == ""
    events = [sse for sse in frames if sse.data]
    assert events[0].event == "run_started" and events[-1].event == "complete"
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert events[-1].json()["output"] == "one two"


async def test_stream_false_returns_the_finished_run(daemon: Daemon) -> None:
    await daemon.upsert()
    result = await daemon.run(prompt="hello")
    assert set(result) >= {
        "runId",
        "status",
        "result",
        "usage",
        "iterations",
        "threadId",
        "executionMode",
        "sandboxId",
    }
    assert result["status"] == "completed" and result["result"] == "default answer"
    assert result["iterations"] == 1


async def test_a_run_continues_the_callers_messages(daemon: Daemon) -> None:
    await daemon.upsert()
    result = await daemon.run(
        messages=[
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi Ada."}]},
            {"role": "user", "content": "What is my name?"},
        ],
        prompt=None,
    )
    assert result["status"] == "completed"
    sent = daemon.model.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]


async def test_a_client_that_disconnects_does_not_stop_the_run(daemon: Daemon) -> None:
    from tests.fakes.model_server import Gate

    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("slow ", "answer")], hold=gate, hold_after=2))
    resp = await daemon.session.post(daemon.u("/v1/run"), json={"agent": "helper", "prompt": "x"})
    run_id = resp.headers["X-Run-ID"]
    with anyio.fail_after(10):
        await gate.reached.wait()
    resp.close()  # the client goes away mid-run
    gate.open()
    run = await daemon.wait_status(run_id, "completed", "failed", "cancelled")
    assert run["status"] == "completed" and run["output"] == "slow answer"
