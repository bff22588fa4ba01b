"""Anthropic Messages API adapter (streaming, on the official `anthropic` SDK).

- Conversation mapping: `tool` messages become `user` messages of `tool_result` blocks
  (consecutive same-role messages are merged, tool results first); assistant thinking is
  sent back unchanged — `thinking` blocks with their `signature`, `redacted_thinking` blocks
  with their `data` — and thinking without an Anthropic signature (from another provider) is
  dropped, since the API would reject it.
- Prompt caching: `cache_control: ephemeral` on the system prompt, on the last tool (which
  caches the whole tool list) and on the last block of the conversation (3 of the 4
  breakpoints the API allows).
- `stop_reason: pause_turn` is handled inside one `stream()` call: the partial assistant
  content is sent back as-is (raw blocks, server-tool blocks included) and the turn
  continues; the caller sees one turn whose content and usage span the continuations.
- Usage is normalised: `inputTokens = input_tokens + cache_read + cache_creation`,
  `cachedInputTokens = cache_read_input_tokens`, `reasoningTokens` from
  `output_tokens_details.thinking_tokens` when the API reports it.
- `ToolCallStart.index` etc. count tool calls within the turn (0, 1, …).
- The hosted `web_search` tool is the server tool `web_search_20250305`: its
  `server_tool_use` block is reported as a hosted tool call when it ends, and the
  `web_search_tool_result` block that answers it as the result; both become one
  `HostedToolPart` whose blocks are sent back unchanged on later turns.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

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
    HostedToolCall,
    HostedToolResult,
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
from runtime.providers.capabilities import prefers_adaptive_thinking
from runtime.providers.retry import (
    Failure,
    RetryPolicy,
    StreamBroken,
    classify_status,
    connection_failure,
    read_stream,
    transient,
)
from runtime.providers.sdk_adapter import SdkAdapter
from runtime.providers.tls import shared_tls_context
from runtime.providers.tool_calls import parse_tool_call

if TYPE_CHECKING:  # the SDK itself is imported when a client is made (start-up time)
    from anthropic import AsyncAnthropic

PROVIDER = "anthropic"
DEFAULT_TIMEOUT = 600.0
MIN_THINKING_BUDGET = 1024
_EPHEMERAL = {"type": "ephemeral"}

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}


class StreamTruncated(Exception):
    """The stream ended without its terminal event (the connection dropped quietly)."""


class AnthropicProvider(SdkAdapter["AsyncAnthropic"]):
    """`stream()` one model turn from the Messages API.

    `api_key` (sent by the SDK as `Authorization: Bearer`; `auth_token` is the alternative
    credential). When neither is given, every `stream()` raises `ModelError` code
    `missing_api_key` naming `key_env_var`. `base_url` is the API root without `/v1`.
    """

    name = PROVIDER

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        auth_token: str | None = None,
        key_env_var: str = "ANTHROPIC_API_KEY",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        prompt_caching: bool = True,
        max_pause_continuations: int = 8,
        label: str = "Anthropic",
    ) -> None:
        client: AsyncAnthropic | None = None
        if api_key or auth_token:
            from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient

            if base_url:
                base_url = base_url.rstrip("/")
                base_url = base_url.removesuffix("/v1/messages").removesuffix("/v1")
            client = AsyncAnthropic(
                api_key=api_key or None,
                auth_token=None if api_key else auth_token,
                base_url=base_url or None,
                max_retries=0,
                timeout=timeout or DEFAULT_TIMEOUT,
                http_client=DefaultAsyncHttpxClient(verify=shared_tls_context()),
            )
            _ = client.messages  # imported on first use: see `runtime.providers.sdk_adapter`
        super().__init__(client, retry=retry, key_env_var=key_env_var, label=label)
        self.prompt_caching = prompt_caching
        self.max_pause_continuations = max_pause_continuations

    # -- the request ------------------------------------------------------------------------

    def build_request(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> dict[str, Any]:
        """The Messages API request body (without `stream`)."""
        max_tokens = settings.max_tokens
        body: dict[str, Any] = {"model": settings.model, "messages": to_anthropic(messages)}
        if self.prompt_caching and body["messages"]:
            last = body["messages"][-1]["content"][-1]
            if last.get("type") in ("text", "tool_result", "image"):
                last["cache_control"] = dict(_EPHEMERAL)
        if system:
            block: dict[str, Any] = {"type": "text", "text": system}
            if self.prompt_caching:
                block["cache_control"] = dict(_EPHEMERAL)
            body["system"] = [block]
        functions, hosted = split_hosted(tools)
        if functions or hosted:
            specs = [
                {
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "input_schema": t.get("input_schema") or {"type": "object", "properties": {}},
                }
                for t in functions
            ]
            specs += [_hosted_tool(name) for name in hosted]
            if self.prompt_caching:
                specs[-1]["cache_control"] = dict(_EPHEMERAL)
            body["tools"] = specs
        if settings.thinking_budget and prefers_adaptive_thinking(settings.model):
            body["thinking"] = {"type": "adaptive"}
        elif settings.thinking_budget:
            budget = max(MIN_THINKING_BUDGET, settings.thinking_budget)
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            # The answer must fit after the thinking.
            max_tokens = max(max_tokens, budget + 1024)
        # No temperature: the Messages API takes none (capabilities.unsupported_settings says
        # so to the run and refuses such agents at upsert).
        body["max_tokens"] = max_tokens
        return body

    # -- streaming ---------------------------------------------------------------------------

    async def _turn(
        self, body: dict[str, Any], extra: dict[str, Any] | None
    ) -> AsyncGenerator[StreamItem, None]:
        """The turn's requests: a `pause_turn` stop (a server tool paused a long turn) is
        continued with what was streamed so far, at most `max_pause_continuations` times."""
        base_messages = body["messages"]
        paused_blocks: list[dict[str, Any]] = []
        content: list[Part] = []
        usage = Usage()
        model: str | None = None
        for _ in range(self.max_pause_continuations + 1):
            request = dict(body)
            if paused_blocks:
                request["messages"] = [
                    *base_messages,
                    {"role": "assistant", "content": paused_blocks},
                ]
            raw_blocks: list[list[dict[str, Any]]] = []
            tool_offset = sum(isinstance(p, ToolCallPart) for p in content)
            turn: AssistantTurn | None = None

            def attempt(
                request: dict[str, Any] = request,
                raw_blocks: list[list[dict[str, Any]]] = raw_blocks,
                tool_offset: int = tool_offset,
            ) -> AsyncGenerator[StreamItem, None]:
                blocks: list[dict[str, Any]] = []
                raw_blocks.append(blocks)
                return self._attempt(request, extra, blocks, tool_offset)

            async with aclosing(self._retried(attempt)) as retried:
                async for item in retried:
                    if isinstance(item, AssistantTurn):
                        turn = item
                    else:
                        yield item
            assert turn is not None
            content.extend(turn.content)
            usage = usage + turn.usage
            model = turn.model or model
            if turn.stop_reason != "pause_turn":
                yield AssistantTurn(
                    content=content, stop_reason=turn.stop_reason, usage=usage, model=model
                )
                return
            paused_blocks = [*paused_blocks, *raw_blocks[-1]]
        yield AssistantTurn(content=content, stop_reason="pause_turn", usage=usage, model=model)

    async def _attempt(
        self,
        request: dict[str, Any],
        extra: dict[str, Any] | None,
        blocks: list[dict[str, Any]],
        tool_offset: int,
    ) -> AsyncGenerator[StreamItem, None]:
        import anthropic

        stream = await self.client().messages.create(**request, stream=True, extra_body=extra)
        by_index: dict[int, dict[str, Any]] = {}
        json_text: dict[int, str] = {}
        tool_ordinal: dict[int, int] = {}
        server_calls: dict[str, dict[str, Any]] = {}  # server_tool_use id → its block
        parts: dict[int, Part] = {}
        raw_usage: dict[str, Any] = {}
        stop_reason: str | None = None
        model: str | None = None
        finished = False
        async with stream:
            async for event in read_stream(stream, anthropic.APIError):
                kind = event.type
                if kind == "message_start":
                    model = event.message.model
                    raw_usage.update(event.message.usage.to_dict())
                elif kind == "content_block_start":
                    raw = event.content_block.to_dict()
                    by_index[event.index] = raw
                    blocks.append(raw)
                    btype = raw.get("type")
                    if btype in ("tool_use", "server_tool_use"):
                        json_text[event.index] = ""
                    if btype == "tool_use":
                        ordinal = tool_offset + len(tool_ordinal)
                        tool_ordinal[event.index] = ordinal
                        yield ToolCallStart(index=ordinal, id=raw["id"], name=raw["name"])
                    elif btype == "text" and raw.get("text"):
                        yield TextDelta(text=raw["text"])
                    elif btype == "thinking" and raw.get("thinking"):
                        yield ThinkingDelta(text=raw["thinking"])
                elif kind == "content_block_delta":
                    raw = by_index[event.index]
                    delta = event.delta
                    if delta.type == "text_delta":
                        raw["text"] = raw.get("text", "") + delta.text
                        yield TextDelta(text=delta.text)
                    elif delta.type == "thinking_delta":
                        raw["thinking"] = raw.get("thinking", "") + delta.thinking
                        yield ThinkingDelta(text=delta.thinking)
                    elif delta.type == "signature_delta":
                        raw["signature"] = delta.signature
                    elif delta.type == "input_json_delta":
                        json_text[event.index] = json_text.get(event.index, "") + (
                            delta.partial_json
                        )
                        if event.index in tool_ordinal and delta.partial_json:
                            yield ToolCallArgumentsDelta(
                                index=tool_ordinal[event.index], arguments=delta.partial_json
                            )
                    elif delta.type == "citations_delta":
                        raw.setdefault("citations", []).append(delta.citation.to_dict())
                elif kind == "content_block_stop":
                    raw = by_index[event.index]
                    part = _block_to_part(raw, json_text.get(event.index))
                    if raw.get("type") == "server_tool_use":
                        server_calls[str(raw.get("id"))] = raw
                        yield HostedToolCall(
                            id=str(raw.get("id")),
                            name=str(raw.get("name")),
                            input=dict(raw.get("input") or {}),
                        )
                    elif raw.get("type") == "web_search_tool_result":
                        part = _web_search_part(raw, server_calls)
                        yield HostedToolResult(
                            id=part.id, name=part.name, output=part.output, is_error=part.is_error
                        )
                    if part is not None:
                        parts[event.index] = part
                    if isinstance(part, ToolCallPart):
                        yield ToolCallEnd(index=tool_ordinal[event.index], call=part)
                elif kind == "message_delta":
                    stop_reason = event.delta.stop_reason
                    raw_usage.update(
                        {k: v for k, v in event.usage.to_dict().items() if v is not None}
                    )
                elif kind == "message_stop":
                    finished = True
        if not finished:
            raise StreamTruncated("the Anthropic stream ended before message_stop")
        yield AssistantTurn(
            content=[parts[i] for i in sorted(parts)],
            stop_reason=_STOP_REASONS.get(stop_reason or "end_turn", "end_turn"),
            usage=_usage(raw_usage),
            model=model,
        )

    def _classify(self, exc: BaseException) -> Failure | None:
        import anthropic

        label = self.label
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            detail = exc.api_message or str(exc)
            etype = exc.type
            where = f"HTTP {status}" if status >= 400 else "in-stream error"
            return classify_status(
                status if status >= 400 else 0,
                f"{label} API error ({where}{', ' + etype if etype else ''}): {detail}",
                error_type=etype,
                headers=exc.response.headers,
            )
        if isinstance(exc, anthropic.APITimeoutError):
            return transient("timeout", f"{label} API request timed out")
        if isinstance(exc, anthropic.APIConnectionError):
            return connection_failure(label, exc)
        if isinstance(exc, StreamBroken):
            return transient("connection", f"{label} API: {exc}")
        if isinstance(exc, StreamTruncated):
            return transient("connection", str(exc))
        if isinstance(exc, json.JSONDecodeError):
            return transient("bad_response", f"malformed JSON in the {label} stream: {exc}")
        if isinstance(exc, anthropic.APIResponseValidationError):
            return Failure(ModelError("bad_response", str(exc), status=exc.status_code))
        if isinstance(exc, anthropic.APIError):
            return transient("server_error", f"{label} API error: {exc}")
        return None


# -- conversation mapping ---------------------------------------------------------------------


def to_anthropic(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages → Messages API `messages` (merged so roles alternate)."""
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            prev = out[-1]["content"]
            if role == "user":
                # tool_result blocks must lead the user message that follows a tool_use.
                results = [b for b in blocks if b["type"] == "tool_result"]
                others = [b for b in blocks if b["type"] != "tool_result"]
                leading = [b for b in prev if b["type"] == "tool_result"]
                trailing = [b for b in prev if b["type"] != "tool_result"]
                out[-1]["content"] = [*leading, *results, *trailing, *others]
            else:
                prev.extend(blocks)
        else:
            out.append({"role": role, "content": list(blocks)})

    for message in messages:
        if message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            for part in message.content:
                if isinstance(part, HostedToolPart):
                    blocks.extend(_hosted_blocks(part))
                elif assistant := _assistant_block(part):
                    blocks.append(assistant)
            add("assistant", blocks)
        else:
            results: list[dict[str, Any]] = []
            others: list[dict[str, Any]] = []
            for part in message.content:
                if isinstance(part, ToolResultPart):
                    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id}
                    if part.output:  # an empty result is sent without content
                        block["content"] = part.output
                    if part.is_error:
                        block["is_error"] = True
                    results.append(block)
                elif isinstance(part, TextPart) and part.text:
                    others.append({"type": "text", "text": part.text})
                elif isinstance(part, ImagePart):
                    others.append(_image(part))
            add("user", results + others)
    return out


