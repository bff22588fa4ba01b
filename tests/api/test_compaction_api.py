"""`POST /v1/run/threads/{id}/compact`: compacting a thread between runs, over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.compaction import SUMMARY_CUT_NOTE, SUMMARY_MAX_TOKENS, SUMMARY_PREFIX
from tests.api.conftest import Daemon, collect_events
from tests.api.test_errors import assert_error
from tests.api.test_metrics import scrape
from tests.fakes import model_server as fake
from tests.runtime.test_compaction_runs import is_summary_request, long_task, write_files


async def test_a_thread_is_compacted_on_request_between_runs(
    daemon: Daemon, workspace: Path
) -> None:
    write_files(workspace, 8)
    daemon.model.responder = long_task(8)
    daemon.model.default_turn = None
    await daemon.upsert("reader", model="claude-sonnet-4-6", tools=["read_file"])
    run = await daemon.run("reader", prompt="Read eight files.")
    assert run["status"] == "completed", run
    thread = run["threadId"]
    before = len(daemon.model.requests)

    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert status == 200, body
    done = body["data"]
    assert done["threadId"] == thread and done["summarized"] is True
    assert done["tokensAfter"] < done["tokensBefore"] and done["messagesReplaced"] > 0
    (summary_request,) = daemon.model.requests[before:]
    assert is_summary_request(summary_request) and not summary_request.body.get("tools")

    # The thread keeps every original message and the record; the next run sends the view.
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    roles = [m["role"] for m in body["data"]["messages"]]
    assert roles.count("tool") == 8 and roles[-1] == "compaction"
    daemon.model.responder = long_task(0)
    again = await daemon.run("reader", prompt="And now?", threadId=thread)
    assert again["status"] == "completed", again
    sent = json.dumps(daemon.model.requests[-1].body)
    assert SUMMARY_PREFIX[:40] in sent and "Read eight files." in sent
    assert sent.count("file 3: abcdefghij") == 0  # old outputs are in the summary, not resent

    status, body = await daemon.post("/v1/run/threads/thr_nope/compact")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_a_compact_request_with_a_body_is_checked_like_the_run_controls(
    daemon: Daemon,
) -> None:
    await daemon.upsert()
    thread = (await daemon.run())["threadId"]
    for data, code in ((b"{", "invalid_json"), (b'{"force": true}', "validation_error")):
        async with daemon.session.post(
            daemon.u(f"/v1/run/threads/{thread}/compact"),
            data=data,
            headers={"Content-Type": "application/json"},
        ) as resp:
            body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == code, body


# -- the thread is held while it is compacted or deleted -------------------------------------


async def read_thread(daemon: Daemon, workspace: Path, prompt: str, **fields: Any) -> str:
    """A finished run of a reader agent that read eight files; its thread's id."""
    write_files(workspace, 8)
    daemon.model.responder = long_task(8)
    daemon.model.default_turn = None
    await daemon.upsert("reader", model="claude-sonnet-4-6", tools=["read_file"])
    run = await daemon.run("reader", prompt=prompt, **fields)
    assert run["status"] == "completed", run
    return str(run["threadId"])


def held_summaries(gate: fake.Gate) -> Callable[[fake.RecordedRequest], fake.ScriptItem]:
    """`long_task`, but a summary request stops (before its first frame) at `gate`."""
    task = long_task(0)

    def respond(request: fake.RecordedRequest) -> fake.ScriptItem:
        if is_summary_request(request):
            return fake.Turn([fake.text("SUMMARY: read eight files.")], hold=gate)
        return task(request)

    return respond


@asynccontextmanager
async def compaction_under_way(daemon: Daemon, thread: str) -> AsyncIterator[dict[str, Any]]:
    """A compaction of `thread` held in its summary request while the block runs; the
    summary is answered when it ends, and the compact call's (status, body) is then in the
    yielded dict's "answer"."""
    gate = fake.Gate()
    daemon.model.responder = held_summaries(gate)
    compacted: dict[str, Any] = {}

    async def compact() -> None:
        compacted["answer"] = await daemon.post(f"/v1/run/threads/{thread}/compact")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(compact)
            await gate.reached.wait()
            try:
                yield compacted
            finally:
                gate.open()


