"""A wire-faithful fake of three model APIs, for tests: an aiohttp server on 127.0.0.1.

It serves, with each API's own SSE framing and event sequence (taken from the `anthropic` and
`openai` SDK sources):

- `POST …/v1/messages`          Anthropic Messages (`event:` + `data:` frames, `ping`s);
- `POST …/chat/completions`     OpenAI Chat Completions (data-only frames, `data: [DONE]`),
                                also under `/v1beta/openai/` for Gemini's compatible endpoint;
- `POST …/responses`            OpenAI Responses (`event:` + `data:` frames, sequence numbers).

Tests script provider-neutral `Turn`s; the server renders the next one in whichever format the
request asked for, so one script drives every adapter::

    async with FakeModelServer() as server:
        server.script(
            Turn([thinking("Look first.", signature="sig-1"),
                  tool_call("exec_command", {"cmd": "ls"}, id="call_1", chunks=4)]),
            Turn([text("All ", "done.")], usage=TurnUsage(input_tokens=50, output_tokens=3)),
        )
        provider, model_id = create_provider("claude-sonnet-4-6", env=server.env())
        ...
        assert server.requests[1].body["messages"][1]["content"][0]["signature"] == "sig-1"

Every request takes the next item of the queue (`script` / `enqueue` append to it): a `Turn`
(streamed; it may carry a stream fault: `cut_after`, `malformed_after`, `error_after`,
`first_byte_delay`, or a `hold` gate) or an `HttpError` (an error response in the API's own
error format, e.g. `HttpError(429, retry_after_ms=1)`, `HttpError(529)`). When the queue is
empty the server streams `default_turn` if set, else answers 400 naming the request.

`server.requests` records every request (path, lower-cased headers, JSON body, which API).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiohttp import web

Api = Literal["anthropic", "chat", "responses"]
NeutralStop = Literal[
    "end_turn", "tool_use", "max_tokens", "refusal", "stop_sequence", "pause_turn"
]


# --- the neutral script ------------------------------------------------------------------


@dataclass
class Text:
    chunks: list[str]

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass
class Thinking:
    """Reasoning. Anthropic: a `thinking` block with `signature` (or a `redacted_thinking`
    block carrying `redacted_data`); Responses: a reasoning item whose summary is the text and
    whose `encrypted_content` is the signature; Chat: `delta.reasoning_content`."""

    chunks: list[str]
    signature: str = "sig-fake"
    redacted_data: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass
class ToolCall:
    """A tool call. `arguments` may be a string to send arguments that are not valid JSON.
    The argument text is split into `chunks` deltas. `thought_signature` adds Gemini's
    `extra_content.google.thought_signature` to the Chat rendering."""

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None
    chunks: int = 3
    thought_signature: str | None = None

    @property
    def argument_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)

    def argument_chunks(self) -> list[str]:
        """The argument text split into `chunks` nearly equal deltas (fewer if it is short)."""
        raw = self.argument_text
        n = max(1, min(self.chunks, len(raw)))
        cuts = [len(raw) * i // n for i in range(n + 1)]
        return [raw[cuts[i] : cuts[i + 1]] for i in range(n)]


@dataclass
class WebSearch:
    """The provider's hosted web search, as its API streams it. Anthropic: a `server_tool_use`
    block (input streamed as JSON deltas) and the `web_search_tool_result` block answering it
    (the results, or `{type: web_search_tool_result_error, error_code}` when `error` is set);
    Responses: a `web_search_call` item through its in_progress/searching/completed events,
    with `action.sources` when the request includes them. Chat has no form for it."""

    query: str
    results: list[tuple[str, str, str | None]] = field(default_factory=list)  # title, url, age
    error: str | None = None
    id: str | None = None


Block = Text | Thinking | ToolCall | WebSearch


def text(*chunks: str) -> Text:
    """A text block streamed as the given chunks (one delta each)."""
    return Text(list(chunks))


def thinking(*chunks: str, signature: str = "sig-fake") -> Thinking:
    return Thinking(list(chunks), signature=signature)


def redacted_thinking(data: str) -> Thinking:
    return Thinking([], signature="", redacted_data=data)


def web_search(
    query: str,
    *results: tuple[str, str, str | None],
    error: str | None = None,
    id: str | None = None,
) -> WebSearch:
    return WebSearch(query, list(results), error=error, id=id)


def tool_call(
    name: str,
    arguments: dict[str, Any] | str,
    *,
    id: str | None = None,
    chunks: int = 3,
    thought_signature: str | None = None,
) -> ToolCall:
    return ToolCall(name, arguments, id=id, chunks=chunks, thought_signature=thought_signature)


@dataclass
class TurnUsage:
    """Neutral usage: `input_tokens` counts every input token (cached ones included), as the
    adapters normalise it. Each API gets it in its own shape (Anthropic's `input_tokens`
    excludes cache reads and writes; OpenAI's `prompt_tokens` includes `cached_tokens`)."""

    input_tokens: int = 12
    output_tokens: int = 7
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0


class Gate:
    """Stops a stream at a point until the test opens it: `await gate.reached.wait()`, then
    `gate.open()`."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._opened = asyncio.Event()

    def open(self) -> None:
        self._opened.set()

    async def _pass(self) -> None:
        self.reached.set()
        await self._opened.wait()


@dataclass
class Turn:
    """One scripted model response.

    `stop_reason` defaults to `tool_use` when there are tool calls, else `end_turn`;
    `wire_stop` overrides the raw value sent (e.g. `"stop"` for Chat with tool calls, as
    Gemini does). Stream faults count SSE frames: `cut_after=n` drops the connection after n
    frames; `malformed_after=n` sends a frame of broken JSON after n frames; `error_after=n`
    sends the API's in-stream error event (Anthropic `overloaded_error`, OpenAI
    `server_error`, or the error type / code `stream_error` names, e.g.
    `invalid_request_error`) after n frames; `first_byte_delay` waits before the response headers;
    `hold` stops after `hold_after` frames until the gate is opened.
    """

    blocks: Sequence[Block] = ()
    stop_reason: NeutralStop | None = None
    wire_stop: str | None = None
    usage: TurnUsage = field(default_factory=TurnUsage)
    model: str | None = None
    cut_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    stream_error: str | None = None
    first_byte_delay: float = 0.0
    hold: Gate | None = None
    hold_after: int = 0

    @property
    def neutral_stop(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolCall) for b in self.blocks) else "end_turn"


@dataclass
class HttpError:
    """An error response in the API's own format. `error_type` defaults per status
    (Anthropic: `rate_limit_error`, `overloaded_error`, `api_error`, …; Gemini's endpoint:
    Google's `RESOURCE_EXHAUSTED`, `UNAVAILABLE`, …, in the array Gemini wraps errors in)."""

    status: int
    message: str | None = None
    error_type: str | None = None
    retry_after_ms: int | None = None
    retry_after: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


ScriptItem = Turn | HttpError
REQUEST_CHARS_PER_TOKEN = 4


@dataclass
class RecordedRequest:
    method: str
    path: str
    api: Api
    headers: dict[str, str]
    body: Any
    size: int = 0  # bytes of the request body

    @property
    def tokens(self) -> int:
        """The request's size in tokens, as the fake counts them."""
        return self.size // REQUEST_CHARS_PER_TOKEN

    @property
    def api_key(self) -> str | None:
        """The credential sent, from `x-api-key`, `api-key` or `Authorization: Bearer`."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        if "api-key" in self.headers:
            return self.headers["api-key"]
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None


# --- the server ----------------------------------------------------------------------------


class FakeModelServer:
    """`async with FakeModelServer(api_key=None) as server:` — see the module docstring.

    - `server.url`: base URL, e.g. `http://127.0.0.1:PORT` (Anthropic's base URL; OpenAI's is
      `server.url + "/v1"`, Gemini's `server.url + "/v1beta/openai/"`); `server.env()` returns
      all six `*_API_KEY` / `*_BASE_URL` variables pointed at the server.
    - `server.script(*items)` / `server.enqueue(item)`: append `Turn`s / `HttpError`s.
    - `server.default_turn`: streamed when the queue is empty (else such a request gets 400).
    - `server.requests`: every `RecordedRequest`; `await server.wait_for_requests(n)`.
    - `api_key`: when set, requests must present it (`x-api-key` or `Authorization: Bearer`)
      or get the API's 401.
    - `ssl_context`: when set, the server speaks HTTPS with it (`server.url` says https).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default_turn: Turn | None = None,
        responder: Callable[[RecordedRequest], ScriptItem] | None = None,
        context_limit: int | None = None,
        usage_from_request: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key
        self.ssl_context = ssl_context
        self.default_turn = default_turn
        # Answers a request when the queue is empty (before `default_turn`): scripts that
        # depend on what was asked (a compaction's summary request, say).
        self.responder = responder
        # Like a real API: a request of more input tokens than this gets the API's 400
        # "prompt is too long", and usage reports the request's real size, at
        # REQUEST_CHARS_PER_TOKEN bytes of request body per token.
        self.context_limit = context_limit
        self.usage_from_request = usage_from_request
        self.requests: list[RecordedRequest] = []
        self._queue: deque[ScriptItem] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)

    # lifecycle
    async def __aenter__(self) -> FakeModelServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    def env(self, api_key: str | None = None) -> dict[str, str]:
        key = api_key or self.api_key or "test-key"
        return {
            "ANTHROPIC_API_KEY": key,
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_API_KEY": key,
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "GEMINI_API_KEY": key,
            "GEMINI_BASE_URL": f"{self.url}/v1beta/openai/",
        }

    # scripting
    def script(self, *items: ScriptItem) -> None:
        self._queue.extend(items)

    def enqueue(self, item: ScriptItem) -> None:
        self._queue.append(item)

    @property
    def pending(self) -> int:
        """Scripted items not consumed yet."""
        return len(self._queue)

    async def wait_for_requests(self, count: int, timeout: float = 10.0) -> RecordedRequest:
        """Wait until at least `count` requests arrived; returns the `count`-th."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests[count - 1]

    # handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        api: Api | None = None
        if request.method == "POST":
            if path.endswith("/messages"):
                api = "anthropic"
            elif path.endswith("/chat/completions"):
                api = "chat"
            elif path.endswith("/responses"):
                api = "responses"
        if api is None:
            return web.json_response({"error": f"no route for {request.method} {path}"}, status=404)
        gemini = "/v1beta/openai/" in path  # Google's error format on its compatible endpoint
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        recorded = RecordedRequest(
            request.method,
            path,
            api,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            len(raw),
        )
        async with self._arrived:
            self.requests.append(recorded)
            self._arrived.notify_all()
        number = len(self.requests)

        if self.api_key is not None and recorded.api_key != self.api_key:
            return _error_response(api, gemini, HttpError(401, "invalid x-api-key"))
        if not isinstance(body, dict):
            return _error_response(api, gemini, HttpError(400, "request body is not a JSON object"))
        if self.context_limit is not None and recorded.tokens > self.context_limit:
            return _error_response(
                api,
                gemini,
                HttpError(
                    400,
                    f"prompt is too long: {recorded.tokens} tokens > {self.context_limit} maximum",
                ),
            )
        if self._queue:
            item: ScriptItem = self._queue.popleft()
        elif self.responder is not None:
            item = self.responder(recorded)
        elif self.default_turn is not None:
            item = self.default_turn
        else:
            return _error_response(
                api,
                gemini,
                HttpError(400, f"fake model server: nothing scripted for request #{number}"),
            )
        if isinstance(item, HttpError):
            return _error_response(api, gemini, item)
        if not body.get("stream"):
            return _error_response(
                api, gemini, HttpError(400, "the fake model server only streams")
            )
        if self.usage_from_request:
            item = replace(item, usage=replace(item.usage, input_tokens=recorded.tokens))
        return await self._stream(request, api, body, item, number)

    async def _stream(
        self, request: web.Request, api: Api, body: dict[str, Any], turn: Turn, number: int
    ) -> web.StreamResponse:
        model = turn.model or str(body.get("model", "fake-model"))
        renderer = {"anthropic": _anthropic, "chat": _chat, "responses": _responses}[api]
        frames = list(renderer(turn, body, model, number))
        request_id_header = "request-id" if api == "anthropic" else "x-request-id"
        resp = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                request_id_header: f"req_fake_{number}",
            },
        )
        if turn.first_byte_delay:
            await asyncio.sleep(turn.first_byte_delay)
        await resp.prepare(request)
        try:
            for sent, frame in enumerate(frames):
                if turn.hold is not None and sent == turn.hold_after:
                    await turn.hold._pass()
                if turn.cut_after is not None and sent == turn.cut_after:
                    _drop_connection(request)
                    return resp
                if turn.malformed_after is not None and sent == turn.malformed_after:
                    await resp.write(_malformed_frame(api))
                if turn.error_after is not None and sent == turn.error_after:
                    await resp.write(_stream_error_frame(api, sent, turn.stream_error))
                    await resp.write_eof()
                    return resp
                await resp.write(frame)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            # The client went away (e.g. it gave up on a malformed frame).
            pass
        return resp


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


# --- SSE framing ----------------------------------------------------------------------------


def _sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _malformed_frame(api: Api) -> bytes:
    if api == "anthropic":
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"de\n\n'
    if api == "responses":
        return b'event: response.output_text.delta\ndata: {"type":"response.output_text.de\n\n'
    return b'data: {"id":"chatcmpl-broken","choices":[{"index":0,"delta":{"cont\n\n'


def _stream_error_frame(api: Api, sequence: int, kind: str | None = None) -> bytes:
    if api == "anthropic":
        message = "Overloaded" if kind is None else f"fake in-stream {kind}"
        err = {"type": "error", "error": {"type": kind or "overloaded_error", "message": message}}
        return _sse(err, "error")
    message = (
        "The server had an error while processing your request."
        if kind is None
        else f"fake in-stream {kind}"
    )
    if api == "responses":
        return _sse(
            {
                "type": "error",
                "code": kind or "server_error",
                "message": message,
                "param": None,
                "sequence_number": sequence,
            },
            "error",
        )
    return _sse(
        {
            "error": {
                "message": message,
                "type": kind or "server_error",
                "param": None,
                "code": "server_error" if kind is None else None,
            }
        }
    )


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


# Google's canonical statuses, as Gemini's error objects name them.
_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _error_response(api: Api, gemini: bool, err: HttpError) -> web.Response:
    headers = dict(err.headers)
    if err.retry_after_ms is not None:
        headers["retry-after-ms"] = str(err.retry_after_ms)
    if err.retry_after is not None:
        headers["retry-after"] = err.retry_after
    message = err.message or f"fake error {err.status}"
    if gemini:
        # Gemini's OpenAI-compatible endpoint answers errors in Google's own format, wrapped
        # in a JSON array: [{"error": {"code": 429, "message": …, "status": "RESOURCE_EXHAUSTED"}}]
        status = err.error_type or _GOOGLE_STATUSES.get(
            err.status, "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT"
        )
        google = [{"error": {"code": err.status, "message": message, "status": status}}]
        return web.json_response(google, status=err.status, headers=headers)
    if api == "anthropic":
        etype = err.error_type or _ANTHROPIC_ERROR_TYPES.get(
            err.status, "api_error" if err.status >= 500 else "invalid_request_error"
        )
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": "req_fake_error",
        }
    else:
        etype, code = _OPENAI_ERROR_TYPES.get(
            err.status, ("server_error" if err.status >= 500 else "invalid_request_error", None)
        )
        body = {
            "error": {
                "message": message,
                "type": err.error_type or etype,
                "param": None,
                "code": code,
            }
        }
    return web.json_response(body, status=err.status, headers=headers)


# --- Anthropic Messages ---------------------------------------------------------------------


def _anthropic(turn: Turn, body: dict[str, Any], model: str, n: int) -> Iterator[bytes]:
    u = turn.usage
    stop = turn.wire_stop or turn.neutral_stop
    yield _sse(
        {
            "type": "message_start",
            "message": {
                "id": f"msg_fake_{n}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": u.input_tokens
                    - u.cached_input_tokens
                    - u.cache_creation_input_tokens,
                    "cache_creation_input_tokens": u.cache_creation_input_tokens,
                    "cache_read_input_tokens": u.cached_input_tokens,
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        },
        "message_start",
    )
    yield _sse({"type": "ping"}, "ping")
    tool_no = 0
    searches = 0
    index = -1

    def start(content_block: dict[str, Any]) -> bytes:
        return _sse(
            {"type": "content_block_start", "index": index, "content_block": content_block},
            "content_block_start",
        )

    def delta(d: dict[str, Any]) -> bytes:
        return _sse(
            {"type": "content_block_delta", "index": index, "delta": d},
            "content_block_delta",
        )

    def stop_block() -> bytes:
        return _sse({"type": "content_block_stop", "index": index}, "content_block_stop")

    for block in turn.blocks:
        index += 1
        if isinstance(block, Text):
            yield start({"type": "text", "text": ""})
            for chunk in block.chunks:
                yield delta({"type": "text_delta", "text": chunk})
        elif isinstance(block, Thinking) and block.redacted_data is not None:
            yield start({"type": "redacted_thinking", "data": block.redacted_data})
        elif isinstance(block, Thinking):
            yield start({"type": "thinking", "thinking": "", "signature": ""})
            for chunk in block.chunks:
                yield delta({"type": "thinking_delta", "thinking": chunk})
            yield delta({"type": "signature_delta", "signature": block.signature})
        elif isinstance(block, WebSearch):
            searches += 1
            call_id = block.id or f"srvtoolu_fake_{n}_{searches}"
            yield start(
                {"type": "server_tool_use", "id": call_id, "name": "web_search", "input": {}}
            )
            query = json.dumps({"query": block.query})
            yield delta({"type": "input_json_delta", "partial_json": query[: len(query) // 2]})
            yield delta({"type": "input_json_delta", "partial_json": query[len(query) // 2 :]})
            yield stop_block()
            index += 1
            content: Any
            if block.error is not None:
                content = {"type": "web_search_tool_result_error", "error_code": block.error}
            else:
                content = [
                    {
                        "type": "web_search_result",
                        "title": title,
                        "url": url,
                        "encrypted_content": f"enc-{n}-{i}",
                        "page_age": age,
                    }
                    for i, (title, url, age) in enumerate(block.results)
                ]
            yield start(
                {"type": "web_search_tool_result", "tool_use_id": call_id, "content": content}
            )
        else:
            tool_no += 1
            call_id = block.id or f"toolu_fake_{n}_{tool_no}"
            yield start({"type": "tool_use", "id": call_id, "name": block.name, "input": {}})
            yield delta({"type": "input_json_delta", "partial_json": ""})
            for chunk in block.argument_chunks():
                yield delta({"type": "input_json_delta", "partial_json": chunk})
        yield stop_block()
    usage: dict[str, Any] = {"output_tokens": u.output_tokens}
    if u.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    if searches:
        usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage,
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


# --- OpenAI Chat Completions ----------------------------------------------------------------

_CHAT_FINISH = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
    "stop_sequence": "stop",
    "pause_turn": "stop",
}


def _chat(turn: Turn, body: dict[str, Any], model: str, n: int) -> Iterator[bytes]:
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        data: dict[str, Any] = {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if include_usage:
            data["usage"] = usage
        return _sse(data)

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    yield chunk(choice({"role": "assistant", "content": "", "refusal": None}))
    tool_index = -1
    for block in turn.blocks:
        if isinstance(block, Text):
            for piece in block.chunks:
                yield chunk(choice({"content": piece}))
        elif isinstance(block, Thinking):
            for piece in block.chunks:
                yield chunk(choice({"reasoning_content": piece}))
        elif isinstance(block, WebSearch):
            raise ValueError("Chat Completions has no hosted web search to fake")
        else:
            tool_index += 1
            call_id = block.id or f"call_fake_{n}_{tool_index + 1}"
            first: dict[str, Any] = {
                "index": tool_index,
                "id": call_id,
                "type": "function",
                "function": {"name": block.name, "arguments": ""},
            }
            if block.thought_signature is not None:
                first["extra_content"] = {"google": {"thought_signature": block.thought_signature}}
            yield chunk(choice({"tool_calls": [first]}))
            for piece in block.argument_chunks():
                more = {"index": tool_index, "function": {"arguments": piece}}
                yield chunk(choice({"tool_calls": [more]}))
    finish = turn.wire_stop or _CHAT_FINISH[turn.neutral_stop]
    yield chunk(choice({}, finish))
    if include_usage:
        u = turn.usage
        yield chunk(
            [],
            {
                "prompt_tokens": u.input_tokens,
                "completion_tokens": u.output_tokens,
                "total_tokens": u.input_tokens + u.output_tokens,
                "prompt_tokens_details": {
                    "cached_tokens": u.cached_input_tokens,
                    "audio_tokens": 0,
                },
                "completion_tokens_details": {
                    "reasoning_tokens": u.reasoning_tokens,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
        )
    yield b"data: [DONE]\n\n"


# --- OpenAI Responses -----------------------------------------------------------------------


def _responses(turn: Turn, body: dict[str, Any], model: str, n: int) -> Iterator[bytes]:
    seq = itertools.count()
    include = body.get("include") or []
    encrypted = "reasoning.encrypted_content" in include
    response: dict[str, Any] = {
        "id": f"resp_fake_{n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "metadata": {},
    }

    def ev(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

    yield ev("response.created", response=response)
    yield ev("response.in_progress", response=response)
    done_items: list[dict[str, Any]] = []
    tool_no = 0
    for out_index, block in enumerate(turn.blocks):
        loc = {"output_index": out_index}
        if isinstance(block, Thinking):
            item_id = f"rs_fake_{n}_{out_index}"
            yield ev(
                "response.output_item.added",
                item={"id": item_id, "type": "reasoning", "summary": []},
                **loc,
            )
            summary: list[dict[str, Any]] = []
            if block.redacted_data is None and block.chunks:
                full = block.text
                where = {"item_id": item_id, **loc, "summary_index": 0}
                part = {"type": "summary_text", "text": ""}
                yield ev("response.reasoning_summary_part.added", part=part, **where)
                for piece in block.chunks:
                    yield ev("response.reasoning_summary_text.delta", delta=piece, **where)
                yield ev("response.reasoning_summary_text.done", text=full, **where)
                summary = [{"type": "summary_text", "text": full}]
                yield ev("response.reasoning_summary_part.done", part=summary[0], **where)
            secret = block.redacted_data if block.redacted_data is not None else block.signature
            item = {
                "id": item_id,
                "type": "reasoning",
                "summary": summary,
                "encrypted_content": secret if encrypted else None,
            }
        elif isinstance(block, Text):
            item_id = f"msg_fake_{n}_{out_index}"
            base = {"id": item_id, "type": "message", "role": "assistant"}
            yield ev(
                "response.output_item.added",
                item={**base, "status": "in_progress", "content": []},
                **loc,
            )
            where = {"item_id": item_id, **loc, "content_index": 0}
            empty = {"type": "output_text", "annotations": [], "text": ""}
            yield ev("response.content_part.added", part=empty, **where)
            for piece in block.chunks:
                yield ev("response.output_text.delta", delta=piece, logprobs=[], **where)
            yield ev("response.output_text.done", text=block.text, logprobs=[], **where)
            part = {"type": "output_text", "annotations": [], "text": block.text}
            yield ev("response.content_part.done", part=part, **where)
            item = {**base, "status": "completed", "content": [part]}
        elif isinstance(block, WebSearch):
            item_id = block.id or f"ws_fake_{n}_{out_index}"
            action: dict[str, Any] = {"type": "search", "query": block.query}
            base = {"id": item_id, "type": "web_search_call"}
            yield ev(
                "response.output_item.added",
                item={**base, "status": "in_progress", "action": {"type": "search"}},
                **loc,
            )
            for phase in ("in_progress", "searching", "completed"):
                yield ev(f"response.web_search_call.{phase}", item_id=item_id, **loc)
            if "web_search_call.action.sources" in include:
                action["sources"] = [{"type": "url", "url": url} for _, url, _ in block.results]
            status = "failed" if block.error is not None else "completed"
            item = {**base, "status": status, "action": action}
        else:
            tool_no += 1
            item_id = f"fc_fake_{n}_{out_index}"
            base = {
                "id": item_id,
                "type": "function_call",
                "call_id": block.id or f"call_fake_{n}_{tool_no}",
                "name": block.name,
            }
            yield ev(
                "response.output_item.added",
                item={**base, "arguments": "", "status": "in_progress"},
                **loc,
            )
            for piece in block.argument_chunks():
                yield ev(
                    "response.function_call_arguments.delta", item_id=item_id, delta=piece, **loc
                )
            yield ev(
                "response.function_call_arguments.done",
                item_id=item_id,
                arguments=block.argument_text,
                **loc,
            )
            item = {**base, "arguments": block.argument_text, "status": "completed"}
        done_items.append(item)
        yield ev("response.output_item.done", item=item, **loc)
    u = turn.usage
    final = {
        **response,
        "output": done_items,
        "usage": {
            "input_tokens": u.input_tokens,
            "input_tokens_details": {
                "cached_tokens": u.cached_input_tokens,
                "cache_write_tokens": 0,
            },
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens + u.output_tokens,
        },
    }
    stop = turn.wire_stop or turn.neutral_stop
    if stop in ("max_tokens", "refusal"):
        reason = "max_output_tokens" if stop == "max_tokens" else "content_filter"
        final |= {"status": "incomplete", "incomplete_details": {"reason": reason}}
        yield ev("response.incomplete", response=final)
    else:
        final["status"] = "completed"
        yield ev("response.completed", response=final)
