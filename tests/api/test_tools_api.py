"""`POST /v1/tools/{name}`: core tools on the workspace without a model."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import Daemon
from tests.api.test_errors import assert_error
from tests.api.test_metrics import scrape


async def test_write_then_read_a_file(daemon: Daemon, workspace: Path) -> None:
    status, body = await daemon.post(
        "/v1/tools/write_file", {"path": "notes/todo.txt", "content": "buy milk\n"}
    )
    assert status == 200, body
    result = body["data"]
    assert result["tool"] == "write_file" and result["isError"] is False
    assert result["durationMs"] >= 0 and isinstance(result["data"], dict)
    assert (workspace / "notes" / "todo.txt").read_text() == "buy milk\n"

    status, body = await daemon.post("/v1/tools/read_file", {"path": "notes/todo.txt"})
    assert status == 200 and "buy milk" in body["data"]["output"]

    metrics = await scrape(daemon)
    assert metrics['agentd_tool_calls_total{tool="write_file",source="api"}'] == 1
    assert metrics['agentd_tool_calls_total{tool="read_file",source="api"}'] == 1
    assert metrics['agentd_tool_call_duration_seconds_count{tool="read_file",source="api"}'] == 1


async def test_a_tool_that_fails_answers_200_with_is_error(daemon: Daemon) -> None:
    status, body = await daemon.post("/v1/tools/read_file", {"path": "missing.txt"})
    assert status == 200
    assert body["data"]["isError"] is True and "missing.txt" in body["data"]["output"]
    status, body = await daemon.post("/v1/tools/read_file", {"path": "../../etc/passwd"})
    assert status == 200 and body["data"]["isError"] is True
    assert "root:" not in body["data"]["output"]
    metrics = await scrape(daemon)
    assert metrics['agentd_tool_errors_total{tool="read_file",source="api"}'] == 2


async def test_unknown_tools_and_invalid_arguments_are_refused(daemon: Daemon) -> None:
    status, body = await daemon.post("/v1/tools/teleport", {})
    error = assert_error(status, body, 404, "unknown_tool")
    assert "read_file" in error["message"]
    status, body = await daemon.post("/v1/tools/read_file", {"file": "x"})
    error = assert_error(status, body, 400, "invalid_arguments")
    assert "path" in error["message"]
    status, body = await daemon.post("/v1/tools/read_file", [1])
    assert_error(status, body, 400, "invalid_json")
    async with daemon.session.post(daemon.u("/v1/tools/list_dir"), data=b"") as resp:
        assert resp.status == 200  # no body: the tool's defaults


async def test_the_spec_documents_every_tools_arguments(daemon: Daemon) -> None:
    _, spec = await daemon.get("/openapi.json")
    body = spec["paths"]["/v1/tools/{name}"]["post"]["requestBody"]["content"]
    schemas = body["application/json"]["schema"]["x-tool-schemas"]
    assert {"read_file", "write_file", "apply_patch"} <= set(schemas)
    assert schemas["read_file"]["required"] == ["path"]


async def test_every_tool_the_route_offers_runs_the_aliases_too(daemon: Daemon) -> None:
    _, spec = await daemon.get("/openapi.json")
    body = spec["paths"]["/v1/tools/{name}"]["post"]["requestBody"]["content"]
    assert "bash" in body["application/json"]["schema"]["x-tool-schemas"]
    status, body = await daemon.post("/v1/tools/bash", {"command": "echo from-bash"})
    assert status == 200, body
    assert body["data"]["isError"] is False and "from-bash" in body["data"]["output"]
