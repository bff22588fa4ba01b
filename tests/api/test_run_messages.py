"""`POST /v1/run` with the caller's own `messages`: each role holds only the parts a provider
can send and the thread's events record, every tool call is answered by the tool message right
after it, and whatever is accepted runs, and forks, without an internal error."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.api.conftest import Daemon
from tests.api.test_errors import assert_error
from tests.runtime.test_compaction_runs import assert_tool_calls_paired

PNG = (  # one transparent pixel
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
CALL = {"type": "tool_call", "id": "c1", "name": "read_file", "arguments": {"path": "a.txt"}}
RESULT = {"type": "tool_result", "call_id": "c1", "output": "alpha"}
RECORD = {
    "type": "compaction",
    "keep_from": 1,
    "summary": "S",
    "tokens_before": 1,
    "tokens_after": 1,
    "messages_replaced": 1,
}

# An alphabet of messages, valid and not, whose short sequences the property below tries.
ALPHABET: dict[str, dict[str, Any]] = {
    "user": {"role": "user", "content": "read a.txt"},
    "user_image": {
        "role": "user",
        "content": [
            {"type": "text", "text": "and this"},
            {"type": "image", "media_type": "image/png", "data": PNG},
        ],
    },
    "assistant": {"role": "assistant", "content": "Done."},
    "thinking": {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"}]},
    "call": {"role": "assistant", "content": [{"type": "text", "text": "Reading."}, CALL]},
    "result": {"role": "tool", "content": [RESULT]},
    "tool_text": {"role": "tool", "content": "plain text"},
    "user_result": {"role": "user", "content": [RESULT]},
    "user_record": {"role": "user", "content": [RECORD]},
}


def history(*names: str) -> list[dict[str, Any]]:
    return [ALPHABET[name] for name in names]


@pytest.mark.parametrize(
    ("messages", "prompt", "field", "says"),
    [
        # what a role holds
        (history("user", "call", "tool_text"), "x", "messages.2.content", "`tool_result`"),
        (
            [
                *history("user", "call"),
                {"role": "tool", "content": [{"type": "text", "text": "a"}]},
            ],
            "x",
            "messages.2.content",
            "content[0] is a 'text' part; a tool message holds only `tool_result` parts",
        ),
        (history("user_result"), "x", "messages.0.content", "a user message holds only"),
        (
            [{"role": "user", "content": [CALL]}],
            "x",
            "messages.0.content",
            "content[0] is a 'tool_call' part",
        ),
        (
            [{"role": "assistant", "content": [RESULT]}],
            "x",
            "messages.0.content",
            "an assistant message holds only",
        ),
        (history("user_record"), "x", "messages.0.content.parts.0", "'compaction'"),
        ([{"role": "compaction", "content": [RECORD]}], "x", "messages.0.role", "'tool'"),
        ([{"role": "user", "content": []}], "x", "messages.0.content", "at least one part"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "media_type": "image/png", "data": "!"}],
                }
            ],
            "x",
            "messages.0.content",
            "not base64",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "media_type": "text/html", "data": PNG}],
                }
            ],
            "x",
            "messages.0.content",
            "media_type 'text/html'",
        ),
        # which calls a tool message answers
        (history("result"), "x", "messages", "messages[0] is a tool message, but it does not"),
        (history("user", "result"), "x", "messages", "messages[1] is a tool message"),
        (history("user", "call", "result", "result"), "x", "messages", "messages[3] is a tool"),
        (
            [
                *history("user", "call"),
                {"role": "tool", "content": [{**RESULT, "call_id": "c9"}]},
            ],
            "x",
            "messages",
            "messages[2] answers tool call 'c9', which messages[1] did not make",
        ),
        (
            [*history("user", "call"), {"role": "tool", "content": [RESULT, RESULT]}],
            "x",
            "messages",
            "answers tool call 'c1' twice",
        ),
        (
            [*history("user"), {"role": "assistant", "content": [CALL, CALL]}],
            "x",
            "messages",
            "more than one tool call with id 'c1'",
        ),
        (
            [
                *history("user"),
                {"role": "assistant", "content": [CALL, {**CALL, "id": "c2"}]},
                *history("result"),
            ],
            "x",
            "messages",
            "messages[2] has no result for tool call(s) 'c2' of messages[1]",
        ),
        (history("user", "call"), "x", "messages", "messages[1] makes tool calls ('c1')"),
        (history("user", "call", "user"), None, "messages", "whose results do not follow"),
        # what the model is to answer
        (
            history("user", "assistant"),
            None,
            "messages",
            "without `prompt` the messages must end with a user or tool message",
        ),
    ],
)
async def test_messages_a_model_cannot_continue_are_refused_naming_the_message(
    daemon: Daemon, messages: list[dict[str, Any]], prompt: str | None, field: str, says: str
) -> None:
    await daemon.upsert(tools=["read_file"])
    body: dict[str, Any] = {"agent": "helper", "messages": messages, "stream": False}
    if prompt is not None:
        body["prompt"] = prompt
    status, answer = await daemon.post("/v1/run", body)
    error = assert_error(status, answer, 400, "validation_error")
    assert says in error["message"], error
    assert field in [d["field"] for d in error["details"]], error
    status, runs = await daemon.get("/v1/runs")
    assert runs["data"] == [] and daemon.model.requests == []


async def test_the_legacy_history_follows_the_same_rules(daemon: Daemon) -> None:
    await daemon.upsert(tools=["read_file"])
    for bad, says in (
        (history("user", "call", "tool_text"), "`tool_result`"),
        (history("user", "call"), "whose results do not follow"),
    ):
        status, body = await daemon.post(
            "/v1/agents/helper/run", {"message": "go on", "context": {"history": bad}}
        )
        error = assert_error(status, body, 400, "validation_error")
        assert "context.history" in error["message"] and says in error["message"], error
        assert "Value error" not in error["message"]
    # the previous run's messages, as GET /v1/runs/{id} shows them, are a history
    run = await daemon.run(messages=history("user", "call", "result"))
    status, detail = await daemon.get(f"/v1/runs/{run['runId']}")
    previous = detail["data"]["messages"]
    status, body = await daemon.post(
        "/v1/agents/helper/run", {"message": "go on", "context": {"history": previous}}
    )
    assert status == 200 and body["data"]["status"] == "completed", body


async def test_whatever_messages_are_accepted_run_and_fork_without_an_internal_error(
    daemon: Daemon,
) -> None:
    """Every sequence of up to three messages of the alphabet, with and without a prompt: it
    is refused (400 naming `messages`), or its run completes, the model is sent a conversation
    that ends with the user's turn and pairs every tool call with its result, and a fork of
    the run at the caller's last message (with and without a prompt) is refused as a fork
    that cannot continue, or completes on its new thread."""
    await daemon.upsert(tools=["read_file"])
    accepted = 0
    sequences = [names for n in (1, 2, 3) for names in itertools.product(ALPHABET, repeat=n)]
    for names, prompt in itertools.product(sequences, ("next", None)):
        messages = history(*names)
        body: dict[str, Any] = {"agent": "helper", "messages": messages, "stream": False}
        if prompt is not None:
            body["prompt"] = prompt
        status, answer = await daemon.post("/v1/run", body)
        if status == 400:
            error = assert_error(status, answer, 400, "validation_error")
            assert error["details"][0]["field"].startswith("messages"), (names, error)
            continue
        assert status == 200 and answer["data"]["status"] == "completed", (names, answer)
        accepted += 1
        for fork_prompt in ("and then?", None):
            status, fork = await daemon.post(
                f"/v1/runs/{answer['data']['runId']}/fork",
                {"step": len(messages), "prompt": fork_prompt},
            )
            if status == 400:
                assert fork_prompt is None and fork["error"]["code"] == "invalid_request"
                continue
            assert status == 201, (names, fork)
            done = await daemon.wait_status(fork["data"]["runId"], "completed", "failed")
            assert done["status"] == "completed", (names, fork_prompt, done["error"])
    assert accepted >= 100  # (142 of the 1,638 tried)
    for request in daemon.model.requests:
        assert request.body["messages"][-1]["role"] == "user", request.body["messages"]
        assert_tool_calls_paired(request)
