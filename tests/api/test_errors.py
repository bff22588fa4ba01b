"""Every failure answers with the error envelope and a request id that is also logged."""

from __future__ import annotations

import codecs
import json
import logging
from typing import Any

import pytest

from tests.api.conftest import Daemon, DaemonFactory


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, error
    assert error["message"] and error["requestId"].startswith("req_")
    return error


async def test_aiohttp_own_404_and_405_use_the_envelope(daemon: Daemon) -> None:
    async with daemon.session.get(daemon.u("/nope")) as resp:
        body = await resp.json()
        error = assert_error(resp.status, body, 404, "not_found")
        assert resp.headers["X-Request-ID"] == error["requestId"]
        assert "/openapi.json" in error["message"]
    # /v1/ paths are resolved among the /v1 operations (runtime.api.v1.dispatch), alike
    async with daemon.session.get(daemon.u("/v1/nope")) as resp:
        error = assert_error(resp.status, await resp.json(), 404, "not_found")
        assert "GET /v1/nope" in error["message"] and "/openapi.json" in error["message"]
    async with daemon.session.put(daemon.u("/v1/agents")) as resp:
        error = assert_error(resp.status, await resp.json(), 405, "method_not_allowed")
        assert "GET" in error["message"] and "POST" in error["message"]
        assert "POST" in resp.headers["Allow"]


