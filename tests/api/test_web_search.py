"""`web_search` (issue 12 §1): the platform's documented agent body, verbatim, is accepted and
its web search is the provider's own hosted search, through the real SDKs against the fake
model server speaking each API's server-tool wire format, reported as tool_call/tool_result
events; a route without a hosted search is refused at upsert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.api.conftest import Daemon, collect_events
from tests.api.test_errors import assert_error
from tests.fakes.model_server import Turn, text, web_search

DOCUMENTED_AGENT = Path(__file__).parent.parent / "fixtures" / "documented_agent.json"
RESULTS = (
    ("agentd — the agent runtime", "https://docs.example.dev/agentd", "2 days ago"),
    ("Server-sent events", "https://html.spec.example/sse", None),
)


async def _run_events(daemon: Daemon, agent: str, **fields: Any) -> tuple[dict[str, Any], list]:
    run = await daemon.run(agent, **fields)
    async with daemon.session.get(daemon.u(f"/v1/runs/{run['runId']}/events")) as resp:
        frames = await collect_events(resp)
    return run, frames


def _search_events(frames: list) -> tuple[dict[str, Any], dict[str, Any]]:
    [call] = [f.data for f in frames if f.event == "tool_call"]
    [result] = [f.data for f in frames if f.event == "tool_result"]
    return call, result


async def test_the_documented_agent_searches_with_anthropics_server_tool(daemon: Daemon) -> None:
    body = json.loads(DOCUMENTED_AGENT.read_text())
    status, created = await daemon.post("/v1/agents", body)
    assert status == 201, created
    assert created["data"]["slug"] == "code-assistant" and created["data"]["sandboxId"] == "local"
    status, stored = await daemon.get("/v1/agents/code-assistant")
    assert {key: stored["data"][key] for key in body} == body

    daemon.model.script(
        Turn(
            [web_search("agentd sse reconnect", *RESULTS), text("It resumes from Last-Event-ID.")]
        ),
        Turn([text("Still true.")]),
    )
    run, frames = await _run_events(daemon, "code-assistant", prompt="how do streams resume?")
    assert run["status"] == "completed" and run["result"] == "It resumes from Last-Event-ID."

    request = daemon.model.requests[-1]
    assert request.api == "anthropic"
    hosted = [
        {key: value for key, value in t.items() if key != "cache_control"}
        for t in request.body["tools"]
        if t.get("type") == "web_search_20250305"
    ]
    assert hosted == [{"type": "web_search_20250305", "name": "web_search"}]
    assert "web_search" not in [t.get("name") for t in request.body["tools"] if "type" not in t]

    call, result = _search_events(frames)
    assert call["tool"] == "web_search" and call["input"] == {"query": "agentd sse reconnect"}
    assert result["callId"] == call["callId"] and result["isError"] is False
    assert "https://docs.example.dev/agentd (2 days ago)" in result["output"]
    assert "https://html.spec.example/sse" in result["output"]

    # The next turn of the thread sends the search back as the API gave it.
    await daemon.run("code-assistant", threadId=run["threadId"], prompt="still?")
    assistant = daemon.model.requests[-1].body["messages"][1]
    kinds = [block["type"] for block in assistant["content"]]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    assert assistant["content"][0]["input"] == {"query": "agentd sse reconnect"}
    encrypted = [r["encrypted_content"] for r in assistant["content"][1]["content"]]
    assert encrypted == ["enc-1-0", "enc-1-1"]


async def test_a_failed_anthropic_search_is_an_error_result(daemon: Daemon) -> None:
    await daemon.upsert("searcher", model="claude-sonnet-4-6", tools=["web_search"])
    daemon.model.script(
        Turn([web_search("too much", error="max_uses_exceeded"), text("No search left.")])
    )
    _, frames = await _run_events(daemon, "searcher")
    _, result = _search_events(frames)
    assert result["isError"] is True and "max_uses_exceeded" in result["output"]


async def test_openai_responses_searches_with_its_web_search_tool(daemon: Daemon) -> None:
    await daemon.upsert("gpt-searcher", model="gpt-5.5", tools=["read_file", "web_search"])
    daemon.model.script(
        Turn([web_search("anyio cancel scopes", *RESULTS), text("Scopes nest.")]),
        Turn([text("Yes.")]),
    )
    run, frames = await _run_events(daemon, "gpt-searcher")
    assert run["status"] == "completed" and run["result"] == "Scopes nest."

    request = daemon.model.requests[-1]
    assert request.api == "responses"
    assert {"type": "web_search"} in request.body["tools"]
    assert [t["name"] for t in request.body["tools"] if t["type"] == "function"] == ["read_file"]
    assert "web_search_call.action.sources" in request.body["include"]

    call, result = _search_events(frames)
    assert call["tool"] == "web_search" and call["input"] == {"query": "anyio cancel scopes"}
    assert result["output"].splitlines() == [url for _, url, _ in RESULTS]

    await daemon.run("gpt-searcher", threadId=run["threadId"], prompt="sure?")
    items = daemon.model.requests[-1].body["input"]
    [searched] = [item for item in items if item.get("type") == "web_search_call"]
    assert searched["id"] == call["callId"] and searched["status"] == "completed"
    assert searched["action"]["query"] == "anyio cancel scopes"


async def test_routes_without_a_hosted_search_are_refused_at_upsert(daemon: Daemon) -> None:
    for model in ("gemini-2.5-flash", "openai-chat:gpt-4.1"):
        status, body = await daemon.post(
            "/v1/agents", {"slug": "nosearch", "model": model, "tools": ["web_search"]}
        )
        message = assert_error(status, body, 400, "unsupported_tool")["message"]
        assert "web_search" in message and "claude-*" in message and "gpt-*" in message
    status, body = await daemon.get("/v1/agents/nosearch")
    assert_error(status, body, 404, "not_found")
