"""Record model turns to a cassette and replay them offline.

A cassette is a JSONL file, one model turn per line (blank lines and lines starting with
`#` are ignored, so a cassette can carry comments)::

    # agentd cassette v1: one model turn per line
    {"turn": 1, "request": {"hash": "…", "system": "5d41402a", "tools": ["exec_command"],
      "messages": ["user:9b2e61c0"]}, "model": "claude-sonnet-4-6", "stop_reason": "tool_use",
      "usage": {"inputTokens": 812, "outputTokens": 40, "cachedInputTokens": 0,
      "reasoningTokens": 0},
      "content": [{"type": "text", "text": "Let me look.", "stream": ["Let me", " look."]},
                  {"type": "tool_call", "id": "toolu_1", "name": "exec_command",
                   "arguments": {"cmd": "ls"}}]}

(each turn is on one line in a real file). `content` holds the turn's parts in the format of
`runtime.messages` — it is the truth; the optional `stream` on a text, thinking or tool-call
part lists the deltas as the model sent them. After a hand edit that no longer matches
`stream`, replay splits the new text into word-sized deltas instead, so editing a cassette
only means editing `content`.

**The request hash** identifies the conversation a turn answered: SHA-256 over the canonical
JSON (sorted keys, no spaces, UTF-8) of `{"system", "tools", "messages"}` where `system` is
the system prompt (`""` when none), `tools` the sorted tool names, and each message becomes
- user: `{"role": "user", "content": [{"text": …} | {"image": <sha256 of the data>} |
  {"tool_result": <call id>, "is_error": …}]}`,
- assistant: `{"role": "assistant", "tool_calls": [<call ids>]}`,
- tool: `{"role": "tool", "results": [{"call_id": …, "is_error": …}]}`.

What the model produced (assistant text, thinking, arguments) is left out — the cassette
itself supplies it, and leaving it out keeps hand edits from invalidating later turns — and
so are tool outputs, which carry run-specific noise (wall times, paths, pids). The `request`
object also stores short per-part digests (`system`, `messages`) and the tool names, so a
divergence can be explained: `ReplayProvider(path, strict=True)` raises
`ModelError(code="divergence")` naming the turn, the cassette line and what differed (message
count, which message, the system prompt, the tool set). A turn whose `request` is missing or
`null` matches any conversation. With `strict=False` the next turn is served regardless.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import TypeAdapter, ValidationError

from runtime.messages import (
    ImagePart,
    Message,
    Part,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)
from runtime.providers.base import (
    AssistantTurn,
    ModelError,
    ModelSettings,
    StreamItem,
    StreamRestarted,
    TextDelta,
    ThinkingDelta,
    ToolCallArgumentsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from runtime.providers.tool_calls import arguments_json

CASSETTE_HEADER = "# agentd cassette v1: one model turn per line (see runtime/providers/replay.py)"
_PART: TypeAdapter[Any] = TypeAdapter(Part)
_WORDS = re.compile(r"\S+\s*|\s+")
# What a person can do about a divergence (the registry reads AGENTD_REPLAY_STRICT).
STRICT_HINT = " (AGENTD_REPLAY_STRICT=0 serves the recorded turns in order regardless)"


# -- the request fingerprint -----------------------------------------------------------------


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def _canonical_message(message: Message) -> dict[str, Any]:
    if message.role == "assistant":
        return {"role": "assistant", "tool_calls": [c.id for c in message.tool_calls]}
    if message.role == "tool":
        results = [{"call_id": r.call_id, "is_error": r.is_error} for r in message.tool_results]
        return {"role": "tool", "results": results}
    content: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"text": part.text})
        elif isinstance(part, ImagePart):
            content.append({"image": hashlib.sha256(part.data.encode()).hexdigest()})
        elif isinstance(part, ToolResultPart):
            content.append({"tool_result": part.call_id, "is_error": part.is_error})
    return {"role": "user", "content": content}


def request_fingerprint(
    system: str | None, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The `request` object stored with a turn: the hash and the digests that explain it."""
    canonical_messages = [_canonical_message(m) for m in messages]
    tool_names = sorted(str(t.get("name", "")) for t in tools)
    full = {"system": system or "", "tools": tool_names, "messages": canonical_messages}
    return {
        "hash": _digest(full),
        "system": _digest(system or "")[:8],
        "tools": tool_names,
        "messages": [f"{m['role']}:{_digest(m)[:8]}" for m in canonical_messages],
    }


