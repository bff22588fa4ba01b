"""OpenAI Chat Completions adapter (streaming, on the official `openai` SDK).

Also serves Gemini (its OpenAI-compatible endpoint) and custom OpenAI-format endpoints.

- Streamed `tool_calls` deltas are assembled by their `index`; several calls in one turn
  (parallel tool calls) each get a `ToolCallStart` / argument deltas / `ToolCallEnd`.
  Argument text that is not a JSON object is kept in `raw_arguments` (arguments `{}`).
- Extra fields a server puts on a tool call (Gemini's
  `extra_content.google.thought_signature`) are kept in `ToolCallPart.meta["extra_content"]`
  and sent back unchanged with the call.
- `finish_reason: "stop"` with tool calls present (Gemini, some local servers) still means
  `tool_use`: the tool calls decide.
- `stream_options.include_usage` is requested; usage comes from the final chunk.
  `prompt_tokens` already includes `cached_tokens`; `reasoning_tokens` comes from
  `completion_tokens_details`.
- Reasoning text that OpenAI-compatible servers stream as `delta.reasoning_content` or
  `delta.reasoning` becomes thinking; it is not sent back (Chat has no field for it).
- A stream that ends without a `finish_reason` is treated as a dropped connection (retried).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from runtime.messages import (
    HostedToolPart,
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
    hosted_tool_text,
)
from runtime.providers.base import (
    AssistantTurn,
    ModelError,
    ModelSettings,
    StopReason,
    StreamItem,
    TextDelta,
    ThinkingDelta,
    ToolCallArgumentsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    split_hosted,
)
from runtime.providers.retry import (
    Failure,
    RetryPolicy,
    StreamBroken,
    classify_status,
    connection_failure,
    read_stream,
    transient,
)
from runtime.providers.sdk_adapter import SingleRequestAdapter
from runtime.providers.tls import shared_tls_context
from runtime.providers.tool_calls import arguments_json, parse_tool_call

if TYPE_CHECKING:  # the SDK itself is imported when a client is made (start-up time)
    from openai import AsyncOpenAI

DEFAULT_TIMEOUT = 600.0


def openai_client(
    api_key: str, base_url: str | None, endpoint_path: str, timeout: float | None
) -> AsyncOpenAI:
    """An `AsyncOpenAI` client for Chat Completions or Responses. Its own retries are off:
    the shared RetryPolicy owns them. A base URL given with the endpoint path still works.
    Its TLS context is the process's (`runtime.providers.tls`)."""
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    if base_url:
        base_url = base_url.rstrip("/").removesuffix(endpoint_path)
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url or None,
        max_retries=0,
        timeout=timeout or DEFAULT_TIMEOUT,
        http_client=DefaultAsyncHttpxClient(verify=shared_tls_context()),
    )


class StreamTruncated(Exception):
    """The stream ended without a finish_reason (the connection dropped quietly)."""


def reasoning_effort(budget: int) -> str:
    """A thinking budget in tokens as OpenAI's coarse `reasoning_effort`."""
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


@dataclass
class _Call:
    wire_index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    ordinal: int | None = None


class OpenAIAdapter(SingleRequestAdapter["AsyncOpenAI"]):
    """An adapter over the `openai` SDK (Chat Completions or Responses); `truncated` is the
    adapter's exception for a stream that ended without its terminal event."""

    truncated: ClassVar[type[Exception]] = StreamTruncated

    def _classify(self, exc: BaseException) -> Failure | None:
        return classify_openai_error(exc, self.label, self.truncated)


