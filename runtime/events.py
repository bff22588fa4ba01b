"""Run events: their payload models, secret redaction, and the per-run `EventLog`.

Every event a run produces goes through its `EventLog`, which gives it the next id (1, 2,
3, … per run), redacts secrets from its payload, appends it to the store, and only then
hands it to subscribers. A subscriber reads from any id: stored events first, then live
ones, and its iteration ends when the log is closed. Subscribers never slow the run: each
has a bounded queue, and one that falls too far behind is dropped (`SubscriberDropped`) and
can subscribe again from the last id it saw.

Text and thinking deltas (`emit_delta`) are coalesced: the first delta after a quiet spell
goes out at once, the rest of a burst at most every `coalesce_window` seconds, and any
pending text is written before any other event, so no character is lost or reordered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.ids import utc_now

if TYPE_CHECKING:
    from runtime.store import Store

log = logging.getLogger("agentd.events")

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4
COALESCE_WINDOW = 0.05
ENVELOPE_KEYS = ("id", "runId", "threadId", "type", "ts")


# -- payloads (DESIGN §4) ----------------------------------------------------------------


class _Payload(BaseModel):
    # Extra fields are kept: a payload may carry more than the documented minimum.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, extra="allow")


class RunStartedPayload(_Payload):
    agent: str
    version: int
    # The envelope carries threadId; it is accepted here for callers that pass it.
    thread_id: str | None = Field(None, alias="threadId")
    model: str | None = None
    # Also, only when there are some: `warnings`, the run's settings its model's route does
    # not take (left out of every request), said once (an extra field, so that run_started
    # stays exactly as it was otherwise).


class StatusPayload(_Payload):
    status: Literal["queued", "running", "paused", "resumed"]


class ThinkingPayload(_Payload):
    content: str


class TextPayload(_Payload):
    content: str


class ToolCallPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str
    input: Any = None


class ToolOutputPayload(_Payload):
    call_id: str = Field(alias="callId")
    chunk: str


class ToolResultPayload(_Payload):
    call_id: str = Field(alias="callId")
    tool: str
    output: str
    is_error: bool = Field(False, alias="isError")
    duration_ms: float = Field(0, alias="durationMs")


class FileEditPayload(_Payload):
    path: str
    action: Literal["create", "modify", "delete", "move"]
    diff: str = ""
    moved_from: str | None = Field(None, alias="movedFrom")


class DevUrlPayload(_Payload):
    url: str
    port: int


class InputPayload(_Payload):
    text: str


class UsagePayload(_Payload):
    input_tokens: int = Field(0, alias="inputTokens")
    output_tokens: int = Field(0, alias="outputTokens")
    cached_input_tokens: int = Field(0, alias="cachedInputTokens")
    reasoning_tokens: int = Field(0, alias="reasoningTokens")


class ErrorPayload(_Payload):
    message: str
    code: str


class CompletePayload(_Payload):
    status: Literal["completed", "failed", "cancelled", "interrupted"]
    output: str = ""
    files: list[Any] = Field(default_factory=list)
    dev_url: str | None = Field(None, alias="devUrl")
    usage: UsagePayload = Field(default_factory=UsagePayload)
    iterations: int = 0


PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    "run_started": RunStartedPayload,
    "status": StatusPayload,
    "thinking": ThinkingPayload,
    "text": TextPayload,
    "tool_call": ToolCallPayload,
    "tool_output": ToolOutputPayload,
    "tool_result": ToolResultPayload,
    "file_edit": FileEditPayload,
    "dev_url": DevUrlPayload,
    "input": InputPayload,
    "usage": UsagePayload,
    "error": ErrorPayload,
    "complete": CompletePayload,
}
EVENT_TYPES = tuple(PAYLOAD_MODELS)
TERMINAL_EVENT = "complete"


class EventPayloadError(ValueError):
    """An event of an unknown type, or a payload that does not fit its type's model."""


