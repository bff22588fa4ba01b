"""OpenAI Responses API adapter (streaming, on the official `openai` SDK).

- Requests are stateless: `store: false`, and for reasoning models
  `include: ["reasoning.encrypted_content"]` with `reasoning: {effort, summary: "auto"}`, so
  the reasoning can be sent back on the next turn without server-side state.
- Reasoning items become `ThinkingPart`s: `thinking` is the summary text (summary parts
  joined by a blank line) streamed as thinking deltas; `meta` keeps the item `id`,
  `encrypted_content` and the summary parts, and the item is sent back unchanged.
- `function_call` items become `ToolCallPart`s (`id` = the `call_id`; `meta["item_id"]` =
  the item id); tool results go back as `function_call_output` items.
- The hosted `web_search` tool (`{"type": "web_search"}`, with its sources included) gives
  `web_search_call` items: each becomes a `HostedToolPart` (the item kept to send back) and
  is reported as a hosted tool call and result when the item is done.
- Usage comes from `response.completed` (`input_tokens` includes `cached_tokens`).
- `response.incomplete` maps to `max_tokens` (or `refusal` for a content filter);
  `response.failed` and `error` events become `ModelError`s (server errors are retried).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

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
from runtime.providers.capabilities import is_reasoning_model
from runtime.providers.openai_chat import OpenAIAdapter, openai_client, reasoning_effort
from runtime.providers.retry import (
    RetryPolicy,
    classify_status,
    read_stream,
)
from runtime.providers.tool_calls import arguments_json, parse_tool_call

PROVIDER = "openai-responses"
_SUMMARY_SEPARATOR = "\n\n"


class StreamTruncated(Exception):
    """The stream ended without `response.completed` / `incomplete` / `failed`."""


class OpenAIResponsesProvider(OpenAIAdapter):
    """`stream()` one model turn from the Responses API (`POST {base_url}/responses`).

    `base_url` includes `/v1`. `reasoning` forces reasoning parameters on or off (default:
    on for o-series, gpt-5 and later, and codex models, or when a thinking budget is set).
    """

    name = PROVIDER
    truncated = StreamTruncated

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        key_env_var: str = "OPENAI_API_KEY",
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        reasoning: bool | None = None,
        label: str = "OpenAI",
    ) -> None:
        client = openai_client(api_key, base_url, "/responses", timeout) if api_key else None
        if client is not None:
            _ = client.responses  # imported on first use: see `sdk_adapter`
        super().__init__(client, retry=retry, key_env_var=key_env_var, label=label)
        self.reasoning = reasoning

    def build_request(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> dict[str, Any]:
        """The Responses request body (without `stream`)."""
        body: dict[str, Any] = {
            "model": settings.model,
            "input": to_responses_input(messages),
            "store": False,
            "max_output_tokens": settings.max_tokens,
        }
        if system:
            body["instructions"] = system
        functions, hosted = split_hosted(tools)
        include: list[str] = []
        if functions or hosted:
            body["tools"] = [
                {
                    "type": "function",
                    "name": t["name"],
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
                    "strict": False,
                }
                for t in functions
            ]
            for name in hosted:
                if name != "web_search":
                    raise ModelError(
                        "invalid_request", f"the Responses API has no hosted tool {name!r}"
                    )
                body["tools"].append({"type": "web_search"})
                include.append("web_search_call.action.sources")
        reasoning = self.reasoning
        if reasoning is None:
            reasoning = bool(settings.thinking_budget) or is_reasoning_model(settings.model)
        if reasoning:
            effort = reasoning_effort(settings.thinking_budget or 8192)
            body["reasoning"] = {"effort": effort, "summary": "auto"}
            include.insert(0, "reasoning.encrypted_content")
        elif settings.temperature is not None:
            body["temperature"] = settings.temperature
        if include:
            body["include"] = include
        return body

    async def _attempt(
        self, body: dict[str, Any], extra: dict[str, Any] | None
    ) -> AsyncGenerator[StreamItem, None]:
        import openai

        stream = await self.client().responses.create(**body, stream=True, extra_body=extra)
        parts: dict[int, Part] = {}
        summaries: dict[int, dict[int, str]] = {}  # output_index → summary_index → text
        call_ordinal: dict[int, int] = {}
        final: Any = None
        async with stream:
            async for event in read_stream(stream, openai.APIError):
                kind = event.type
                if kind == "response.output_item.added":
                    item = event.item
                    if item.type == "function_call":
                        ordinal = len(call_ordinal)
                        call_ordinal[event.output_index] = ordinal
                        yield ToolCallStart(index=ordinal, id=item.call_id, name=item.name)
                elif kind == "response.reasoning_summary_part.added":
                    texts = summaries.setdefault(event.output_index, {})
                    if texts:
                        yield ThinkingDelta(text=_SUMMARY_SEPARATOR)
                    texts[event.summary_index] = ""
                elif kind in (
                    "response.reasoning_summary_text.delta",
                    "response.reasoning_text.delta",
                ):
                    texts = summaries.setdefault(event.output_index, {})
                    key = getattr(event, "summary_index", -1)
                    texts[key] = texts.get(key, "") + event.delta
                    yield ThinkingDelta(text=event.delta)
                elif kind == "response.output_text.delta":
                    yield TextDelta(text=event.delta)
                elif kind == "response.refusal.delta":
                    yield TextDelta(text=event.delta)
                elif kind == "response.function_call_arguments.delta":
                    if event.output_index in call_ordinal:
                        yield ToolCallArgumentsDelta(
                            index=call_ordinal[event.output_index], arguments=event.delta
                        )
                elif kind == "response.output_item.done":
                    part = _item_to_part(event.item, summaries.get(event.output_index, {}))
                    if part is not None:
                        parts[event.output_index] = part
                    if isinstance(part, ToolCallPart):
                        yield ToolCallEnd(index=call_ordinal[event.output_index], call=part)
                    elif isinstance(part, HostedToolPart):
                        # The Responses stream says only "searching" until the item is done,
                        # so the call and its result are both reported here.
                        yield HostedToolCall(id=part.id, name=part.name, input=part.input)
                        yield HostedToolResult(
                            id=part.id, name=part.name, output=part.output, is_error=part.is_error
                        )
                elif kind in ("response.completed", "response.incomplete"):
                    final = event.response
                elif kind == "response.failed":
                    error = event.response.error
                    code = getattr(error, "code", None)
                    raise classify_status(
                        0,
                        f"{self.label} response failed: {getattr(error, 'message', error)}",
                        error_type=code,
                    ).error
                elif kind == "error":
                    raise classify_status(
                        0,
                        f"{self.label} API error in the stream: {event.message}",
                        error_type=event.code,
                    ).error
        if final is None:
            raise StreamTruncated(f"the {self.label} stream ended before response.completed")
        content = [parts[i] for i in sorted(parts)]
        yield AssistantTurn(
            content=content,
            stop_reason=_stop_reason(final, content),
            usage=_usage(final.usage),
            model=final.model,
        )


def _web_search_part(item: Any) -> HostedToolPart:
    """A `web_search_call` item: `input` is what the model searched (or opened), `output` the
    sources it was given (`include: web_search_call.action.sources`)."""
    raw: dict[str, Any] = item.to_dict()
    action: dict[str, Any] = raw.get("action") or {}
    kind = action.get("type")
    if kind == "search":
        queries = action.get("queries") or []
        query = action.get("query") or (queries[0] if queries else "")
        tool_input: dict[str, Any] = {"query": query}
        if len(queries) > 1:
            tool_input["queries"] = queries
        sources = [s.get("url", "") for s in action.get("sources") or []]
        output = "\n".join(sources) or f"searched for {query!r}"
    elif kind == "open_page":
        tool_input = {"url": action.get("url")}
        output = f"opened {action.get('url')}"
    elif kind == "find_in_page":
        tool_input = {"url": action.get("url"), "pattern": action.get("pattern")}
        output = f"searched {action.get('url')} for {action.get('pattern')!r}"
    else:
        tool_input, output = dict(action), "searched"
    failed = raw.get("status") == "failed"
    return HostedToolPart(
        id=str(raw.get("id", "")),
        name="web_search",
        input=tool_input,
        output="web search failed" if failed else output,
        is_error=failed,
        provider=PROVIDER,
        blocks=[raw],
    )


def _item_to_part(item: Any, streamed_summaries: dict[int, str]) -> Part | None:
    if item.type == "web_search_call":
        return _web_search_part(item)
    if item.type == "function_call":
        call_meta = {"item_id": item.id} if item.id else None
        return parse_tool_call(item.call_id, item.name, item.arguments or "", meta=call_meta)
    if item.type == "message":
        pieces = []
        for c in item.content:
            if c.type == "output_text":
                pieces.append(c.text)
            elif c.type == "refusal":
                pieces.append(c.refusal)
        text = "".join(pieces)
        return TextPart(text=text) if text else None
    if item.type == "reasoning":
        summary = [s.text for s in item.summary or []]
        if not summary and streamed_summaries:
            summary = [streamed_summaries[k] for k in sorted(streamed_summaries) if k >= 0]
        raw_content = [c.text for c in getattr(item, "content", None) or []]
        meta: dict[str, Any] = {"id": item.id, "summary": summary}
        if item.encrypted_content:
            meta["encrypted_content"] = item.encrypted_content
        return ThinkingPart(
            thinking=_SUMMARY_SEPARATOR.join(summary) or "".join(raw_content),
            provider=PROVIDER,
            meta=meta,
        )
    return None


def _stop_reason(response: Any, content: list[Part]) -> StopReason:
    if response.status == "incomplete":
        reason = getattr(response.incomplete_details, "reason", None)
        return "refusal" if reason == "content_filter" else "max_tokens"
    if any(isinstance(p, ToolCallPart) for p in content):
        return "tool_use"
    return "end_turn"


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    return Usage(
        input_tokens=raw.input_tokens or 0,
        output_tokens=raw.output_tokens or 0,
        cached_input_tokens=getattr(raw.input_tokens_details, "cached_tokens", 0) or 0,
        reasoning_tokens=getattr(raw.output_tokens_details, "reasoning_tokens", 0) or 0,
    )


# -- conversation mapping ---------------------------------------------------------------------


def to_responses_input(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages → Responses `input` items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            for part in message.content:
                if isinstance(part, ThinkingPart):
                    if part.provider == PROVIDER and part.meta.get("id"):
                        reasoning: dict[str, Any] = {
                            "type": "reasoning",
                            "id": part.meta["id"],
                            "summary": [
                                {"type": "summary_text", "text": s}
                                for s in part.meta.get("summary", [])
                            ],
                        }
                        if part.meta.get("encrypted_content"):
                            reasoning["encrypted_content"] = part.meta["encrypted_content"]
                        items.append(reasoning)
                elif isinstance(part, TextPart) and part.text:
                    items.append({"role": "assistant", "content": part.text})
                elif isinstance(part, HostedToolPart):
                    if part.provider == PROVIDER and part.blocks:
                        items.extend(dict(block) for block in part.blocks)
                    else:  # another provider's search reaches this model as text
                        items.append({"role": "assistant", "content": hosted_tool_text(part)})
                elif isinstance(part, ToolCallPart):
                    call: dict[str, Any] = {
                        "type": "function_call",
                        "call_id": part.id,
                        "name": part.name,
                        "arguments": arguments_json(part),
                    }
                    if part.meta.get("item_id"):
                        call["id"] = part.meta["item_id"]
                    items.append(call)
            continue
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ToolResultPart):
                items.append(
                    {"type": "function_call_output", "call_id": part.call_id, "output": part.output}
                )
            elif isinstance(part, TextPart):
                content.append({"type": "input_text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append(
                    {
                        "type": "input_image",
                        "image_url": f"data:{part.media_type};base64,{part.data}",
                        "detail": "auto",
                    }
                )
        if content:
            items.append({"role": "user", "content": content})
    return items