async def test_a_client_request_id_is_echoed_and_logged(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    headers = {"X-Request-ID": "trace-abc.123"}
    async with daemon.session.get(daemon.u("/v1/runs/run_missing"), headers=headers) as resp:
        body = await resp.json()
    assert resp.headers["X-Request-ID"] == "trace-abc.123"
    assert body["error"]["requestId"] == "trace-abc.123"
    # A malformed id is replaced, never echoed.
    async with daemon.session.get(daemon.u("/healthz"), headers={"X-Request-ID": "a b"}) as resp:
        assert resp.headers["X-Request-ID"].startswith("req_")


async def test_an_internal_error_is_a_500_envelope_and_logged_with_the_request_id(
    daemon: Daemon, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(daemon.store, "list_agents", broken)
    with caplog.at_level(logging.ERROR, logger="agentd.api"):
        status, body = await daemon.get("/v1/agents")
    error = assert_error(status, body, 500, "internal_error")
    assert "disk on fire" not in error["message"] and error["requestId"] in error["message"]
    records = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert records and records[0].request_id == error["requestId"]  # type: ignore[attr-defined]
    assert records[0].exc_info is not None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "body is empty"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"text"', "must be a JSON object, got a string"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"agent": 1' + b"0" * 5000 + b"}", "4300 digits"),
    ],
)
async def test_malformed_bodies_are_400s_saying_what_is_wrong(
    daemon: Daemon, body: bytes, fragment: str
) -> None:
    async with daemon.session.post(
        daemon.u("/v1/run"), data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        error = assert_error(resp.status, await resp.json(), 400, "invalid_json")
    assert fragment in error["message"]


async def test_a_body_whose_content_encoding_does_not_decode_is_a_400(daemon: Daemon) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with daemon.session.post(daemon.u("/v1/agents"), data=b"abcde", headers=headers) as resp:
        error = assert_error(resp.status, await resp.json(), 400, "invalid_json")
    assert "gzip" in error["message"]


def nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("path", ["/v1/run", "/v1/tools/read_file", "/v1/agents"])
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            b'{"agent": "a", "prompt": "\\ud800"}',
            "lone UTF-16 surrogate ('\\ud800') in body.prompt",
        ),
        (
            b'{"agent": "a", "prompt": "x", "metadata": {"k": "\\udfff"}}',
            "lone UTF-16 surrogate ('\\udfff') in body.metadata.k",
        ),
        (b'{"path": "x", "\\ud800": 1}', "(a key)"),
        (b'{"agent": "a", "prompt": "x", "metadata": ' + nested_object(900) + b"}", "64 levels"),
        (b"[" * 5000 + b"]" * 5000, "64 levels"),
        (b"[" * 100_000, "64 levels"),
        (nested_object(65), "64 levels"),
    ],
    ids=[
        "surrogate",
        "surrogate-metadata",
        "surrogate-key",
        "900-deep",
        "5000-deep",
        "100k-open",
        "65-deep",
    ],
)
async def test_undecodable_or_too_deep_bodies_are_400s(
    daemon: Daemon, path: str, body: bytes, fragment: str
) -> None:
    async with daemon.session.post(
        daemon.u(path), data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        error = assert_error(resp.status, await resp.json(), 400, "invalid_json")
    assert fragment in error["message"], error["message"]


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        ("NaN", "NaN is not JSON"),
        ("Infinity", "Infinity is not JSON"),
        ("-Infinity", "-Infinity is not JSON"),
        ("1e400", "1e400 is past a double's range"),
        ("-1E+999", "-1E+999 is past a double's range"),
    ],
)
async def test_numbers_that_are_not_finite_are_400s_naming_where(
    daemon: Daemon, literal: str, problem: str
) -> None:
    """Python's decoder takes NaN and Infinity, and 1e400 decodes to infinity: a free-form
    field would be stored as null, an inputSchema's bound would make the tool unusable. They
    are refused wherever they are, naming where, as a field's value out of range is."""
    await daemon.upsert("there")
    schema = '{"type": "object", "properties": {"a": {"type": "number", "maximum": @}}}'
    tool = '{"name": "ct", "invokeUrl": "http://127.0.0.1:9/t", "inputSchema": ' + schema + "}"
    requests = [
        ("POST", "/v1/agents", '{"slug": "n", "model": "m", "resources": [{"x": @}]}'),
        ("POST", "/v1/agents", '{"slug": "n", "model": "m", "tools": [' + tool + "]}"),
        ("PATCH", "/v1/agents/there", '{"resources": [{"x": @}]}'),
        ("POST", "/v1/run", '{"agent": "there", "prompt": "x", "metadata": {"x": [1, @]}}'),
        ("POST", "/v1/tools/read_file", '{"path": "x", "offset": @}'),
    ]
    fields = [
        "resources.0.x",
        "tools.0.inputSchema.properties.a.maximum",
        "resources.0.x",
        "metadata.x.1",
        "offset",
    ]
    for (method, path, template), field in zip(requests, fields, strict=True):
        body = template.replace("@", literal).encode()
        async with daemon.session.request(
            method, daemon.u(path), data=body, headers=JSON_BODY
        ) as resp:
            error = assert_error(resp.status, await resp.json(), 400, "validation_error")
        assert f"{field!r}: {problem}" in error["message"], (path, error["message"])
        assert error["details"] == [
            {"field": field, "type": "finite_number", "message": error["details"][0]["message"]}
        ]
    status, body = await daemon.get("/v1/agents/n")
    assert_error(status, body, 404, "not_found")
    status, body = await daemon.get("/v1/agents/there")
    assert body["data"]["resources"] == []
    # the largest finite numbers are numbers
    body = b'{"agent": "there", "prompt": "x", "stream": false, "metadata": {"x": 1.7e308}}'
    async with daemon.session.post(daemon.u("/v1/run"), data=body, headers=JSON_BODY) as resp:
        assert resp.status == 200, await resp.text()


