"""Agents: upsert with versions, list, get, delete, versions, rollback, and refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import MODEL, Daemon
from tests.api.test_errors import assert_error


async def test_upsert_versions_and_rollback(daemon: Daemon) -> None:
    created = await daemon.upsert("writer", description="v1")
    assert created["action"] == "created" and created["version"] == 1
    same = await daemon.upsert("writer", description="v1")
    assert same["action"] == "updated" and same["version"] == 1 and same["id"] == created["id"]
    changed = await daemon.upsert("writer", description="v2", maxIterations=3)
    assert changed["action"] == "updated" and changed["version"] == 2

    status, body = await daemon.get("/v1/agents/writer")
    agent = body["data"]
    assert status == 200 and agent["version"] == 2 and agent["description"] == "v2"
    assert agent["maxIterations"] == 3 and agent["slug"] == "writer" and agent["name"] == "writer"
    assert agent["id"] == created["id"] and agent["createdAt"] and agent["updatedAt"]

    status, body = await daemon.get("/v1/agents/writer?version=1")
    assert status == 200 and body["data"]["description"] == "v1"
    status, body = await daemon.get("/v1/agents/writer?version=9")
    assert_error(status, body, 404, "version_not_found")

    status, body = await daemon.get("/v1/agents/writer/versions")
    assert status == 200
    assert [(a["version"], a["description"]) for a in body["data"]] == [(1, "v1"), (2, "v2")]

    status, body = await daemon.post("/v1/agents/writer/rollback", {"version": 1})
    assert status == 200 and body["data"]["version"] == 3 and body["data"]["description"] == "v1"
    status, body = await daemon.post("/v1/agents/writer/rollback", {"version": 7})
    assert "versions" in assert_error(status, body, 404, "version_not_found")["message"]
    status, body = await daemon.post("/v1/agents/writer/rollback", {"version": "one"})
    assert_error(status, body, 400, "validation_error")


async def test_list_and_delete(daemon: Daemon) -> None:
    await daemon.upsert("alpha")
    await daemon.upsert("beta")
    status, body = await daemon.get("/v1/agents")
    assert status == 200 and sorted(a["slug"] for a in body["data"]) == ["alpha", "beta"]
    assert body["meta"]["hasMore"] is False

    status, body = await daemon.request("DELETE", "/v1/agents/alpha")
    assert status == 200 and body["data"]["deleted"] is True
    status, body = await daemon.request("DELETE", "/v1/agents/alpha")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get("/v1/agents/alpha")
    assert "POST /v1/agents" in assert_error(status, body, 404, "not_found")["message"]
    status, body = await daemon.get("/v1/agents/alpha/versions")
    assert_error(status, body, 404, "not_found")


async def test_unknown_tools_are_refused_by_name(daemon: Daemon) -> None:
    status, body = await daemon.post(
        "/v1/agents", {"slug": "x", "model": MODEL, "tools": ["teleport", "fly"]}
    )
    error = assert_error(status, body, 400, "unknown_tools")
    assert "teleport" in error["message"] and "fly" in error["message"]


async def test_unknown_models_are_refused(daemon: Daemon) -> None:
    status, body = await daemon.post("/v1/agents", {"slug": "x", "model": "llama-9000"})
    error = assert_error(status, body, 400, "unknown_model")
    assert "llama-9000" in error["message"]
    bad_custom = {"provider": "custom", "endpoint": "ftp://x", "format": "openai"}
    status, body = await daemon.post("/v1/agents", {"slug": "x", "model": bad_custom})
    assert "endpoint" in assert_error(status, body, 400, "validation_error")["message"]


async def test_custom_models_and_secrets_are_kept_but_not_shown(daemon: Daemon) -> None:
    custom = {
        "provider": "custom",
        "endpoint": "http://127.0.0.1:9/v1",
        "apiKey": "sk-very-secret",
        "format": "openai",
        "model": "local",
    }
    await daemon.upsert("local", model=custom, env={"TOKEN": "t0ps3cret"}, secrets=["TOKEN"])
    status, body = await daemon.get("/v1/agents/local")
    assert status == 200
    assert body["data"]["model"]["apiKey"] == "[REDACTED]"
    assert body["data"]["env"]["TOKEN"] == "[REDACTED]"
    assert "sk-very-secret" not in str(body) and "t0ps3cret" not in str(body)


SECRET = "sk-LEAK-" + "1234"


@pytest.mark.parametrize(
    "fields",
    [
        # the union's `model.str` branch gets the whole object as its input
        {"model": {"provider": "custom", "apiKey": SECRET, "endpoint": "ftp://x", "format": "x"}},
        {"model": {"provider": "custom", "api_key": SECRET, "endpoint": "ftp://x"}},
        {"model": {"provider": "custom", "APIKEY": SECRET, "endpoint": "http://h/"}},
        # `tools.0.str`: a tool object holding a key, nested
        {"tools": [{"name": "t", "invokeUrl": "ftp://x", "auth": {"apiKey": SECRET}}]},
        {"tools": [{"name": "t", "invokeUrl": "ftp://x", "env": {"K": SECRET}}]},
        # (first: a long input is cut at 80 characters when quoted)
        {"model": {"headers": [{"token": SECRET}], "provider": "custom", "endpoint": "ftp://x"}},
    ],
    ids=["apiKey", "api_key", "APIKEY", "tool-nested-apiKey", "tool-env", "token-in-list"],
)
async def test_a_refused_definition_never_quotes_a_secret(
    daemon: Daemon, fields: dict[str, Any]
) -> None:
    status, body = await daemon.post("/v1/agents", {"slug": "leaky", **fields})
    error = assert_error(status, body, 400, "validation_error")
    assert SECRET not in json.dumps(body), error["message"]
    # what is wrong is still named
    assert "model" in error["message"] or "tools" in error["message"]


async def test_a_refused_value_without_secrets_is_still_quoted(daemon: Daemon) -> None:
    status, body = await daemon.post(
        "/v1/agents", {"slug": "x", "model": MODEL, "tools": [{"name": "t", "invokeUrl": 5}]}
    )
    message = assert_error(status, body, 400, "validation_error")["message"]
    assert "(got 5)" in message and '(got {"name": "t"' in message


async def test_invalid_definitions_name_the_field(daemon: Daemon) -> None:
    status, body = await daemon.post("/v1/agents", {"slug": "Bad Slug!", "model": MODEL})
    assert "'slug'" in assert_error(status, body, 400, "validation_error")["message"]
    status, body = await daemon.post("/v1/agents", {"slug": "ok", "model": MODEL, "colour": 1})
    message = assert_error(status, body, 400, "validation_error")["message"]
    assert "unknown field 'colour'" in message and "systemPrompt" in message
    status, body = await daemon.post("/v1/agents", {"model": MODEL})
    assert "missing required field 'slug'" in body["error"]["message"]
    status, body = await daemon.post(
        "/v1/agents", {"slug": "ok", "model": MODEL, "webhookUrl": "nope"}
    )
    assert "webhookUrl" in assert_error(status, body, 400, "validation_error")["message"]
