"""Run controls, history, fork, the legacy shapes, limits."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.api.conftest import Daemon, DaemonFactory, collect_events
from tests.api.test_errors import assert_error
from tests.fakes.model_server import Gate, Turn, text
from tests.runtime.test_compaction_runs import long_task, write_files


async def held_run(daemon: Daemon, *chunks: str) -> tuple[str, Gate, Any]:
    """A streaming run whose model stream stops after its first frames until `gate.open()`."""
    gate = Gate()
    daemon.model.script(Turn([text(*chunks)], hold=gate, hold_after=2))
    resp = await daemon.session.post(daemon.u("/v1/run"), json={"agent": "helper", "prompt": "x"})
    assert resp.status == 200
    with anyio.fail_after(10):
        await gate.reached.wait()
    return resp.headers["X-Run-ID"], gate, resp


async def test_pause_input_resume(daemon: Daemon) -> None:
    await daemon.upsert()
    run_id, gate, resp = await held_run(daemon, "first")
    daemon.model.script(Turn([text("got your note")]))
    # A model turn is under way: `pausing` until the run stops at its safe point.
    status, body = await daemon.post(f"/v1/runs/{run_id}/pause")
    assert status == 200 and body["data"]["status"] == "pausing"
    status, body = await daemon.post(f"/v1/runs/{run_id}/input", {"text": "also: be nice"})
    assert status == 200
    gate.open()  # the model turn under way finishes; the run stays paused after it
    await daemon.wait_status(run_id, "paused")
    status, body = await daemon.post(f"/v1/runs/{run_id}/resume", {})
    assert status == 200 and body["data"]["status"] in ("running", "queued")
    frames = await collect_events(resp)
    resp.close()
    kinds = [f.event for f in frames]
    assert "input" in kinds and frames[-1].data["status"] == "completed"
    statuses = [f.data["status"] for f in frames if f.event == "status"]
    assert statuses[:3] == ["pausing", "paused", "resumed"]
    sent = daemon.model.requests[-1].body["messages"]
    assert "also: be nice" in str(sent[-1])


async def test_cancel_and_controls_on_a_finished_run_are_409(daemon: Daemon) -> None:
    await daemon.upsert()
    run_id, gate, resp = await held_run(daemon, "never finished")
    status, body = await daemon.post(f"/v1/runs/{run_id}/cancel")
    assert status == 200 and body["data"]["status"] == "cancelled"
    frames = await collect_events(resp)
    resp.close()
    gate.open()
    assert frames[-1].event == "complete" and frames[-1].data["status"] == "cancelled"
    for control, payload in (
        ("pause", None),
        ("resume", None),
        ("cancel", None),
        ("input", {"text": "hello?"}),
    ):
        status, body = await daemon.post(f"/v1/runs/{run_id}/{control}", payload)
        assert "finished" in assert_error(status, body, 409, "conflict")["message"]


async def test_control_bodies_are_validated(daemon: Daemon) -> None:
    await daemon.upsert()
    run_id = (await daemon.run())["runId"]
    status, body = await daemon.post(f"/v1/runs/{run_id}/input", {"text": ""})
    assert_error(status, body, 400, "validation_error")
    status, body = await daemon.post(f"/v1/runs/{run_id}/pause", {"now": True})
    assert "unknown field 'now'" in assert_error(status, body, 400, "validation_error")["message"]


async def test_history_filters_and_pages(daemon: Daemon) -> None:
    await daemon.upsert("one")
    await daemon.upsert("two")
    ids = [(await daemon.run(agent))["runId"] for agent in ("one", "two", "one")]
    status, body = await daemon.get("/v1/runs?limit=2")
    assert status == 200 and [r["runId"] for r in body["data"]] == ids[::-1][:2]
    assert body["meta"]["hasMore"] is True and body["meta"]["nextCursor"]
    status, body = await daemon.get(f"/v1/runs?limit=2&cursor={body['meta']['nextCursor']}")
    assert [r["runId"] for r in body["data"]] == [ids[0]]
    assert body["meta"] == {"hasMore": False, "nextCursor": None}
    status, body = await daemon.get("/v1/runs?agent=one&status=completed")
    assert [r["runId"] for r in body["data"]] == [ids[2], ids[0]]
    status, body = await daemon.get("/v1/runs?status=failed")
    assert body["data"] == []


async def test_fork_from_a_step(daemon: Daemon) -> None:
    await daemon.upsert()
    daemon.model.script(Turn([text("The answer is 4.")]), Turn([text("Forked: 5.")]))
    source = await daemon.run(prompt="2+2?")
    status, body = await daemon.post(
        f"/v1/runs/{source['runId']}/fork", {"step": 0, "prompt": "2+3?"}
    )
    assert status == 201, body
    fork = body["data"]
    assert fork["parentRunId"] == source["runId"] and fork["forkStep"] == 0
    assert fork["threadId"] != source["threadId"]
    done = await daemon.wait_status(fork["runId"], "completed", "failed")
    assert done["output"] == "Forked: 5." and done["parentRunId"] == source["runId"]
    assert "2+3?" in str(daemon.model.requests[-1].body["messages"])

    status, body = await daemon.post(f"/v1/runs/{source['runId']}/fork", {"step": 99})
    assert "between 0 and 2" in assert_error(status, body, 400, "invalid_request")["message"]
    status, body = await daemon.post("/v1/runs/run_nope/fork", {"step": 0, "prompt": "x"})
    assert_error(status, body, 404, "not_found")


async def test_legacy_shapes(daemon: Daemon) -> None:
    await daemon.upsert()
    daemon.model.script(Turn([text("legacy ok")]), Turn([text("api slug ok")]))
    status, body = await daemon.post(
        "/v1/agents/helper/run",
        {"message": "do it", "context": {"ticket": 7}, "params": {"p": 1}, "mounts": []},
    )
    assert status == 200, body
    legacy = body["data"]
    assert set(legacy) >= {"id", "status", "output", "devUrl", "files", "usage"}
    assert legacy["status"] == "completed" and legacy["output"] == "legacy ok"
    assert legacy["devUrl"] is None and legacy["files"] == []
    sent = str(daemon.model.requests[0].body["messages"])
    assert "do it" in sent and '"ticket": 7' in sent
    status, detail = await daemon.get(f"/v1/runs/{legacy['id']}")
    assert detail["data"]["metadata"]["params"] == {"p": 1}

    async with daemon.session.post(
        daemon.u("/v1/run/helper"), json={"message": "stream it", "stream": True}
    ) as resp:
        assert resp.headers["X-Run-ID"].startswith("run_")
        frames = await collect_events(resp)
    assert frames[-1].data["output"] == "api slug ok"

    status, body = await daemon.post("/v1/run/ghost", {"message": "x"})
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.post("/v1/agents/helper/run", {"prompt": "wrong shape"})
    assert_error(status, body, 400, "validation_error")


async def test_a_full_queue_is_429(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(max_concurrent_runs=1, max_queue=0)
    await daemon.upsert()
    _, gate, resp = await held_run(daemon, "busy")
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "me too", "stream": False}
    ) as refused:
        error = assert_error(refused.status, await refused.json(), 429, "queue_full")
        assert refused.headers["Retry-After"]
    assert "queue" in error["message"]
    gate.open()
    await collect_events(resp)
    resp.close()
    # A slot is free again.
    assert (await daemon.run())["status"] == "completed"


async def test_a_model_failure_is_a_failed_run_not_an_http_error(daemon: Daemon) -> None:
    from tests.fakes.model_server import HttpError

    await daemon.upsert()
    daemon.model.script(HttpError(400, "bad request from the model"))
    result = await daemon.run()
    assert result["status"] == "failed" and result["error"]["code"] == "model_error"


async def test_controls_that_meet_a_finishing_run_are_409s_and_change_nothing(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control that arrives once the run has begun to finish (its record not yet written)
    is refused: it neither writes over the run's end nor adds an event after `complete`."""
    await daemon.upsert()
    finishing, release = anyio.Event(), anyio.Event()
    update_run = daemon.store.update_run

    async def held_at_the_end(run_id: str, **fields: Any) -> Any:
        if fields.get("status") == "completed":
            finishing.set()
            await release.wait()
        return await update_run(run_id, **fields)

    monkeypatch.setattr(daemon.store, "update_run", held_at_the_end)
    daemon.model.script(Turn([text("done")]))
    resp = await daemon.session.post(daemon.u("/v1/run"), json={"agent": "helper", "prompt": "x"})
    run_id = resp.headers["X-Run-ID"]
    try:
        with anyio.fail_after(30):
            await finishing.wait()
        for control, payload in (("pause", None), ("resume", None), ("input", {"text": "hi"})):
            status, body = await daemon.post(f"/v1/runs/{run_id}/{control}", payload)
            assert "finishing" in assert_error(status, body, 409, "conflict")["message"]
    finally:
        release.set()
    frames = await collect_events(resp)
    resp.close()
    assert frames[-1].event == "complete"
    assert not [f for f in frames if f.event in ("status", "input")]
    assert frames[-1].data["status"] == "completed"
    assert (await daemon.wait_status(run_id, "completed"))["finishedAt"]


