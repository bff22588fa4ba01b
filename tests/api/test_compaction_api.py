"""`POST /v1/run/threads/{id}/compact`: compacting a thread between runs, over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.compaction import SUMMARY_PREFIX
from tests.api.conftest import Daemon
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