async def test_bodies_within_the_depth_limit_and_surrogate_pairs_are_accepted(
    daemon: Daemon,
) -> None:
    await daemon.upsert()
    metadata = json.loads(nested_object(60))
    body = {"agent": "helper", "prompt": "smile \U0001f600", "metadata": metadata, "stream": False}
    raw = json.dumps(body)
    assert "\\ud83d\\ude00" in raw  # json.dumps escapes it as a surrogate pair
    async with daemon.session.post(
        daemon.u("/v1/run"),
        data=raw.encode(),
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["data"]["status"] == "completed"


async def test_a_body_may_start_with_a_utf8_byte_order_mark(daemon: Daemon) -> None:
    """Some clients (PowerShell, Windows editors) write one; it is dropped, once."""
    await daemon.upsert()
    body = json.dumps({"agent": "helper", "prompt": "hi", "stream": False}).encode()
    async with daemon.session.post(
        daemon.u("/v1/run"), data=codecs.BOM_UTF8 + body, headers=JSON_BODY
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["data"]["status"] == "completed"
    async with daemon.session.post(
        daemon.u("/v1/run"), data=codecs.BOM_UTF8 * 2 + body, headers=JSON_BODY
    ) as resp:
        error = assert_error(resp.status, await resp.json(), 400, "invalid_json")
    assert "not valid JSON" in error["message"]


JSON_BODY = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"agent": "a"}, ["give `prompt`", "`messages`"]),
        ({"prompt": "hi"}, ["missing required field 'agent'"]),
        ({"agent": "a", "prompt": "hi", "strem": False}, ["unknown field 'strem'", "stream"]),
        ({"agent": "a", "prompt": 5}, ["'prompt'", "valid string", "got 5"]),
        ({"agent": "a", "prompt": "x", "stream": "maybe"}, ["'stream'", "boolean"]),
        ({"agent": "a", "prompt": "x", "config": {"maxTurns": 0}}, ["config.maxTurns"]),
        ({"agent": "a", "prompt": "x", "config": {"turns": 3}}, ["unknown field 'config.turns'"]),
        (
            {"agent": "a", "messages": [{"role": "user", "content": "x"}], "threadId": "t"},
            ["not both"],
        ),
    ],
)
async def test_invalid_run_requests_name_the_field(
    daemon: Daemon, body: dict[str, Any], fragments: list[str]
) -> None:
    status, payload = await daemon.post("/v1/run", body)
    error = assert_error(status, payload, 400, "validation_error")
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    assert error["details"]


async def test_unknown_agent_run_and_thread_are_404s(daemon: Daemon) -> None:
    status, body = await daemon.post("/v1/run", {"agent": "ghost", "prompt": "hi"})
    assert "ghost" in assert_error(status, body, 404, "not_found")["message"]
    for path in ("/v1/runs/run_nope", "/v1/runs/run_nope/events", "/v1/run/threads/thr_nope"):
        status, body = await daemon.get(path)
        assert_error(status, body, 404, "not_found")
    for control in ("pause", "resume", "cancel"):
        status, body = await daemon.post(f"/v1/runs/run_nope/{control}")
        assert_error(status, body, 404, "not_found")
    # (A threadId the daemon has not seen is not a 404: it starts that thread, see
    # test_documented_runs.py.)


async def test_bodies_over_the_cap_are_413s(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(max_body_bytes=2048)
    big = {"agent": "a", "prompt": "x" * 5000}
    status, body = await daemon.post("/v1/run", big)
    error = assert_error(status, body, 413, "payload_too_large")
    assert "2048" in error["message"]


async def test_bad_query_parameters_are_400s(daemon: Daemon) -> None:
    status, body = await daemon.get("/v1/runs?limit=zero")
    assert "'limit'" in assert_error(status, body, 400, "validation_error")["message"]
    status, body = await daemon.get("/v1/runs?status=sleeping")
    assert_error(status, body, 400, "validation_error")
    status, body = await daemon.get("/v1/runs?cursor=garbage")
    assert_error(status, body, 400, "invalid_cursor")


def test_the_daemon_log_format_carries_the_request_id_of_the_request_being_handled() -> None:
    import io

    from runtime.api.middleware import request_id_var
    from runtime.daemon import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info")
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        token = request_id_var.set("req_feedface")
        try:
            logging.getLogger("agentd.runs").warning("something happened")
        finally:
            request_id_var.reset(token)
        logging.getLogger("agentd.runs").warning("outside a request")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert "[req_feedface] something happened" in lines[0]
    assert "[-] outside a request" in lines[1]