async def test_a_fork_without_a_prompt_must_end_where_the_model_has_something_to_answer(
    daemon: Daemon,
) -> None:
    """The rule applies to what the model is sent: a cut that ends with the assistant's
    answer and then a compaction record still ends with the assistant (no prefill)."""
    write_files(daemon.workspace, 8)
    daemon.model.responder = long_task(8)
    daemon.model.default_turn = None
    await daemon.upsert("reader", tools=["read_file"])
    thread = (await daemon.run("reader", prompt="Read eight files."))["threadId"]
    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert status == 200, body
    daemon.model.responder = None
    daemon.model.default_turn = Turn([text("second answer")])
    second = await daemon.run("reader", prompt="Second prompt", threadId=thread)
    status, detail = await daemon.get(f"/v1/runs/{second['runId']}")
    roles = [m["role"] for m in detail["data"]["messages"]]
    record = roles.index("compaction")  # the step that ends with it is record + 1
    assert roles[record - 1 : record + 2] == ["assistant", "compaction", "user"]
    sent = len(daemon.model.requests)

    for step, says in (
        (record, f"message {record} is from the assistant)"),
        (record + 1, f"message {record} is from the assistant; message {record + 1} is a comp"),
    ):
        status, body = await daemon.post(f"/v1/runs/{second['runId']}/fork", {"step": step})
        error = assert_error(status, body, 400, "invalid_request")
        assert "without a prompt the fork must end with a user or tool message" in error["message"]
        assert says in error["message"], error
    assert len(daemon.model.requests) == sent  # nothing was started

    # With a prompt the same cut continues: the model answers the new user message.
    status, body = await daemon.post(
        f"/v1/runs/{second['runId']}/fork", {"step": record + 1, "prompt": "Go on."}
    )
    assert status == 201, body
    done = await daemon.wait_status(body["data"]["runId"], "completed", "failed")
    assert done["status"] == "completed", done
    last = daemon.model.requests[-1].body["messages"][-1]
    assert last["role"] == "user" and "Go on." in str(last)
