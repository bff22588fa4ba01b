"""`GET /metrics` in the Prometheus text format."""

from __future__ import annotations

import re

import anyio

from tests.api.conftest import Daemon, collect_events
from tests.fakes.model_server import Gate, Turn, TurnUsage, text

SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse(text_body: str) -> dict[str, float]:
    """Every sample line must parse; returns {'name{labels}': value}."""
    samples: dict[str, float] = {}
    families: dict[str, str] = {}
    for line in text_body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in families, f"family {name} declared twice"
            families[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name = match.group(1)
        assert any(name == f or name.startswith(f + "_") for f in families), name
        key = line.rsplit(" ", 1)[0]
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(match.group(4))
    return samples


async def scrape(daemon: Daemon) -> dict[str, float]:
    async with daemon.session.get(daemon.u("/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse(await resp.text())


async def test_runs_tokens_events_and_requests_are_counted(daemon: Daemon) -> None:
    await daemon.upsert()
    daemon.model.script(Turn([text("ok")], usage=TurnUsage(input_tokens=30, output_tokens=5)))
    before = await scrape(daemon)
    assert before["agentd_ready"] == 1
    assert before['agentd_runs_finished_total{status="completed"}'] == 0

    await daemon.run()
    after = await scrape(daemon)
    assert after["agentd_runs_started_total"] == 1
    assert after['agentd_runs_finished_total{status="completed"}'] == 1
    assert after['agentd_model_tokens_total{kind="input"}'] == 30
    assert after['agentd_model_tokens_total{kind="output"}'] == 5
    assert after["agentd_model_turns_total"] == 1
    assert after["agentd_events_emitted_total"] >= 3  # run_started, text, …, complete
    assert after["agentd_active_sessions"] == 0
    key = 'agentd_http_requests_total{method="POST",route="/v1/run",status="200"}'
    assert after[key] == 1
    assert after['agentd_http_request_duration_seconds_count{route="/v1/run"}'] == 1
    # a /v1 operation is labelled with its path template, a /v1/ path that is none "unmatched"
    await daemon.get("/v1/runs/run_missing")
    await daemon.get("/v1/nope")
    later = await scrape(daemon)
    assert (
        later['agentd_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="404"}']
        == 1
    )
    assert later['agentd_http_requests_total{method="GET",route="unmatched",status="404"}'] == 1


async def test_active_runs_and_sse_clients_are_gauges(daemon: Daemon) -> None:
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("hold on")], hold=gate, hold_after=1))
    async with daemon.session.post(
        daemon.u("/v1/run"), json={"agent": "helper", "prompt": "x"}
    ) as resp:
        with anyio.fail_after(10):
            await gate.reached.wait()
        during = await scrape(daemon)
        assert during['agentd_runs_active{status="running"}'] == 1
        assert during["agentd_sse_clients"] == 1
        gate.open()
        await collect_events(resp)
    with anyio.fail_after(10):
        while (after := await scrape(daemon))["agentd_sse_clients"] != 0:
            await anyio.sleep(0.01)
    assert after['agentd_runs_active{status="running"}'] == 0
    assert after["agentd_sse_events_sent_total"] >= 3


async def test_tool_calls_made_by_models_are_counted_with_their_time(daemon: Daemon) -> None:
    from tests.fakes.model_server import tool_call

    await daemon.upsert(tools=["list_dir"])
    daemon.model.script(
        Turn([tool_call("list_dir", {"path": "."}, id="call_1")]),
        Turn([text("listed")]),
    )
    result = await daemon.run()
    assert result["status"] == "completed" and result["iterations"] == 2
    metrics = await scrape(daemon)
    assert metrics['agentd_tool_calls_total{tool="list_dir",source="run"}'] == 1
    assert metrics['agentd_tool_errors_total{tool="list_dir",source="run"}'] == 0
    assert metrics['agentd_tool_call_duration_seconds_count{tool="list_dir",source="run"}'] == 1
    assert metrics['agentd_tool_call_duration_seconds_sum{tool="list_dir",source="run"}'] > 0
    assert metrics["agentd_model_turns_total"] == 2