def validate_payload(type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload checked against its type's model, as a JSON-ready dict (wire names).

    Envelope keys (`id`, `runId`, `type`, `ts`, and `threadId` outside `run_started`) are
    refused; they belong to the event, not its payload."""
    model = PAYLOAD_MODELS.get(type)
    if model is None:
        raise EventPayloadError(f"unknown event type {type!r}; known: {', '.join(EVENT_TYPES)}")
    clashes = [
        k for k in ENVELOPE_KEYS if k in payload and (k, type) != ("threadId", "run_started")
    ]
    if clashes:
        raise EventPayloadError(f"{type} payload must not set envelope field(s) {clashes}")
    try:
        checked = model.model_validate(payload)
    except ValidationError as exc:
        raise EventPayloadError(f"invalid {type} payload: {exc}") from exc
    return checked.model_dump(mode="json", by_alias=True)


class Event(BaseModel):
    """One event of one run. On the wire it is flat: `{id, runId, threadId, type, ts, …}`."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, frozen=True)

    id: int
    run_id: str = Field(alias="runId")
    thread_id: str | None = Field(None, alias="threadId")
    type: str
    ts: str
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "runId": self.run_id,
            "threadId": self.thread_id,
            "type": self.type,
            "ts": self.ts,
            **self.payload,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        payload = {k: v for k, v in data.items() if k not in ENVELOPE_KEYS}
        if data["type"] == "run_started" and "threadId" in data:
            payload["threadId"] = data["threadId"]  # run_started repeats it in its payload
        return cls(
            id=data["id"],
            run_id=data["runId"],
            thread_id=data.get("threadId"),
            type=data["type"],
            ts=data["ts"],
            payload=payload,
        )


# -- redaction -----------------------------------------------------------------------------


class Redactor:
    """Replaces secret values with `[REDACTED]`.

    Values shorter than `min_length` are ignored (redacting "1" everywhere would destroy
    text without protecting anything). A secret's JSON-escaped forms are redacted too, so it
    is caught inside tool output that is itself JSON (with or without `\\uXXXX` escapes)."""

    def __init__(
        self,
        secrets: Iterable[str],
        *,
        min_length: int = MIN_SECRET_LENGTH,
        replacement: str = REDACTED,
    ) -> None:
        values: set[str] = set()
        for secret in secrets:
            if not isinstance(secret, str) or len(secret) < min_length:
                continue
            values.add(secret)
            for ascii_only in (False, True):
                values.add(json.dumps(secret, ensure_ascii=ascii_only)[1:-1])
        # Longest first: at any position the regex takes the longest secret that matches.
        self.secrets: tuple[str, ...] = tuple(sorted(values, key=lambda s: (-len(s), s)))
        self.replacement = replacement
        self._pattern = re.compile("|".join(map(re.escape, self.secrets))) if values else None
        self._prefixes = frozenset(s[:i] for s in self.secrets for i in range(1, len(s)))
        self._longest = max((len(s) for s in self.secrets), default=0)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(self.replacement, text)

    def redact_obj(self, obj: Any) -> Any:
        """A copy of `obj` (dicts, lists, tuples, nested) with every string redacted."""
        if self._pattern is None:
            return obj
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {
                (self.redact(k) if isinstance(k, str) else k): self.redact_obj(v)
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [self.redact_obj(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self.redact_obj(v) for v in obj)
        return obj

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def _hold_from(self, buf: str) -> int:
        """Where the part of `buf` that might still become a secret begins."""
        cut = len(buf)
        for start in range(max(0, len(buf) - self._longest + 1), len(buf)):
            if buf[start:] in self._prefixes:
                cut = start
                break
        if self._pattern is not None:
            for match in self._pattern.finditer(buf):
                if match.start() >= cut:
                    break
                if match.end() > cut:
                    # A complete secret that a longer one might extend: keep it whole.
                    cut = match.start()
                    break
        return cut


class StreamRedactor:
    """Redacts a text that arrives in chunks, catching secrets split across chunks.

    `feed` returns the redacted text that can safely go out now; it holds back only the tail
    that could be the start of a secret. `flush` returns the rest. The concatenated outputs
    equal `redactor.redact(whole text)`."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._buf = ""

    @property
    def pending(self) -> str:
        """Raw text held back (not yet redacted or returned)."""
        return self._buf

    def feed(self, chunk: str) -> str:
        if not self._redactor:
            return chunk
        buf = self._buf + chunk
        cut = self._redactor._hold_from(buf)
        self._buf = buf[cut:]
        return self._redactor.redact(buf[:cut])

    def flush(self) -> str:
        buf, self._buf = self._buf, ""
        return self._redactor.redact(buf)


# -- the event log ---------------------------------------------------------------------


class SubscriberDropped(Exception):
    """The subscriber fell more than `queue_size` events behind and was cut off. Subscribe
    again with `after=last_id` to continue without gaps."""

    def __init__(self, run_id: str, last_id: int) -> None:
        super().__init__(
            f"subscriber of run {run_id} fell too far behind after event {last_id}; "
            f"subscribe again from {last_id}"
        )
        self.run_id = run_id
        self.last_id = last_id


class EventLogClosed(RuntimeError):
    """An emit after `close()`."""


# Events after which a streamed text/thinking block is over: text held back by the stream
# redactor (a possible secret prefix) is released when one of these is emitted.
_BLOCK_BOUNDARIES = frozenset({"run_started", "tool_call", "usage", "error", "complete"})


class Subscription:
    """An iterator over a run's events after some id; see `EventLog.subscribe`.

    `last_id` is the id of the last event it returned (resubscribe from there)."""

    def __init__(self, log: EventLog, after: int) -> None:
        self._log = log
        self.last_id = after
        self._queue: deque[Event] = deque()
        self._limit = log.queue_size
        self._waiter: asyncio.Future[None] | None = None
        self._dropped = False
        self._ended = log.closed
        self._backlog: deque[Event] = deque(log._memory_after(after))
        # Ids between `after` and the first one kept in memory must come from the store.
        self._store_gap = (after, log._memory_floor) if after < log._memory_floor else None

    @property
    def dropped(self) -> bool:
        return self._dropped

    def _offer(self, event: Event) -> None:
        if self._dropped or self._ended:
            return
        if len(self._queue) >= self._limit:
            self._dropped = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            event = await self._next_candidate()
            if event is None:
                self.aclose_now()
                raise StopAsyncIteration
            if event.id > self.last_id:
                self.last_id = event.id
                return event

    async def _next_candidate(self) -> Event | None:
        if self._store_gap is not None:
            after, upto = self._store_gap
            self._store_gap = None
            store = self._log._store
            if store is not None:
                stored = await store.events_after(self._log.run_id, after, limit=upto - after)
                self._backlog.extendleft(reversed(stored))
        if self._backlog:
            return self._backlog.popleft()
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._dropped:
                self.aclose_now()
                raise SubscriberDropped(self._log.run_id, self.last_id)
            if self._ended:
                return None
            # A bare future rather than an anyio.Event: this is the hot path of fan-out.
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def aclose_now(self) -> None:
        self._log._subscribers.discard(self)
        self._ended = True
        self._queue.clear()

    async def aclose(self) -> None:
        self.aclose_now()


class EventLog:
    """The events of one run: ids, redaction, storage before fan-out, and subscribers.

    `emit` may be called from several tasks at once; ids are assigned and stored in the
    order the calls take the log's lock. An emit never waits on a subscriber."""

    def __init__(
        self,
        run_id: str,
        thread_id: str | None,
        store: Store | None,
        *,
        redactor: Redactor | None = None,
        start_id: int = 0,
        queue_size: int = 1000,
        coalesce_window: float = COALESCE_WINDOW,
        memory_limit: int | None = 10_000,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.run_id = run_id
        self.thread_id = thread_id
        self.queue_size = queue_size
        self.coalesce_window = coalesce_window
        self._store = store
        self._redactor = redactor if redactor else None
        # Without a store there is nowhere to replay trimmed events from: keep them all.
        self._memory_limit = memory_limit if store is not None else None
        self._events: list[Event] = []
        self._memory_floor = start_id  # ids <= this are not in memory (store only)
        self._last_id = start_id
        self._closed = False
        self._lock = anyio.Lock()
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        # Delta coalescing state.
        self._pending_type: str | None = None
        self._pending: list[str] = []
        self._streams: dict[str, StreamRedactor] = {}
        self._last_delta_flush = float("-inf")
        self._timer: asyncio.Task[None] | None = None

    # -- reading -----------------------------------------------------------------------

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def events(self) -> list[Event]:
        """The events kept in memory (all of them unless `memory_limit` trimmed the oldest,
        which the store still has). Do not mutate."""
        return self._events

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, after: int = 0) -> Subscription:
        """Iterate over the events with id > `after`: stored ones, then live ones, ending
        after `close()`. Raises `SubscriberDropped` from the iteration if it falls more than
        `queue_size` events behind.

        Taking the in-memory snapshot and registering for live events happen in one step
        (no await in between), so no event is missed or seen twice."""
        subscription = Subscription(self, max(0, after))
        if not self._closed:
            self._subscribers.add(subscription)
        return subscription

    @staticmethod
    async def replay(store: Store, run_id: str, after: int = 0) -> list[Event]:
        """The stored events of a run with id > `after` (for runs no longer in memory)."""
        return await store.events_after(run_id, after)

    def _memory_after(self, after: int) -> list[Event]:
        start = max(0, after - self._memory_floor)
        return self._events[start:]

    # -- writing -----------------------------------------------------------------------

    async def emit(self, type: str, **payload: Any) -> Event:
        """Append one event: next id, redact, store (awaited), then fan out."""
        async with self._lock:
            await self._flush_pending(release_held=type in _BLOCK_BOUNDARIES)
            return await self._append(type, payload)

    async def emit_delta(self, type: Literal["text", "thinking"], content: str) -> None:
        """A streamed text/thinking fragment; coalesced with its neighbours."""
        if type not in ("text", "thinking"):
            raise EventPayloadError(f"emit_delta takes text or thinking, not {type!r}")
        if not content:
            return
        async with self._lock:
            if self._closed:
                raise EventLogClosed(f"the event log of run {self.run_id} is closed")
            if self._pending_type is not None and self._pending_type != type:
                await self._flush_pending(release_held=True)
            if self._redactor is not None:
                stream = self._streams.get(type)
                if stream is None:
                    stream = self._streams[type] = self._redactor.stream()
                content = stream.feed(content)
            self._pending_type = type
            if content:
                self._pending.append(content)
            now = time.monotonic()
            if now - self._last_delta_flush >= self.coalesce_window:
                await self._flush_pending(release_held=False)
            elif self._timer is None:
                delay = self._last_delta_flush + self.coalesce_window - now
                self._timer = asyncio.get_running_loop().create_task(self._flush_later(delay))

    async def flush(self) -> None:
        """Write any coalesced text/thinking now (including text held back as a possible
        secret prefix)."""
        async with self._lock:
            await self._flush_pending(release_held=True)

    async def close(self) -> None:
        """The run is over: write pending deltas, end every subscription once it has read
        everything. Idempotent. Shielded: a cancelled caller still ends its subscribers, and
        they end even if writing the last deltas fails (that error is raised)."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                if self._closed:
                    return
                try:
                    await self._flush_pending(release_held=True)
                finally:
                    self._closed = True
                    timer, self._timer = self._timer, None
                    for subscription in list(self._subscribers):
                        subscription._end()
                    self._subscribers.clear()
            if timer is not None and timer is not asyncio.current_task():
                timer.cancel()
                await asyncio.wait([timer])

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        async with self._lock:
            if self._timer is asyncio.current_task():
                self._timer = None
            if self._closed:
                return
            try:
                await self._flush_pending(release_held=False)
            except Exception:
                # The text stays pending; the next emit or close writes it (or raises).
                log.exception("run %s: writing coalesced deltas failed", self.run_id)

    async def _flush_pending(self, *, release_held: bool) -> None:
        """Write the pending delta text as one event. Caller holds the lock."""
        type = self._pending_type
        if type is None:
            return
        if release_held:
            stream = self._streams.pop(type, None)
            if stream is not None:
                held = stream.flush()
                if held:
                    self._pending.append(held)
        if self._pending:
            content = "".join(self._pending)
            await self._append(type, {"content": content})
            self._pending.clear()
            self._last_delta_flush = time.monotonic()
        if release_held:
            self._pending_type = None

    async def _append(self, type: str, payload: dict[str, Any]) -> Event:
        """Caller holds the lock."""
        if self._closed:
            raise EventLogClosed(f"the event log of run {self.run_id} is closed")
        if type == "run_started":
            # The payload repeats the thread id (DESIGN §4); it must match the envelope's.
            payload = {"threadId": self.thread_id, **payload}
            if payload["threadId"] != self.thread_id:
                raise EventPayloadError(
                    f"run_started threadId {payload['threadId']!r} differs from the log's "
                    f"{self.thread_id!r}"
                )
        body = validate_payload(type, payload)
        if self._redactor is not None:
            body = self._redactor.redact_obj(body)
        event = Event(
            id=self._last_id + 1,
            run_id=self.run_id,
            thread_id=self.thread_id,
            type=type,
            ts=utc_now(),
            payload=body,
        )
        # Once the store has the event, memory and subscribers must get it too, even if
        # the emitting task is being cancelled: otherwise live and replayed streams differ.
        with anyio.CancelScope(shield=True):
            if self._store is not None:
                await self._store.append_event(event)
            self._last_id = event.id
            self._events.append(event)
            self._trim_memory()
            for subscription in self._subscribers:
                subscription._offer(event)
        return event

    def _trim_memory(self) -> None:
        limit = self._memory_limit
        if limit is None or len(self._events) <= limit + limit // 4:
            return
        drop = len(self._events) - limit
        self._memory_floor = self._events[drop - 1].id
        del self._events[:drop]


__all__ = [
    "EVENT_TYPES",
    "PAYLOAD_MODELS",
    "REDACTED",
    "Event",
    "EventLog",
    "EventLogClosed",
    "EventPayloadError",
    "Redactor",
    "StreamRedactor",
    "SubscriberDropped",
    "Subscription",
    "validate_payload",
]