async def test_a_thread_being_compacted_is_not_deleted(daemon: Daemon, workspace: Path) -> None:
    thread = await read_thread(daemon, workspace, "Read eight files.", threadId="kept-thread")
    async with compaction_under_way(daemon, thread) as compacted:
        status, body = await daemon.request("DELETE", f"/v1/run/threads/{thread}")
        # The thread stream has no active run to show (the holder is no run).
        async with daemon.session.ws_connect(daemon.u(f"/v1/threads/{thread}/stream")) as ws:
            snapshot = await ws.receive_json()
    error = assert_error(status, body, 409, "thread_busy")
    assert "compaction" in error["message"]
    assert snapshot["type"] == "snapshot" and snapshot["activeRunId"] is None, snapshot
    status, body = compacted["answer"]
    assert status == 200 and body["data"]["summarized"] is True, body

    # Deleted once the compaction is done, the id starts a new thread without its records.
    status, body = await daemon.request("DELETE", f"/v1/run/threads/{thread}")
    assert status == 200, body
    daemon.model.responder = long_task(0)
    again = await daemon.run("reader", prompt="A new conversation.", threadId=thread)
    assert again["status"] == "completed", again
    status, body = await daemon.get(f"/v1/threads/{thread}/events")
    assert body["data"][0]["type"] == "run_started"
    assert all(not e["type"].startswith("compaction") for e in body["data"])
    sent = json.dumps(daemon.model.requests[-1].body)
    assert SUMMARY_PREFIX[:40] not in sent and "Read eight files." not in sent