def _assistant_block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ThinkingPart):
        if part.provider not in (None, PROVIDER):
            return None
        if part.redacted:
            return {"type": "redacted_thinking", "data": part.data} if part.data else None
        if part.signature:
            return {"type": "thinking", "thinking": part.thinking, "signature": part.signature}
        return None
    if isinstance(part, ToolCallPart):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.arguments}
    if isinstance(part, ImagePart):
        return _image(part)
    return None


def _hosted_tool(name: str) -> dict[str, Any]:
    if name == "web_search":
        return {"type": "web_search_20250305", "name": "web_search"}
    raise ModelError("invalid_request", f"the Anthropic API has no hosted tool {name!r}")


def _hosted_blocks(part: HostedToolPart) -> list[dict[str, Any]]:
    """A hosted tool's blocks go back unchanged (the results' encrypted content is what the
    model cites); another provider's search reaches Claude as text."""
    if part.provider == PROVIDER and part.blocks:
        return [dict(block) for block in part.blocks]
    return [{"type": "text", "text": hosted_tool_text(part)}]


def _web_search_part(
    raw: dict[str, Any], server_calls: dict[str, dict[str, Any]]
) -> HostedToolPart:
    """A `web_search_tool_result` block (with the `server_tool_use` block it answers) as one
    neutral part: `output` lists the results (title, URL, age) or names the error."""
    call_id = str(raw.get("tool_use_id", ""))
    call = server_calls.get(
        call_id, {"type": "server_tool_use", "id": call_id, "name": "web_search", "input": {}}
    )
    content = raw.get("content")
    if isinstance(content, list):
        lines = []
        for result in content:
            age = f" ({result['page_age']})" if result.get("page_age") else ""
            lines.append(f"{result.get('title', '')} — {result.get('url', '')}{age}")
        output, is_error = "\n".join(lines) or "no results", False
    else:
        code = (content or {}).get("error_code", "unknown")
        output, is_error = f"web search failed: {code}", True
    return HostedToolPart(
        id=call_id,
        name=str(call.get("name", "web_search")),
        input=dict(call.get("input") or {}),
        output=output,
        is_error=is_error,
        provider=PROVIDER,
        blocks=[call, raw],
    )


