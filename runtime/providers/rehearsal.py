"""A first model request, rehearsed before a run makes one.

A provider's first streamed request does work that no later request does: the SDK imports
the resource it calls and its streaming helpers (`openai.resources.responses`, ~0.1 s), the
validators of the types it parses the stream into are built (~0.1 s for the Responses API's
event union), the first connection imports the HTTP stack's remaining modules, and the
adapter's own code runs for the first time. All of it ran on the event loop, in the middle
of a run's first model turn, and every stream stood still meanwhile: in a process that had
imported the SDKs and adapters, a provider's first request took 190-390 ms to its last event
from a server on 127.0.0.1 (OpenAI Responses), 76 ms (Anthropic) and 121 ms (Gemini), the
next ones ~7 ms.

`rehearse` makes one request of each API its models speak through the path a run takes
(`registry.create_provider`, then the provider's `stream`, with a function tool declared),
against a server of its own on 127.0.0.1 that answers one short stream in the API's wire
format, in an event loop of its own in the calling thread: the daemon's warm-up calls it in
a worker thread (`runtime.daemon.rehearse_first_requests`). What the request leaves behind
(modules, validators) is the process's, so a run's first request then imports and builds
nothing on the event loop (tests/providers/test_rehearsal.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

from aiohttp import web

from runtime.messages import Message
from runtime.providers.base import AssistantTurn, ModelSettings
from runtime.providers.registry import adapter_kind, create_provider
from runtime.providers.retry import RetryPolicy

Api = Literal["anthropic", "chat", "responses"]

# The API each adapter speaks (`registry.adapter_kind`).
_APIS: dict[str, Api] = {
    "anthropic": "anthropic",
    "custom-anthropic": "anthropic",
    "openai-responses": "responses",
    "openai-chat": "chat",
    "gemini": "chat",
    "custom-openai": "chat",
}
# A model of each API, for rehearsing the APIs the daemon's default model does not speak.
MODEL_OF_API: dict[Api, str] = {
    "anthropic": "claude-sonnet-4-6",
    "responses": "gpt-5",
    "chat": "openai-chat:gpt-4.1",
}
REPLY = "ok"
# Declared in the request, as a run's tools are: the SDKs transform tool parameters too.
TOOL = {
    "name": "rehearsal",
    "description": "A tool a rehearsal declares and never calls.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}
TIMEOUT = 30.0  # seconds per request; a loopback answer takes milliseconds


def api_of(model: str | Mapping[str, Any] | Any) -> Api | None:
    """The API `model`'s provider speaks; None for a replayed cassette, None, or a model that
    routes nowhere (nothing to rehearse)."""
    return _APIS.get(adapter_kind(model) or "")


class Rehearsal(NamedTuple):
    apis: list[Api]  # the APIs rehearsed now
    failed: list[str]  # "model: reason" for each that failed


_lock = threading.Lock()
_rehearsed: set[Api] = set()  # the APIs this process has rehearsed


def rehearse(models: Iterable[str]) -> Rehearsal:
    """Blocking (call it from a worker thread, which has no event loop running): one streamed
    request of each model's provider against a canned server on 127.0.0.1, for each API this
    process has not rehearsed yet (the first model of an API stands for the others: what a
    request leaves behind is the API's and its SDK's). Model ids only: a custom endpoint is
    an object naming its own server. A failure is returned as "model: reason": a failed
    rehearsal costs the first run's request nothing but what it would have saved it, so the
    caller logs it and goes on."""
    with _lock:
        wanted: dict[Api, str] = {}
        for model in models:
            api = api_of(model)
            if api is not None and api not in _rehearsed:
                wanted.setdefault(api, model)
        if not wanted:
            return Rehearsal([], [])
        proxy = loopback_proxy()
        if proxy is not None:
            # the SDK would send the request to the proxy, not to this machine's server
            reason = f"not rehearsed: requests to 127.0.0.1 would go through the proxy {proxy}"
            return Rehearsal([], [f"{model}: {reason}" for model in wanted.values()])
        try:
            errors = asyncio.run(_rehearse_all(wanted))
        except Exception as exc:  # the server could not start, say: reported like the rest
            errors = {api: repr(exc) for api in wanted}
        _rehearsed.update(api for api in wanted if api not in errors)
        return Rehearsal(
            [api for api in wanted if api not in errors],
            [f"{wanted[api]}: {error}" for api, error in errors.items()],
        )


def loopback_proxy() -> str | None:
    """The proxy the SDKs' HTTP client would send a request for 127.0.0.1 to, as it reads
    the environment (`HTTP_PROXY` / `ALL_PROXY`, with `NO_PROXY` exempting hosts; the system's
    settings on macOS); None when it would connect directly. A rehearsal must not leave the
    machine: where a proxy is in the way there is none (set `NO_PROXY=127.0.0.1,localhost`)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get("http") or proxies.get("all")
    if not proxy:
        return None
    exempt = {host.strip() for host in proxies.get("no", "").split(",")}
    return None if exempt & {"*", "127.0.0.1"} else proxy


