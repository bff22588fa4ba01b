"""Model faults on every route, through a real daemon (API, run manager, SQLite), the official
SDKs and the fake model server speaking each API's own wire format.

Routes: Anthropic Messages, OpenAI Responses, OpenAI Chat Completions, Gemini's
OpenAI-compatible endpoint, and custom endpoints of both formats. Faults, in the turn that
holds a tool call: 429, overloaded (Anthropic 529, OpenAI and Gemini 503), 500, the stream
cut after its first text delta, a malformed frame there, the API's in-stream error event
there — each retried, and the run completes with the tool run once; and the non-retryable:
400, 401, an in-stream error of a request problem, and overload that outlasts every attempt —
each ends the run `failed` with code `model_error` and the API's message. Never a crash or a
hung run (every wait is bounded), and the run's events are whole: ids gapless, the tool's
result and the final answer there, one `complete` last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.conftest import Daemon, DaemonFactory, collect_events
from tests.fakes.model_server import Api, FakeModelServer, HttpError, Turn, text, tool_call

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Route:
    name: str
    api: Api
    model: Callable[[FakeModelServer], str | dict[str, Any]]
    label: str  # how the adapter names the API in its errors

    @property
    def overloaded(self) -> int:
        return 529 if self.api == "anthropic" else 503

    @property
    def after_first_text(self) -> int:
        """SSE frames before the first text delta's end, in this API's event sequence."""
        return {"anthropic": 4, "chat": 2, "responses": 5}[self.api]


ROUTES = [
    Route("anthropic", "anthropic", lambda s: "claude-sonnet-4-6", "Anthropic"),
    Route("openai-responses", "responses", lambda s: "gpt-5", "OpenAI"),
    Route("openai-chat", "chat", lambda s: "openai-chat:gpt-4.1", "OpenAI"),
    Route("gemini", "chat", lambda s: "gemini-2.5-flash", "Gemini"),
    Route(
        "custom-anthropic",
        "anthropic",
        lambda s: {"provider": "custom", "endpoint": s.url, "format": "anthropic", "apiKey": "k1"},
        "custom endpoint",
    ),
    Route(
        "custom-openai",
        "chat",
        lambda s: {"provider": "custom", "endpoint": s.url + "/v1", "format": "openai"},
        "custom endpoint",
    ),
]

ANSWER = "The file is written."
CALL = {"cmd": "echo ran >> ran.log", "login": False}


def tool_turn(**fault: Any) -> Turn:
    return Turn([text("Let me ", "write it."), tool_call("exec_command", CALL)], **fault)


def retryable(route: Route, fault: str) -> HttpError | Turn:
    cut = route.after_first_text
    return {
        "429": lambda: HttpError(429, message="slow down", retry_after_ms=1),
        "overloaded": lambda: HttpError(route.overloaded, message="overloaded, try later"),
        "500": lambda: HttpError(500, message="internal error"),
        "cut_stream": lambda: tool_turn(cut_after=cut),
        "malformed_frame": lambda: tool_turn(malformed_after=cut),
        "stream_error": lambda: tool_turn(error_after=cut),
    }[fault]()


RETRYABLE = ["429", "overloaded", "500", "cut_stream", "malformed_frame", "stream_error"]
FINAL = ["400", "401", "stream_request_error", "overloaded_every_attempt"]


@pytest.fixture
async def faulty(make_daemon: DaemonFactory) -> Daemon:
    return await make_daemon()


async def run_events(daemon: Daemon, route: Route) -> tuple[dict[str, Any], list[Any]]:
    # The agent's env overlays the daemon's for its model calls: quick retries, fewer of them.
    retry_env = {"AGENTD_MODEL_RETRY_BASE_MS": "1", "AGENTD_MODEL_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
    await daemon.upsert(model=route.model(daemon.model), tools=["exec_command"], env=retry_env)
    run = await daemon.run(prompt="write the file")
    async with daemon.session.get(daemon.u(f"/v1/runs/{run['runId']}/events")) as resp:
        events = await collect_events(resp)
    assert [e.id for e in events] == list(range(1, len(events) + 1)), "event ids have gaps"
    assert events[-1].event == "complete" and events[-1].data["status"] == run["status"]
    assert sum(e.event == "complete" for e in events) == 1
    return run, events


@pytest.mark.parametrize("fault", RETRYABLE)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
async def test_a_retryable_fault_is_retried_and_the_run_completes(
    faulty: Daemon, route: Route, fault: str
) -> None:
    faulty.model.script(retryable(route, fault), tool_turn(), Turn([text(ANSWER)]))
    run, events = await run_events(faulty, route)
    assert run["status"] == "completed", run
    assert len(faulty.model.requests) == 3  # the faulty attempt, its retry, the answer
    assert all(r.api == route.api for r in faulty.model.requests)
    assert (faulty.workspace / "ran.log").read_text() == "ran\n"  # the tool ran once
    results = [e.data for e in events if e.event == "tool_result"]
    assert len(results) == 1 and not results[0]["isError"], results
    assert events[-1].data["output"] == ANSWER
    errors = [e.data for e in events if e.event == "error"]
    # A retry after deltas were shown says so (consumers drop the partial text); nothing else.
    assert all(e["code"] == "stream_restarted" for e in errors), errors
    assert len(errors) == (1 if fault in ("cut_stream", "malformed_frame", "stream_error") else 0)
    texts = "".join(e.data["content"] for e in events if e.event == "text")
    assert texts.endswith("Let me write it." + ANSWER), texts


def final_fault(route: Route, fault: str) -> list[HttpError | Turn]:
    if fault == "400":
        return [HttpError(400, message="messages: the request is malformed")]
    if fault == "401":
        return [HttpError(401, message="invalid api key")]
    if fault == "stream_request_error":
        kind = "invalid_prompt" if route.api == "responses" else "invalid_request_error"
        return [tool_turn(error_after=route.after_first_text, stream_error=kind)]
    return [HttpError(route.overloaded, message="overloaded, try later")] * MAX_ATTEMPTS


@pytest.mark.parametrize("fault", FINAL)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
async def test_a_final_fault_fails_the_run_with_the_apis_reason(
    faulty: Daemon, route: Route, fault: str
) -> None:
    script = final_fault(route, fault)
    faulty.model.script(*script, Turn([text("never asked for")]))
    run, events = await run_events(faulty, route)
    assert run["status"] == "failed", run
    assert len(faulty.model.requests) == len(script)  # no retry of what waiting cannot fix
    assert run["error"]["code"] == "model_error", run["error"]
    message = run["error"]["message"]
    assert route.label in message, message
    expected = {
        "400": "HTTP 400",
        "401": "HTTP 401",
        "stream_request_error": "fake in-stream",
        "overloaded_every_attempt": f"gave up after {MAX_ATTEMPTS} attempts",
    }[fault]
    assert expected in message, message
    if fault in ("400", "401"):  # the API's own words, not a dump of its error body
        assert message.endswith(script[0].message), message  # type: ignore[union-attr]
    errors = [e.data for e in events if e.event == "error"]
    assert {k: errors[-1][k] for k in ("code", "message")} == run["error"], errors
    assert not (faulty.workspace / "ran.log").exists()  # no half-streamed call was run