class OpenAIChatProvider(OpenAIAdapter):
    """`stream()` one model turn from a Chat Completions endpoint.

    `base_url` includes `/v1` (as `OPENAI_BASE_URL` does). `max_tokens_field` is the request
    field for the output cap: `max_completion_tokens` for OpenAI, `max_tokens` for Gemini and
    most compatible servers. Without `api_key`, `stream()` raises `ModelError`
    `missing_api_key` naming `key_env_var`.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        key_env_var: str = "OPENAI_API_KEY",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_tokens_field: str = "max_completion_tokens",
        name: str = "openai-chat",
        label: str = "OpenAI",
    ) -> None:
        client = openai_client(api_key, base_url, "/chat/completions", timeout) if api_key else None
        if client is not None:
            _ = client.chat.completions  # imported on first use: see `sdk_adapter`
        super().__init__(client, retry=retry, key_env_var=key_env_var, label=label)
        self.name = name
        self.max_tokens_field = max_tokens_field

    def build_request(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> dict[str, Any]:
        """The Chat Completions request body (without `stream`)."""
        body: dict[str, Any] = {
            "model": settings.model,
            "messages": to_chat(system, messages),
            "stream_options": {"include_usage": True},
            self.max_tokens_field: settings.max_tokens,
        }
        functions, hosted = split_hosted(tools)
        if hosted:
            raise ModelError(
                "invalid_request",
                f"{', '.join(hosted)}: the Chat Completions API has no hosted tools; use an "
                "Anthropic or OpenAI Responses model for them",
            )
        if functions:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t["name"],
                        "description": t.get("description", ""),
                        "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                    },
                }
                for t in functions
            ]
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.thinking_budget:
            body["reasoning_effort"] = reasoning_effort(settings.thinking_budget)
        return body

    async def _attempt(
        self, body: dict[str, Any], extra: dict[str, Any] | None
    ) -> AsyncGenerator[StreamItem, None]:
        import openai

        stream = await self.client().chat.completions.create(**body, stream=True, extra_body=extra)
        thinking: list[str] = []
        texts: list[str] = []
        calls: dict[int, _Call] = {}
        started: list[_Call] = []
        finish: str | None = None
        model: str | None = None
        usage = Usage()
        async with stream:
            async for chunk in read_stream(stream, openai.APIError):
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    extras = delta.model_extra or {}
                    reasoning = extras.get("reasoning_content") or extras.get("reasoning")
                    if isinstance(reasoning, str) and reasoning:
                        thinking.append(reasoning)
                        yield ThinkingDelta(text=reasoning)
                    for piece in (delta.content, delta.refusal):
                        if piece:
                            texts.append(piece)
                            yield TextDelta(text=piece)
                    if delta.refusal:
                        finish = finish or "content_filter"
                    for tc in delta.tool_calls or []:
                        for item in self._tool_delta(tc, calls, started):
                            yield item
                    if choice.finish_reason:
                        finish = choice.finish_reason if finish != "content_filter" else finish
        if finish is None:
            raise StreamTruncated(f"the {self.label} stream ended without a finish_reason")
        content: list[Part] = []
        if thinking:
            content.append(ThinkingPart(thinking="".join(thinking), provider=self.name))
        if texts:
            content.append(TextPart(text="".join(texts)))
        for call in sorted(calls.values(), key=lambda c: c.wire_index):
            if call.ordinal is None:  # never named: still report it, so the loop can answer
                yield self._start(call, started)
            part = parse_tool_call(
                call.id or _call_id(), call.name, call.arguments, meta=call.meta or None
            )
            content.append(part)
            assert call.ordinal is not None
            yield ToolCallEnd(index=call.ordinal, call=part)
        yield AssistantTurn(
            content=content,
            stop_reason=_stop_reason(finish, has_calls=bool(calls)),
            usage=usage,
            model=model,
        )

    def _tool_delta(
        self, tc: Any, calls: dict[int, _Call], started: list[_Call]
    ) -> list[StreamItem]:
        out: list[StreamItem] = []
        call = calls.setdefault(tc.index, _Call(wire_index=tc.index))
        if tc.id and not call.id:
            call.id = tc.id
        if tc.function is not None and tc.function.name and not call.name:
            call.name = tc.function.name
        extra_content = (tc.model_extra or {}).get("extra_content")
        if extra_content is not None:
            call.meta["extra_content"] = extra_content
        pending = tc.function.arguments if tc.function is not None else None
        if call.ordinal is None and call.name:
            start = self._start(call, started)
            out.append(start)
            if call.arguments:  # arguments that arrived before the name
                out.append(ToolCallArgumentsDelta(index=start.index, arguments=call.arguments))
        if pending:
            call.arguments += pending
            if call.ordinal is not None:
                out.append(ToolCallArgumentsDelta(index=call.ordinal, arguments=pending))
        return out

    @staticmethod
    def _start(call: _Call, started: list[_Call]) -> ToolCallStart:
        call.ordinal = len(started)
        call.id = call.id or _call_id()
        started.append(call)
        return ToolCallStart(index=call.ordinal, id=call.id, name=call.name)


def classify_openai_error(
    exc: BaseException, label: str, truncated: type[Exception]
) -> Failure | None:
    """The shared policy's view of an `openai` SDK failure."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = _error_object(exc.body)
        detail = body.get("message") or exc.message
        kind = exc.code if exc.code in ("insufficient_quota",) else (exc.type or exc.code)
        kind = kind or (body.get("status") if isinstance(body.get("status"), str) else None)
        return classify_status(
            status,
            f"{label} API error (HTTP {status}{', ' + kind if kind else ''}): {detail}",
            error_type=kind,
            headers=exc.response.headers,
        )
    if isinstance(exc, openai.APITimeoutError):
        return transient("timeout", f"{label} API request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return connection_failure(label, exc)
    if isinstance(exc, StreamBroken):
        return transient("connection", f"{label} API: {exc}")
    if isinstance(exc, truncated):
        return transient("connection", str(exc))
    if isinstance(exc, json.JSONDecodeError):
        return transient("bad_response", f"malformed JSON in the {label} stream: {exc}")
    if isinstance(exc, openai.APIResponseValidationError):
        return Failure(ModelError("bad_response", str(exc), status=exc.status_code))
    if isinstance(exc, openai.APIError):
        # An error object inside a 200 stream.
        return classify_status(
            0, f"{label} API error in the stream: {exc.message}", error_type=exc.code or exc.type
        )
    return None


def _error_object(body: object) -> dict[str, Any]:
    """The error object of an error response's body: OpenAI's `{"error": {…}}` (the SDK has
    unwrapped it already), or Google's `[{"error": {code, message, status}}]`, the array
    Gemini's OpenAI-compatible endpoint answers with."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0].get("error", body[0])
    return body if isinstance(body, dict) else {}


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _stop_reason(finish: str, *, has_calls: bool) -> StopReason:
    if finish == "length":
        return "max_tokens"
    if finish == "content_filter":
        return "refusal"
    if has_calls or finish in ("tool_calls", "function_call"):
        return "tool_use"
    return "end_turn"


def _usage(raw: Any) -> Usage:
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    return Usage(
        input_tokens=raw.prompt_tokens or 0,
        output_tokens=raw.completion_tokens or 0,
        cached_input_tokens=(getattr(prompt_details, "cached_tokens", None) or 0),
        reasoning_tokens=(getattr(completion_details, "reasoning_tokens", None) or 0),
    )


# -- conversation mapping ---------------------------------------------------------------------


def to_chat(system: str | None, messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages → Chat Completions `messages`."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "assistant":
            text = "".join(
                p.text if isinstance(p, TextPart) else f"{hosted_tool_text(p)}\n"
                for p in message.content
                if isinstance(p, TextPart | HostedToolPart)
            )
            calls = [
                {
                    "id": p.id,
                    "type": "function",
                    "function": {"name": p.name, "arguments": arguments_json(p)},
                    **(
                        {"extra_content": p.meta["extra_content"]}
                        if "extra_content" in p.meta
                        else {}
                    ),
                }
                for p in message.content
                if isinstance(p, ToolCallPart)
            ]
            if not text and not calls:
                continue  # e.g. thinking only: nothing Chat can carry
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        for part in message.content:
            if isinstance(part, ToolResultPart):
                out.append({"role": "tool", "tool_call_id": part.call_id, "content": part.output})
        user_parts = [p for p in message.content if isinstance(p, TextPart | ImagePart)]
        if not user_parts:
            continue
        if all(isinstance(p, TextPart) for p in user_parts):
            out.append({"role": "user", "content": "".join(p.text for p in user_parts)})  # type: ignore[union-attr]
        else:
            out.append({"role": "user", "content": [_user_part(p) for p in user_parts]})
    return out


def _user_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = f"data:{part.media_type};base64,{part.data}"
    return {"type": "image_url", "image_url": {"url": url}}
