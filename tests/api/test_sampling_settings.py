"""`temperature` through every route, at agent level and in a run's `config`, through the real
SDKs against the fake model server: sent where the route takes it, refused at upsert where the
route never does, and left out (said once in `run_started`) when only the run sets it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.api.conftest import Daemon
from tests.api.test_errors import assert_error

TAKES_TEMPERATURE = ["gpt-4.1", "openai-chat:gpt-4o", "gemini-2.5-pro", "custom-openai"]
NEVER_TAKES_IT = ["claude-sonnet-4-6", "gpt-5", "custom-anthropic"]


def model_for(name: str, daemon: Daemon) -> Any:
    if name.startswith("custom-"):
        fmt = name.removeprefix("custom-")
        endpoint = daemon.model.url + ("/v1" if fmt == "openai" else "")
        return {"provider": "custom", "endpoint": endpoint, "format": fmt, "apiKey": "test-key"}
    return name


async def run_events(daemon: Daemon, run_id: str) -> list[dict[str, Any]]:
    status, body = await daemon.get(f"/v1/runs/{run_id}")
    assert status == 200, body
    response = await daemon.http.get(daemon.u(f"/v1/runs/{run_id}/events"))
    events = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
    return events


@pytest.mark.parametrize("name", TAKES_TEMPERATURE)
async def test_routes_that_take_temperature_send_the_agents_and_the_runs(
    daemon: Daemon, name: str
) -> None:
    await daemon.upsert("sampler", model=model_for(name, daemon), temperature=0.3)
    first = await daemon.run("sampler")
    second = await daemon.run("sampler", config={"temperature": 0.7})
    assert first["status"] == second["status"] == "completed", (first, second)
    bodies = [request.body for request in daemon.model.requests]
    assert [body.get("temperature") for body in bodies] == [0.3, 0.7]
    events = await run_events(daemon, second["runId"])
    assert "warnings" not in events[0]


@pytest.mark.parametrize("name", NEVER_TAKES_IT)
async def test_routes_that_never_take_temperature_refuse_it_at_upsert(
    daemon: Daemon, name: str
) -> None:
    status, body = await daemon.post(
        "/v1/agents",
        {"slug": "sampler", "model": model_for(name, daemon), "tools": [], "temperature": 0.3},
    )
    error = assert_error(status, body, 400, "unsupported_setting")
    assert error["message"].startswith("temperature is not sent: ")
    status, _ = await daemon.get("/v1/agents/sampler")
    assert status == 404  # nothing was stored


@pytest.mark.parametrize("name", NEVER_TAKES_IT)
async def test_a_runs_temperature_on_such_a_route_is_left_out_and_said_once(
    daemon: Daemon, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    await daemon.upsert("sampler", model=model_for(name, daemon))
    with caplog.at_level(logging.WARNING, logger="agentd.runs"):
        run = await daemon.run("sampler", config={"temperature": 0.5})
    assert run["status"] == "completed", run
    assert all("temperature" not in request.body for request in daemon.model.requests)
    events = await run_events(daemon, run["runId"])
    started = events[0]
    assert started["type"] == "run_started"
    assert len(started["warnings"]) == 1
    assert started["warnings"][0].startswith("temperature is not sent: ")
    logged = [r.getMessage() for r in caplog.records if "temperature is not sent" in r.getMessage()]
    assert len(logged) == 1 and run["runId"] in logged[0]