async def _rehearse_all(models: dict[Api, str]) -> dict[Api, str]:
    """Each API's model rehearsed; what failed, by API."""
    app = web.Application()
    for path, render in CANNED_STREAMS.items():
        app.router.add_post(path, _streaming(render))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    errors: dict[Api, str] = {}
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        env = {
            "ANTHROPIC_API_KEY": "rehearsal",
            "ANTHROPIC_BASE_URL": url,
            "OPENAI_API_KEY": "rehearsal",
            "OPENAI_BASE_URL": f"{url}/v1",
            "GEMINI_API_KEY": "rehearsal",
            "GEMINI_BASE_URL": f"{url}/v1/",
        }
        for api, model in models.items():
            try:
                await _rehearse_one(model, env)
            except Exception as exc:  # reported to the caller, which logs it
                errors[api] = repr(exc)
    finally:
        await runner.cleanup()
    return errors


async def _rehearse_one(model: str, env: Mapping[str, str]) -> None:
    provider, model_id = create_provider(
        model, env=env, retry=RetryPolicy(max_attempts=1), timeout=TIMEOUT
    )
    try:
        turn = None
        settings = ModelSettings(model=model_id, max_tokens=16)
        async for item in provider.stream(None, [Message.user("Say ok.")], [TOOL], settings):
            if isinstance(item, AssistantTurn):
                turn = item
        if turn is None or turn.text != REPLY:
            raise RuntimeError(f"the canned stream read as {turn!r}, not the reply {REPLY!r}")
    finally:
        await provider.aclose()


Render = Callable[[dict[str, Any]], Iterator[bytes]]


def _streaming(render: Render) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for frame in render(body):
            await response.write(frame)
        await response.write_eof()
        return response

    return handle


def _frame(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# The canned streams: the reply as one text block, in each API's events (their order and
# fields as the APIs send them, and as tests/fakes/model_server.py renders them at length).


def _anthropic(body: dict[str, Any]) -> Iterator[bytes]:
    message = {
        "id": "msg_rehearsal",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", ""),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    yield _frame({"type": "message_start", "message": message}, "message_start")
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    yield _frame(block, "content_block_start")
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": REPLY},
    }
    yield _frame(delta, "content_block_delta")
    yield _frame({"type": "content_block_stop", "index": 0}, "content_block_stop")
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 1},
    }
    yield _frame(end, "message_delta")
    yield _frame({"type": "message_stop"}, "message_stop")


def _chat(body: dict[str, Any]) -> Iterator[bytes]:
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": "chatcmpl-rehearsal",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": choices,
        }
        if with_usage:
            data["usage"] = usage
        return _frame(data)

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    yield chunk(choice({"role": "assistant", "content": ""}))
    yield chunk(choice({"content": REPLY}))
    yield chunk(choice({}, "stop"))
    if with_usage:
        yield chunk([], {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
    yield _frame("[DONE]")


def _responses(body: dict[str, Any]) -> Iterator[bytes]:
    number = iter(range(1_000))
    response: dict[str, Any] = {
        "id": "resp_rehearsal",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "model": body.get("model", ""),
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "usage": None,
    }

    def event(kind: str, **fields: Any) -> bytes:
        return _frame({"type": kind, "sequence_number": next(number), **fields}, kind)

    yield event("response.created", response=response)
    yield event("response.in_progress", response=response)
    item = {"id": "msg_rehearsal", "type": "message", "role": "assistant"}
    at = {"output_index": 0}
    yield event(
        "response.output_item.added", item={**item, "status": "in_progress", "content": []}, **at
    )
    where = {"item_id": "msg_rehearsal", **at, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "text": ""}
    yield event("response.content_part.added", part=part, **where)
    yield event("response.output_text.delta", delta=REPLY, logprobs=[], **where)
    yield event("response.output_text.done", text=REPLY, logprobs=[], **where)
    part = {**part, "text": REPLY}
    yield event("response.content_part.done", part=part, **where)
    done = {**item, "status": "completed", "content": [part]}
    yield event("response.output_item.done", item=done, **at)
    usage = {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 2,
    }
    final = {**response, "status": "completed", "output": [done], "usage": usage}
    yield event("response.completed", response=final)


# The canned server's routes: the request's path (under the base URLs `rehearse` gives the
# providers), and the stream it answers.
CANNED_STREAMS: dict[str, Render] = {
    "/v1/messages": _anthropic,
    "/v1/chat/completions": _chat,
    "/v1/responses": _responses,
}
