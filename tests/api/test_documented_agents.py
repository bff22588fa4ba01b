"""The platform's documented agent requests, driven through the HTTP API (issue 12, §1 and §4):
every documented field stored and returned, the documented upsert answer, slug rules and
limits as 400s naming the field, the default model, agents by id, PATCH, the SDK's custom tool
objects, paginated lists and unknown query parameters."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from runtime.config import Settings
from runtime.custom_tools import custom_tool_factory
from tests.api.conftest import MODEL, Daemon, DaemonFactory
from tests.api.test_errors import assert_error

HOOK = "http://127.0.0.1:9/hook"


async def test_the_upsert_answers_the_documented_shape(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(sandbox_id="sbx-42", public_url="https://sbx-42.example.dev/")
    status, body = await daemon.post("/v1/agents", {"slug": "coder", "model": MODEL})
    assert status == 201
    created = body["data"]
    assert set(created) == {
        "id",
        "slug",
        "action",
        "version",
        "sandboxId",
        "targetDeviceId",
        "endpoint",
    }
    assert created["id"].startswith("agt_") and created["slug"] == "coder"
    assert (created["action"], created["version"]) == ("created", 1)
    assert created["sandboxId"] == "sbx-42" and created["targetDeviceId"] is None
    assert created["endpoint"] == "https://sbx-42.example.dev/v1/agents/coder/run"

    status, body = await daemon.post(
        "/v1/agents",
        {"slug": "coder", "model": MODEL, "executionMode": "local-mac", "targetDeviceId": "mac-7"},
    )
    assert status == 200 and body["data"]["action"] == "updated"
    assert body["data"]["version"] == 2 and body["data"]["id"] == created["id"]
    assert body["data"]["sandboxId"] is None and body["data"]["targetDeviceId"] == "mac-7"

    # Without --public-url the endpoint is the path.
    plain = await make_daemon()
    assert (await plain.upsert("coder"))["endpoint"] == "/v1/agents/coder/run"


async def test_every_documented_field_is_stored_and_returned(daemon: Daemon) -> None:
    definition: dict[str, Any] = {
        "slug": "full",
        "name": "Full Agent",
        "description": "uses every documented field",
        "model": "gpt-4.1",  # a route that takes temperature
        "systemPrompt": "Be exact.",
        "tools": ["read_file", "apply_patch"],
        "sandbox": "build-runner",
        "executionMode": "managed",
        "targetDeviceId": "dev-1",
        "resources": [
            {"type": "workspace", "id": "ws_1", "mountPath": "/workspace"},
            {"type": "sandbox", "id": "sbx_9"},
        ],
        "env": {"REGION": "eu"},
        "maxIterations": 100,
        "maxTokens": 128000,
        "temperature": 0.3,
    }
    status, body = await daemon.post("/v1/agents", definition)
    assert status == 201, body
    status, body = await daemon.get("/v1/agents/full")
    assert status == 200
    assert {key: body["data"][key] for key in definition} == definition


async def test_model_is_optional_and_defaults_to_the_daemons(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(default_model="gpt-5.5")
    status, body = await daemon.post("/v1/agents", {"slug": "defaulted", "tools": []})
    assert status == 201, body
    assert (await daemon.get("/v1/agents/defaulted"))[1]["data"]["model"] == "gpt-5.5"
    # The built-in default when the daemon names none.
    builtin = await make_daemon()
    status, body = await builtin.post("/v1/agents", {"slug": "defaulted", "model": None})
    assert status == 201, body
    stored = (await builtin.get("/v1/agents/defaulted"))[1]["data"]["model"]
    assert stored == builtin.settings.default_model and stored.startswith("claude-")


async def test_slugs_are_lowercase_letters_numbers_and_hyphens(daemon: Daemon) -> None:
    for slug in ("code_assistant", "Code-Assistant", "-lead", "a" * 65, "sp ace", ""):
        status, body = await daemon.post("/v1/agents", {"slug": slug, "model": MODEL})
        message = assert_error(status, body, 400, "validation_error")["message"]
        assert "'slug'" in message and "lowercase letters, numbers and hyphens" in message
    assert (await daemon.upsert("code-assistant-2"))["slug"] == "code-assistant-2"


async def test_limits_are_400s_naming_the_field(daemon: Daemon) -> None:
    cases: list[tuple[str, str]] = [
        ('"maxIterations": 101', "maxIterations"),
        ('"maxIterations": 0', "maxIterations"),
        ('"maxTokens": 128001', "maxTokens"),
        ('"timeout": Infinity', "timeout"),
        ('"timeout": NaN', "timeout"),
        ('"timeout": 1e30', "timeout"),
        ('"maxConcurrent": 9223372036854775808', "maxConcurrent"),
        ('"temperature": 2.5', "temperature"),
        ('"thinkingBudget": 1000000', "thinkingBudget"),
        # past a float's range: compared as an integer, not an OverflowError
        ('"maxTokens": 1' + "0" * 400, "maxTokens"),
        ('"maxIterations": -1' + "0" * 400, "maxIterations"),
    ]
    for field, name in cases:
        raw = f'{{"slug": "limited", "model": "{MODEL}", {field}}}'
        status, body = await daemon.request(
            "POST", "/v1/agents", data=raw, headers={"Content-Type": "application/json"}
        )
        message = assert_error(status, body, 400, "validation_error")["message"]
        assert name in message, (field, message)
    status, body = await daemon.get("/v1/agents/limited")
    assert_error(status, body, 404, "not_found")


async def test_env_names_and_values_a_process_cannot_hold_are_400s(daemon: Daemon) -> None:
    for env, fragment in (
        ({"": "x"}, "cannot name an environment variable"),
        ({"A=B": "x"}, "cannot name an environment variable"),
        ({"TOKEN": "se\u0000cret"}, "the value of TOKEN holds a NUL byte"),
        ({"TOKEN": ["top-secret"]}, "'env.TOKEN'"),  # not a string: named, not quoted
    ):
        status, body = await daemon.post("/v1/agents", {"slug": "envy", "model": MODEL, "env": env})
        message = assert_error(status, body, 400, "validation_error")["message"]
        assert fragment in message, message
        assert "cret" not in message  # a value is never echoed
    assert (await daemon.upsert("envy", env={"GOOD_NAME": "fine value"}))["slug"] == "envy"


async def test_local_mac_needs_a_target_device(daemon: Daemon) -> None:
    status, body = await daemon.post(
        "/v1/agents", {"slug": "mac", "model": MODEL, "executionMode": "local-mac"}
    )
    assert "targetDeviceId" in assert_error(status, body, 400, "validation_error")["message"]


async def test_agents_are_addressable_by_id(daemon: Daemon) -> None:
    created = await daemon.upsert("by-id", description="v1")
    agent_id = created["id"]
    status, body = await daemon.get(f"/v1/agents/{agent_id}")
    assert status == 200 and body["data"]["slug"] == "by-id"
    status, body = await daemon.get(f"/v1/agents/{agent_id}/versions")
    assert status == 200 and [v["version"] for v in body["data"]] == [1]

    run = await daemon.run(agent_id)
    assert run["status"] == "completed"
    status, body = await daemon.post(f"/v1/run/{agent_id}", {"message": "legacy by id"})
    assert status == 200 and body["data"]["status"] == "completed"
    status, body = await daemon.get(f"/v1/runs?agent={agent_id}")
    assert status == 200 and len(body["data"]) == 2
    assert {r["agent"] for r in body["data"]} == {"by-id"}

    status, body = await daemon.request("DELETE", f"/v1/agents/{agent_id}")
    assert status == 200 and body["data"] == {"id": agent_id, "deleted": True}
    status, body = await daemon.get(f"/v1/agents/{agent_id}")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get("/v1/runs?agent=agt_nobody")
    assert_error(status, body, 404, "not_found")


async def test_patch_changes_only_the_given_fields(daemon: Daemon) -> None:
    created = await daemon.upsert(
        "patched", systemPrompt="v1", tools=["read_file"], env={"A": "1"}, secrets=["A"]
    )
    status, body = await daemon.request(
        "PATCH",
        f"/v1/agents/{created['id']}",
        json={"systemPrompt": "v2", "tools": ["read_file", "grep"]},
    )
    assert status == 200, body
    assert body["data"]["action"] == "updated" and body["data"]["version"] == 2
    assert body["data"]["id"] == created["id"] and body["data"]["slug"] == "patched"
    agent = (await daemon.get("/v1/agents/patched"))[1]["data"]
    assert agent["systemPrompt"] == "v2" and agent["tools"] == ["read_file", "grep"]
    assert agent["model"] == MODEL and agent["secrets"] == ["A"]
    # The secret's value was kept (not replaced by the redaction marker it is shown as).
    stored = await daemon.store.get_agent("patched")
    assert stored is not None and stored.spec.env == {"A": "1"}

    status, body = await daemon.request("PATCH", "/v1/agents/patched", json={"maxIterations": 7})
    assert status == 200 and body["data"]["version"] == 3
    status, body = await daemon.request("PATCH", "/v1/agents/patched", json={})
    assert status == 200 and body["data"]["version"] == 3  # nothing changed
    status, body = await daemon.request("PATCH", "/v1/agents/patched", json={"slug": "other"})
    assert "slug" in assert_error(status, body, 400, "validation_error")["message"]
    status, body = await daemon.request("PATCH", "/v1/agents/patched", json={"colour": 1})
    assert "colour" in assert_error(status, body, 400, "validation_error")["message"]
    status, body = await daemon.request("PATCH", "/v1/agents/patched", json={"maxTokens": 10**9})
    assert "maxTokens" in assert_error(status, body, 400, "validation_error")["message"]
    status, body = await daemon.request("PATCH", "/v1/agents/nobody", json={"name": "x"})
    assert_error(status, body, 404, "not_found")
    # POST keeps its full-upsert meaning: fields left out return to their defaults.
    await daemon.upsert("patched", tools=["read_file"])
    agent = (await daemon.get("/v1/agents/patched"))[1]["data"]
    assert agent["systemPrompt"] == "" and agent["maxIterations"] == 25


async def test_custom_tool_objects_as_the_sdk_sends_them(make_daemon: DaemonFactory) -> None:
    prefixes = "http://127.0.0.1:9/"
    factory = custom_tool_factory(Settings(custom_tool_url_prefixes=prefixes))
    daemon = await make_daemon(
        custom_tool_url_prefixes=prefixes, manager_kw={"custom_tool_factory": factory}
    )
    tools: list[Any] = [
        {
            "id": "tool_1",
            "name": "lookup",
            "description": "Look a thing up",
            "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
            "enabled": True,
            "invokeUrl": "http://127.0.0.1:9/lookup",
        },
        {
            "id": "tool_2",
            "name": "retired",
            "description": "Not offered",
            "inputSchema": {"type": "object", "properties": {}},
            "enabled": False,
            "invokeUrl": "http://127.0.0.1:9/retired",
        },
    ]
    await daemon.upsert("sdk-tools", tools=tools)
    assert (await daemon.get("/v1/agents/sdk-tools"))[1]["data"]["tools"] == tools

    await daemon.run("sdk-tools")
    offered = [tool["name"] for tool in daemon.model.requests[-1].body["tools"]]
    assert offered == ["lookup"]

    for target in ("lambdaArn", "inlineScript"):
        tool = {"name": "remote", "inputSchema": {"type": "object"}, target: "x"}
        status, body = await daemon.post(
            "/v1/agents", {"slug": "remote", "model": MODEL, "tools": [tool]}
        )
        message = assert_error(status, body, 400, "validation_error")["message"]
        assert target in message and "not supported by this runtime" in message


async def _walk(daemon: Daemon, path: str, limit: int) -> list[list[Any]]:
    """Every page of a list, following meta.nextCursor."""
    pages: list[list[Any]] = []
    separator = "&" if "?" in path else "?"
    url = f"{path}{separator}limit={limit}"
    while True:
        status, body = await daemon.get(url)
        assert status == 200, body
        pages.append(body["data"])
        meta = body["meta"]
        assert meta["hasMore"] is (meta["nextCursor"] is not None)
        if not meta["hasMore"]:
            return pages
        url = f"{path}{separator}limit={limit}&cursor={meta['nextCursor']}"


async def test_every_list_is_paginated_the_same_way(daemon: Daemon) -> None:
    for slug in ("a-1", "a-2", "a-3"):
        await daemon.upsert(slug)
    for number in range(2, 4):
        await daemon.upsert("a-1", description=f"v{number}")
    threads = [(await daemon.run("a-2"))["threadId"] for _ in range(3)]

    pages = await _walk(daemon, "/v1/agents", 2)
    assert [[a["slug"] for a in page] for page in pages] == [["a-1", "a-2"], ["a-3"]]
    pages = await _walk(daemon, "/v1/agents/a-1/versions", 2)
    assert [[v["version"] for v in page] for page in pages] == [[1, 2], [3]]
    pages = await _walk(daemon, "/v1/run/threads?agent=a-2", 2)
    assert [t["id"] for page in pages for t in page] == threads[::-1]
    assert [len(page) for page in pages] == [2, 1]
    pages = await _walk(daemon, "/v1/runs", 1)
    assert [len(page) for page in pages] == [1, 1, 1]

    for path in ("/v1/agents", "/v1/agents/a-1/versions", "/v1/run/threads", "/v1/runs"):
        for limit in ("0", "501", "ten"):
            status, body = await daemon.get(f"{path}?limit={limit}")
            assert "limit" in assert_error(status, body, 400, "validation_error")["message"]
        status, body = await daemon.get(f"{path}?cursor=not-a-cursor")
        assert_error(status, body, 400, "invalid_cursor")
    # A cursor of one list is not one of another's.
    status, body = await daemon.get("/v1/agents?limit=1")
    status, body = await daemon.get(f"/v1/run/threads?cursor={body['meta']['nextCursor']}")
    assert_error(status, body, 400, "invalid_cursor")


def _cursor(*value: Any) -> str:
    """A cursor as the store writes one (base64url of a JSON array), holding `value`."""
    raw = json.dumps(list(value)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "key",
    [2**63, -(2**63) - 1, 10**40, True, "\ud800"],
    ids=["2**63", "-2**63-1", "10**40", "true", "lone-surrogate"],
)
async def test_a_cursor_whose_key_sqlite_cannot_take_is_invalid(daemon: Daemon, key: Any) -> None:
    """Right kind and JSON type is not enough: the key must fit SQLite's 64-bit integers, else
    binding it fails (a 500). (`true` and a lone surrogate are guards: the type check, and the
    route's catch of the UnicodeEncodeError, a ValueError, refuse them already.)"""
    await daemon.upsert("a-1")
    await daemon.run("a-1")
    await daemon.upsert("a-1", description="v2")
    for path, kind in (
        ("/v1/runs", "runs"),
        ("/v1/agents/a-1/versions", "versions"),
        ("/v1/agents", "agents"),
        ("/v1/run/threads", "threads"),
    ):
        keys = (key, "thr_x") if kind == "threads" else (key,)
        status, body = await daemon.get(path, params={"cursor": _cursor(kind, *keys)})
        assert_error(status, body, 400, "invalid_cursor")
    # the largest keys SQLite has are still cursors
    for path, kind in (("/v1/runs", "runs"), ("/v1/agents/a-1/versions", "versions")):
        for edge in (2**63 - 1, -(2**63)):
            status, body = await daemon.get(path, params={"cursor": _cursor(kind, edge)})
            assert status == 200, body


async def test_unknown_query_parameters_are_400s_naming_them(daemon: Daemon) -> None:
    await daemon.upsert("one")
    await daemon.upsert("two")
    run = await daemon.run("one")
    await daemon.run("two")
    for path in (
        "/v1/runs?agnet=one",
        f"/v1/runs/{run['runId']}?verbose=1",
        "/v1/agents?verbose=1",
        "/v1/agents/one?colour=red",
        "/v1/run/threads?agnet=one",
        f"/v1/runs/{run['runId']}/files?path=/&depth=2",
        "/healthz?verbose=1",
    ):
        status, body = await daemon.get(path)
        error = assert_error(status, body, 400, "validation_error")
        name = path.split("?")[1].split("&")[-1].split("=")[0]
        assert name in error["message"], (path, error)
    status, body = await daemon.request("DELETE", "/v1/agents/one?force=true")
    assert "force" in assert_error(status, body, 400, "validation_error")["message"]
    # `deployment` is the platform SDK's name for `agent`.
    status, body = await daemon.get("/v1/runs?deployment=one")
    assert status == 200 and [r["runId"] for r in body["data"]] == [run["runId"]]
    status, body = await daemon.get("/v1/runs?deployment=one&agent=two")
    assert_error(status, body, 400, "validation_error")


async def test_thread_routes_are_scoped_by_agent(daemon: Daemon) -> None:
    await daemon.upsert("one")
    await daemon.upsert("two")
    thread = (await daemon.run("one"))["threadId"]
    status, body = await daemon.get(f"/v1/run/threads/{thread}?agent=one")
    assert status == 200 and body["data"]["id"] == thread
    created = await daemon.upsert("one")
    status, body = await daemon.get(f"/v1/run/threads/{thread}?agent={created['id']}")
    assert status == 200 and body["data"]["agent"] == "one"
    status, body = await daemon.get(f"/v1/run/threads/{thread}?agent=two")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.request("DELETE", f"/v1/run/threads/{thread}?agent=two")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get(f"/v1/run/threads/{thread}")
    assert status == 200  # not deleted by the other agent's request
    status, body = await daemon.request("DELETE", f"/v1/run/threads/{thread}?agent=one")
    assert status == 200 and body["data"]["deleted"] is True