async def test_a_thread_being_deleted_is_not_compacted(
    daemon: Daemon, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = await read_thread(daemon, workspace, "Read eight files.")
    # The deletion stops where it kills what the thread's last run left running.
    reached, go_on = anyio.Event(), anyio.Event()
    release = daemon.manager.release_thread

    async def held_release(thread_id: str) -> None:
        reached.set()
        await go_on.wait()
        await release(thread_id)

    monkeypatch.setattr(daemon.manager, "release_thread", held_release)
    requests = len(daemon.model.requests)
    deleted: dict[str, tuple[int, Any]] = {}

    async def delete() -> None:
        deleted["answer"] = await daemon.request("DELETE", f"/v1/run/threads/{thread}")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(delete)
            await reached.wait()
            status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
            go_on.set()
    assert_error(status, body, 409, "thread_busy")
    assert len(daemon.model.requests) == requests  # no summary was asked for
    assert deleted["answer"][0] == 200, deleted
    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert_error(status, body, 404, "not_found")


async def test_a_compaction_whose_thread_is_gone_records_nothing(
    daemon: Daemon, workspace: Path
) -> None:
    thread = await read_thread(daemon, workspace, "Read eight files.", threadId="gone-thread")
    async with compaction_under_way(daemon, thread) as compacted:
        # Removed beneath the API (the route holds the thread, so it cannot do this).
        await daemon.manager.thread_events.delete(thread)
        assert await daemon.store.delete_thread(thread)
    status, body = compacted["answer"]
    assert_error(status, body, 404, "not_found")
    assert await daemon.store.thread_events_after(thread) == []
    assert not (workspace / ".agentd" / "threads" / f"{thread}.jsonl").exists()
    status, body = await daemon.get(f"/v1/threads/{thread}/events")
    assert_error(status, body, 404, "not_found")


# -- what a summary request costs ------------------------------------------------------------


async def scrape_tokens(daemon: Daemon) -> dict[str, float]:
    samples = await scrape(daemon)
    return {
        kind: samples[f'agentd_model_tokens_total{{kind="{kind}"}}']
        for kind in ("input", "output", "cached_input", "reasoning")
    }


async def test_a_manual_compaction_reports_and_counts_its_summary_tokens(
    daemon: Daemon, workspace: Path
) -> None:
    thread = await read_thread(daemon, workspace, "Read eight files.")
    before = await scrape_tokens(daemon)
    daemon.model.script(
        fake.Turn(
            [fake.text("SUMMARY: read eight files.")],
            usage=fake.TurnUsage(input_tokens=7_777, output_tokens=333, cached_input_tokens=77),
        )
    )
    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert status == 200, body
    usage = {"inputTokens": 7_777, "outputTokens": 333, "cachedInputTokens": 77}
    assert body["data"]["usage"] == {**usage, "reasoningTokens": 0}
    after = await scrape_tokens(daemon)
    assert after["input"] - before["input"] == 7_777
    assert after["output"] - before["output"] == 333
    assert after["cached_input"] - before["cached_input"] == 77


async def test_a_runs_summary_requests_count_in_its_usage_events_and_metrics(
    daemon: Daemon, workspace: Path
) -> None:
    window = 8_000
    write_files(workspace, 20)
    read = iter(range(20))

    def respond(request: fake.RecordedRequest) -> fake.ScriptItem:
        if is_summary_request(request):
            return fake.Turn([fake.text("SUMMARY: files read.")], usage=fake.TurnUsage(0, 900))
        turn = next(read, None)
        if turn is None:
            return fake.Turn([fake.text("All files read.")])
        # Long thoughts: stubbing old tool outputs alone never suffices, so it summarises.
        thoughts = fake.text(f"Reading file {turn}. " + "Thinking aloud. " * 150)
        return fake.Turn([thoughts, fake.tool_call("read_file", {"path": f"src/f{turn}.txt"})])

    daemon.model.responder, daemon.model.default_turn = respond, None
    daemon.model.context_limit, daemon.model.usage_from_request = window, True
    await daemon.upsert("reader", tools=["read_file"], maxIterations=100, contextWindow=window)
    run = await daemon.run("reader", prompt="Read every file in src/.")
    assert run["status"] == "completed", run
    summaries = [r for r in daemon.model.requests if is_summary_request(r)]
    turns = len(daemon.model.requests) - len(summaries)
    assert summaries and run["iterations"] == turns  # a summary request is no iteration

    async with daemon.session.get(daemon.u(f"/v1/runs/{run['runId']}/events")) as resp:
        events = [frame.data for frame in await collect_events(resp)]
    types = [e["type"] for e in events]
    usages = [e for e in events if e["type"] == "usage"]
    of_summaries = [e for e in usages if e.get("compaction") is True]
    assert len(usages) == turns + len(summaries)
    assert [e["outputTokens"] for e in of_summaries] == [900] * len(summaries)
    assert all(e["inputTokens"] > 0 for e in of_summaries)
    # Each between its compaction's start and end.
    for event in of_summaries:
        at = events.index(event)
        assert types[at - 1] == "compaction_started" and types[at + 1] == "compaction_completed"

    kinds = ("inputTokens", "outputTokens", "cachedInputTokens", "reasoningTokens")
    total = {kind: sum(e[kind] for e in usages) for kind in kinds}
    assert total["outputTokens"] == 7 * turns + 900 * len(summaries)
    assert total["inputTokens"] == sum(r.tokens for r in daemon.model.requests)
    assert {k: events[-1]["usage"][k] for k in kinds} == total  # the `complete` event
    status, body = await daemon.get(f"/v1/runs/{run['runId']}")
    assert status == 200, body
    assert {k: body["data"]["usage"][k] for k in kinds} == total  # the stored run
    metrics = await scrape_tokens(daemon)
    assert metrics["input"] == total["inputTokens"]
    assert metrics["output"] == total["outputTokens"]


# -- what cannot be compacted, and summaries that are none -----------------------------------


def cassette_turn(number: int, content: list[dict[str, Any]], stop: str) -> str:
    return json.dumps(
        {
            "turn": number,
            "request": None,
            "model": "claude-sonnet-4-6",
            "stop_reason": stop,
            "usage": {"inputTokens": 10, "outputTokens": 5},
            "content": content,
        }
    )


async def test_a_replayed_cassettes_thread_is_not_compactable(
    daemon: Daemon, workspace: Path
) -> None:
    write_files(workspace, 4)
    cassette = workspace / "cassette.jsonl"
    reads = [
        cassette_turn(
            i + 1,
            [
                {"type": "text", "text": f"Reading file {i}."},
                {
                    "type": "tool_call",
                    "id": f"call_{i}",
                    "name": "read_file",
                    "arguments": {"path": f"src/f{i}.txt"},
                },
            ],
            "tool_use",
        )
        for i in range(4)
    ]
    done = cassette_turn(5, [{"type": "text", "text": "All files read."}], "end_turn")
    cassette.write_text("\n".join([*reads, done]) + "\n")
    await daemon.upsert("replayer", model=f"replay:{cassette}", tools=["read_file"])
    run = await daemon.run("replayer", prompt="Read four files.")
    assert run["status"] == "completed", run
    thread = run["threadId"]
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    stored = body["data"]["messages"]

    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert (
        "replays a recorded cassette"
        in assert_error(status, body, 400, "not_compactable")["message"]
    )
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    assert body["data"]["messages"] == stored
    status, body = await daemon.get(f"/v1/threads/{thread}/events")
    assert all(not e["type"].startswith("compaction") for e in body["data"])


@pytest.mark.parametrize(
    "answer",
    [
        fake.Turn([fake.text("")], usage=fake.TurnUsage(100, 3)),
        fake.Turn([fake.tool_call("read_file", {"path": "x"})], usage=fake.TurnUsage(100, 3)),
        fake.Turn(
            [fake.text("I can't help with that.")],
            stop_reason="refusal",
            usage=fake.TurnUsage(100, 3),
        ),
    ],
    ids=["no-text", "only-a-tool-call", "refusal"],
)
async def test_an_answer_that_is_no_summary_is_a_model_error_not_a_conflict(
    daemon: Daemon, workspace: Path, answer: fake.Turn
) -> None:
    thread = await read_thread(daemon, workspace, "Read eight files.")
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    stored = body["data"]["messages"]
    before = await scrape_tokens(daemon)
    daemon.model.script(answer)

    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    error = assert_error(status, body, 424, "model_error")
    assert "no usable summary" in error["message"]
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    assert body["data"]["messages"] == stored  # nothing recorded
    after = await scrape_tokens(daemon)
    assert after["output"] - before["output"] == 3  # its tokens were spent all the same


async def test_a_summary_cut_off_at_max_tokens_is_kept_marked_as_cut(
    daemon: Daemon, workspace: Path
) -> None:
    thread = await read_thread(daemon, workspace, "Read eight files.")
    daemon.model.script(
        fake.Turn([fake.text("SUMMARY: read files 0 to")], stop_reason="max_tokens")
    )
    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert status == 200 and body["data"]["summarized"] is True, body
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    record = body["data"]["messages"][-1]
    assert record["role"] == "compaction"
    summary = record["content"][0]["summary"]
    assert summary.startswith("SUMMARY: read files 0 to")
    assert summary.endswith(SUMMARY_CUT_NOTE.format(max_tokens=SUMMARY_MAX_TOKENS))


async def test_a_compaction_that_cannot_get_under_the_threshold_is_no_conflict(
    daemon: Daemon, workspace: Path
) -> None:
    # The first message is always kept: one larger than the threshold cannot be compacted.
    thread = await read_thread(daemon, workspace, "Read eight files. " + "Context. " * 4_000)
    await daemon.upsert(
        "reader", model="claude-sonnet-4-6", tools=["read_file"], contextWindow=8_000
    )
    daemon.model.responder = long_task(0)
    status, body = await daemon.post(f"/v1/run/threads/{thread}/compact")
    assert (
        "still above the threshold"
        in assert_error(status, body, 400, "context_overflow")["message"]
    )