def request_hash(
    system: str | None, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
) -> str:
    return str(request_fingerprint(system, messages, tools)["hash"])


# -- cassette lines --------------------------------------------------------------------------


@dataclass
class CassetteTurn:
    number: int  # 1-based position among the cassette's turns
    line: int  # line number in the file
    request: dict[str, Any] | None
    content: list[Part]
    streams: list[list[str] | None]  # recorded deltas per content part
    stop_reason: str
    usage: Usage
    model: str | None

    @property
    def hash(self) -> str | None:
        return None if self.request is None else self.request.get("hash")


def turn_to_line(
    number: int,
    request: dict[str, Any],
    turn: AssistantTurn,
    streams: Sequence[list[str] | None],
) -> str:
    content: list[dict[str, Any]] = []
    for part, chunks in zip(turn.content, streams, strict=False):
        entry = part.model_dump(mode="json", exclude_defaults=True)
        entry["type"] = part.type
        if chunks is not None and len(chunks) > 1:
            entry["stream"] = chunks
        content.append(entry)
    line = {
        "turn": number,
        "request": request,
        "model": turn.model,
        "stop_reason": turn.stop_reason,
        "usage": turn.usage.model_dump(by_alias=True),
        "content": content,
    }
    return json.dumps(line, ensure_ascii=False)


def parse_cassette(text: str, source: str = "cassette") -> list[CassetteTurn]:
    """Parse cassette text; ModelError(`bad_cassette`) names the bad line."""
    turns: list[CassetteTurn] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
            if not isinstance(data, dict):
                raise ValueError("a turn must be a JSON object")
            parts: list[Part] = []
            streams: list[list[str] | None] = []
            for entry in data.get("content") or []:
                entry = dict(entry)
                chunks = entry.pop("stream", None)
                parts.append(_PART.validate_python(entry))
                streams.append([str(c) for c in chunks] if isinstance(chunks, list) else None)
            usage = Usage.model_validate(data.get("usage") or {})
            request = data.get("request")
            if request is not None and not isinstance(request, dict):
                raise ValueError('"request" must be an object or null')
        except (ValueError, ValidationError) as exc:
            raise ModelError("bad_cassette", f"{source} line {lineno}: {exc}") from exc
        turns.append(
            CassetteTurn(
                number=len(turns) + 1,
                line=lineno,
                request=request,
                content=parts,
                streams=streams,
                stop_reason=str(data.get("stop_reason") or "end_turn"),
                usage=usage,
                model=data.get("model"),
            )
        )
    return turns


# -- replay ----------------------------------------------------------------------------------