def _image(part: ImagePart) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": part.media_type, "data": part.data},
    }


def _block_to_part(raw: dict[str, Any], json_text: str | None) -> Part | None:
    btype = raw.get("type")
    if json_text is not None:
        call = parse_tool_call(str(raw.get("id", "")), str(raw.get("name", "")), json_text)
        raw["input"] = call.arguments
        if btype == "tool_use":
            return call
        return None
    if btype == "text":
        return TextPart(text=raw.get("text", "")) if raw.get("text") else None
    if btype == "thinking":
        return ThinkingPart(
            thinking=raw.get("thinking", ""), signature=raw.get("signature"), provider=PROVIDER
        )
    if btype == "redacted_thinking":
        return ThinkingPart(redacted=True, data=raw.get("data"), provider=PROVIDER)
    # Server-tool blocks become one HostedToolPart when their result block ends (the stream
    # loop does that); they are also kept in the raw blocks a pause_turn continuation sends.
    return None


def _usage(raw: dict[str, Any]) -> Usage:
    read = int(raw.get("cache_read_input_tokens") or 0)
    created = int(raw.get("cache_creation_input_tokens") or 0)
    details = raw.get("output_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + read + created,
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_input_tokens=read,
        reasoning_tokens=int(details.get("thinking_tokens") or 0),
    )