class ReplayProvider:
    """Serves model turns from a cassette, streaming deltas as they were recorded.

    Turns are served in order; a conversation that matches a later (or earlier) turn's hash
    jumps there, so several runs (e.g. the runs of one thread) can share a cassette. See the
    module docstring for divergence handling.
    """

    name = "replay"

    def __init__(self, path: str | Path, *, strict: bool = True) -> None:
        self.path = Path(path)
        self.strict = strict
        self._turns: list[CassetteTurn] | None = None
        self._cursor = 0

    async def aclose(self) -> None:
        return None

    async def load(self) -> list[CassetteTurn]:
        if self._turns is None:
            try:
                text = await anyio.Path(self.path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ModelError(
                    "bad_cassette", f"cannot read cassette {self.path}: {exc.strerror or exc}"
                ) from exc
            self._turns = parse_cassette(text, str(self.path))
        return self._turns

    async def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncGenerator[StreamItem, None]:
        turns = await self.load()
        fingerprint = request_fingerprint(system, messages, tools)
        turn = self._select(turns, fingerprint, messages)
        async for item in _play(turn):
            yield item

    def _select(
        self, turns: list[CassetteTurn], fingerprint: dict[str, Any], messages: list[Message]
    ) -> CassetteTurn:
        wanted = fingerprint["hash"]
        expected = turns[self._cursor] if self._cursor < len(turns) else None
        chosen: CassetteTurn | None = None
        if expected is not None and expected.hash in (None, wanted):
            chosen = expected
        else:
            later = [t for t in turns[self._cursor :] if t.hash == wanted]
            earlier = [t for t in turns[: self._cursor] if t.hash == wanted]
            candidates = later or earlier
            if candidates:
                chosen = candidates[0]
            elif not self.strict and expected is not None:
                chosen = expected
        if chosen is None:
            raise ModelError("divergence", self._explain(turns, expected, fingerprint, messages))
        self._cursor = chosen.number  # the next turn in order
        return chosen

    def _explain(
        self,
        turns: list[CassetteTurn],
        expected: CassetteTurn | None,
        fingerprint: dict[str, Any],
        messages: list[Message],
    ) -> str:
        turn_no = self._cursor + 1
        if expected is None:
            return (
                f"replay diverged at model turn {turn_no}: the cassette {self.path} has only "
                f"{len(turns)} turn(s) and none matches this conversation"
            )  # no turn is left to continue with: AGENTD_REPLAY_STRICT=0 would not help
        where = f"replay diverged at model turn {turn_no} ({self.path} line {expected.line})"
        recorded = expected.request or {}
        reasons: list[str] = []
        if recorded.get("system") not in (None, fingerprint["system"]):
            reasons.append("the system prompt differs")
        if "tools" in recorded and recorded["tools"] != fingerprint["tools"]:
            reasons.append(
                f"the tools differ (recorded {recorded['tools']}, now {fingerprint['tools']})"
            )
        old = recorded.get("messages")
        new = fingerprint["messages"]
        if isinstance(old, list):
            for i, (a, b) in enumerate(zip(old, new, strict=False)):
                if a != b:
                    reasons.append(f"message {i + 1} {_describe(messages[i])} differs")
                    break
            if len(old) != len(new):
                reasons.append(
                    f"the conversation has {len(new)} message(s), the recording {len(old)}"
                )
        if not reasons:
            reasons.append("the request hash differs")
        return f"{where}: " + "; ".join(reasons) + STRICT_HINT


def _describe(message: Message) -> str:
    if message.role == "user" and message.text:
        preview = message.text if len(message.text) <= 60 else message.text[:57] + "..."
        return f"(user: {preview!r})"
    if message.role == "tool":
        return f"(tool results for {', '.join(r.call_id for r in message.tool_results)})"
    return f"({message.role})"


def _chunks(recorded: list[str] | None, whole: str) -> list[str]:
    if recorded is not None and "".join(recorded) == whole:
        return recorded
    return _WORDS.findall(whole) or [whole]


def _argument_chunks(recorded: list[str] | None, call: ToolCallPart) -> list[str]:
    if recorded is not None:
        joined = "".join(recorded)
        if call.raw_arguments is not None:
            if joined == call.raw_arguments:
                return recorded
        else:
            try:
                if json.loads(joined or "{}") == call.arguments:
                    return recorded
            except ValueError:
                pass
    return [arguments_json(call)]


async def _play(turn: CassetteTurn) -> AsyncGenerator[StreamItem, None]:
    ordinal = 0
    for part, recorded in zip(turn.content, turn.streams, strict=True):
        if isinstance(part, ThinkingPart):
            if part.thinking:
                for chunk in _chunks(recorded, part.thinking):
                    await anyio.lowlevel.checkpoint()
                    yield ThinkingDelta(text=chunk)
        elif isinstance(part, TextPart):
            for chunk in _chunks(recorded, part.text):
                await anyio.lowlevel.checkpoint()
                yield TextDelta(text=chunk)
        elif isinstance(part, ToolCallPart):
            yield ToolCallStart(index=ordinal, id=part.id, name=part.name)
            for chunk in _argument_chunks(recorded, part):
                await anyio.lowlevel.checkpoint()
                yield ToolCallArgumentsDelta(index=ordinal, arguments=chunk)
            yield ToolCallEnd(index=ordinal, call=part)
            ordinal += 1
    yield AssistantTurn(
        content=list(turn.content),
        stop_reason=turn.stop_reason,
        usage=turn.usage,
        model=turn.model,
    )


# -- recording -------------------------------------------------------------------------------


class RecordingProvider:
    """Wraps a provider and appends every completed turn to a cassette.

    The file is started afresh (with a comment header) on the first turn unless `append` is
    true, in which case turns are numbered on from those already in it. Failed turns are not
    recorded; a restarted stream records only the attempt that completed.
    """

    def __init__(self, inner: Any, path: str | Path, *, append: bool = False) -> None:
        self.inner = inner
        self.path = Path(path)
        self.append = append
        self.name = getattr(inner, "name", "recording")
        self._turns_written: int | None = None
        self._lock = anyio.Lock()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncGenerator[StreamItem, None]:
        request = request_fingerprint(system, messages, tools)
        texts: list[str] = []
        thinking: list[str] = []
        arguments: dict[int, list[str]] = {}
        inner = self.inner.stream(system, messages, tools, settings)
        async with aclosing(inner):
            async for item in inner:
                if isinstance(item, StreamRestarted):
                    texts, thinking, arguments = [], [], {}
                elif isinstance(item, TextDelta):
                    texts.append(item.text)
                elif isinstance(item, ThinkingDelta):
                    thinking.append(item.text)
                elif isinstance(item, ToolCallArgumentsDelta):
                    arguments.setdefault(item.index, []).append(item.arguments)
                elif isinstance(item, AssistantTurn):
                    streams = _assign_streams(item.content, texts, thinking, arguments)
                    await self._write(request, item, streams)
                yield item

    async def _write(
        self, request: dict[str, Any], turn: AssistantTurn, streams: list[list[str] | None]
    ) -> None:
        async with self._lock:
            if self._turns_written is None:
                self._turns_written = 0
                existing = ""
                if self.append and await anyio.Path(self.path).exists():
                    existing = await anyio.Path(self.path).read_text(encoding="utf-8")
                if existing.strip():
                    self._turns_written = len(parse_cassette(existing, str(self.path)))
                else:
                    await anyio.Path(self.path).write_text(CASSETTE_HEADER + "\n", encoding="utf-8")
            self._turns_written += 1
            line = turn_to_line(self._turns_written, request, turn, streams)
            await anyio.to_thread.run_sync(_append_line, self.path, line)


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _assign_streams(
    content: list[Part],
    texts: list[str],
    thinking: list[str],
    arguments: dict[int, list[str]],
) -> list[list[str] | None]:
    """Attribute the deltas seen to the parts they built (None where they do not add up)."""
    queues = {"text": list(texts), "thinking": list(thinking)}
    streams: list[list[str] | None] = []
    ordinal = 0
    for part in content:
        if isinstance(part, TextPart | ThinkingPart) and not getattr(part, "redacted", False):
            whole = part.text if isinstance(part, TextPart) else part.thinking
            queue = queues[part.type]
            taken: list[str] = []
            while queue and len("".join(taken)) < len(whole):
                taken.append(queue.pop(0))
            streams.append(taken if "".join(taken) == whole and taken else None)
        elif isinstance(part, ToolCallPart):
            streams.append(arguments.get(ordinal))
            ordinal += 1
        else:
            streams.append(None)
    return streams
