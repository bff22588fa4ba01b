"""`AsyncClient`: the client's one implementation (aiohttp on asyncio), its resources, and
the Server-Sent Events parser its streams use."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import anyio

from runtime.client.errors import (
    AgentdError,
    APIError,
    NetworkError,
    acted_on,
    error_for_status,
    is_retryable,
    retry_after_of,
)
from runtime.event_stream import SSEEvent, parse_sse, sse_lines
from runtime.events import TERMINAL_EVENT, Event
from runtime.providers.retry import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:7777"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
# The daemon sends a `: ping` comment on a quiet event stream every `sse_ping_interval`
# (15 s by default); three missed pings mean the connection is dead (a half-open TCP
# connection never errors by itself), and the stream reconnects.
DEFAULT_STREAM_READ_TIMEOUT = 45.0
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Agent fields the daemon reports that are not part of a definition (see `agents.update`).
_AGENT_RECORD_FIELDS = ("id", "version", "createdAt", "updatedAt")
_REDACTED = "[REDACTED]"

T = TypeVar("T")


@dataclass
class Page:
    """One page of a list: its items (`data`), and the cursor of the next page if any.
    Iterating a page iterates its items."""

    data: list[dict[str, Any]]
    has_more: bool = False
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@dataclass
class ClientConfig:
    """Where the daemon is and how to talk to it; arguments win over the environment
    (`AGENTD_URL`, `AGENTD_TOKEN`, `AGENTD_TIMEOUT`, `AGENTD_MAX_RETRIES`)."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base_delay=0.5, max_delay=8))
    stream_read_timeout: float = DEFAULT_STREAM_READ_TIMEOUT

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        stream_read_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        env = os.environ if env is None else env
        resolved_timeout = timeout if timeout is not None else _env_number(env, "AGENTD_TIMEOUT")
        retries = max_retries if max_retries is not None else _env_number(env, "AGENTD_MAX_RETRIES")
        config = cls(
            url=(url or env.get("AGENTD_URL") or DEFAULT_URL).rstrip("/"),
            token=token or env.get("AGENTD_TOKEN") or None,
            timeout=DEFAULT_TIMEOUT if resolved_timeout is None else float(resolved_timeout),
            max_retries=DEFAULT_MAX_RETRIES if retries is None else int(retries),
        )
        if stream_read_timeout is not None:
            config.stream_read_timeout = float(stream_read_timeout)
        if retry_policy is not None:
            config.retry = retry_policy
        if config.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {config.timeout}")
        if config.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {config.max_retries}")
        if config.stream_read_timeout <= 0:
            raise ValueError(
                f"stream_read_timeout must be > 0 seconds, got {config.stream_read_timeout}"
            )
        return config


def _env_number(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


# -- the async client ------------------------------------------------------------------------


class AsyncClient:
    """`async with AsyncClient(url, token) as agentd:` — one connection pool to one daemon.

    `url` defaults to `AGENTD_URL` (else http://127.0.0.1:7777), `token` to `AGENTD_TOKEN`,
    `timeout` (seconds per request; streams have none) to `AGENTD_TIMEOUT` or 60, and
    `max_retries` (after the first attempt) to `AGENTD_MAX_RETRIES` or 2. `retry_policy`
    sets the backoff (`RetryPolicy.base_delay`, `max_delay`, `jitter`, and `sleep` for
    tests); its `max_attempts` is not used (`max_retries` is). `stream_read_timeout`
    (default 45: three of the daemon's 15 s pings) is how long an event stream may
    receive nothing, not even a ping, before it counts as dropped and reconnects; keep
    it above the daemon's `--sse-ping-interval`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        stream_read_timeout: float | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(
            url,
            token,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            stream_read_timeout=stream_read_timeout,
        )
        self.base_url = self.config.url
        headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
        self._session = aiohttp.ClientSession(headers=headers)
        self._request_timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        # A stream lasts as long as its run, so it has no total; the daemon pings it while
        # it is quiet, so a read that waits longer than a few pings means a dead connection.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.timeout,
            sock_read=self.config.stream_read_timeout,
        )
        self.agents = AsyncAgents(self)
        self.runs = AsyncRuns(self)
        self.threads = AsyncThreads(self)
        self.tools = AsyncTools(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    # -- plumbing ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One API call with the retry policy; returns the envelope's `data`."""
        envelope = await self.request_envelope(
            method, path, body=body, params=params, idempotent=idempotent
        )
        if not isinstance(envelope, dict) or "data" not in envelope:
            # Every success of the API is `{"data": …}`; anything else (a proxy's page, a
            # different service on the port) must not pass for a result.
            raise APIError(
                200, "bad_response", f"{method} {path}: the answer has no `data` envelope"
            )
        return envelope["data"]

    async def request_envelope(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Like `request`, but the whole JSON body (`data` and `meta`)."""
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        return await self.retrying(
            lambda: self._send(method, path, body, query), safe_to_repeat=safe
        )

    async def retrying(self, call: Callable[[], Awaitable[T]], *, safe_to_repeat: bool) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except AgentdError as exc:
                retry = (
                    is_retryable(exc)
                    and attempt <= self.config.max_retries
                    and (safe_to_repeat or not acted_on(exc))
                )
                if not retry:
                    raise
                delay = self.config.retry.backoff(attempt, retry_after_of(exc))
            await self.pause_before_retry(delay)

    async def pause_before_retry(self, seconds: float) -> None:
        await (self.config.retry.sleep or anyio.sleep)(seconds)

    async def _send(self, method: str, path: str, body: Any, query: dict[str, str]) -> Any:
        kwargs: dict[str, Any] = {"params": query, "timeout": self._request_timeout}
        if body is not None:
            kwargs["json"] = body
        try:
            async with self._session.request(method, self.base_url + path, **kwargs) as response:
                return await _json_or_raise(response)
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(f"{method} {path} failed: {_describe(exc)}") from exc

    async def response_headers(self, method: str, path: str, *, body: Any = None) -> dict[str, str]:
        """Send one request and return its response's headers without reading the body
        (which is then dropped: a streamed `POST /v1/run` goes on without its client)."""
        try:
            async with self._session.request(
                method, self.base_url + path, json=body, timeout=self._request_timeout
            ) as response:
                if response.status >= 400:
                    await _json_or_raise(response)
                return dict(response.headers)
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(f"{method} {path} failed: {_describe(exc)}") from exc

    def _unreachable(self, exc: BaseException) -> NetworkError:
        return NetworkError(
            f"cannot reach the daemon at {self.base_url} ({_describe(exc)}); is `agentd serve` "
            "running at that URL?",
            sent=False,
        )

    async def sse(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[SSEEvent, None]:
        """One SSE response, frame by frame (no retries: `runs.stream` resumes)."""
        kwargs: dict[str, Any] = {
            "params": {k: str(v) for k, v in (params or {}).items() if v is not None},
            "timeout": self._stream_timeout,
            "headers": dict(headers or {}),
        }
        if body is not None:
            kwargs["json"] = body
        try:
            async with self._session.request(method, self.base_url + path, **kwargs) as response:
                if response.status >= 400 or not response.content_type.startswith(
                    "text/event-stream"
                ):
                    await _json_or_raise(response)
                    return  # a 2xx that is not a stream (204: nothing more to send)
                async for frame in parse_sse(sse_lines(response)):
                    yield frame
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NetworkError(f"the stream of {path} broke: {_describe(exc)}") from exc


def _event_of(frame: SSEEvent, run_id: str) -> Event:
    try:
        return Event.from_dict(frame.json())
    except (ValueError, KeyError, TypeError) as exc:  # not JSON, or JSON but not an event
        raise APIError(
            200, "bad_response", f"run {run_id}: an event frame that is not an event: {exc}"
        ) from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _json_or_raise(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()

    def not_agentds() -> AgentdError:
        # Not agentd's error envelope (not JSON, or JSON without it): another server
        # answered (a proxy, or another program at that URL).
        return error_for_status(
            response.status,
            "bad_response",
            text[:200],
            request_id=response.headers.get("X-Request-ID"),
            headers=response.headers,
        )

    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError:
        if response.status >= 400:
            raise not_agentds() from None
        raise APIError(response.status, "bad_response", f"not JSON: {text[:200]}") from None
    if response.status >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            raise not_agentds()
        raise error_for_status(
            response.status,
            error["code"],
            str(error.get("message", text[:200])),
            request_id=error.get("requestId") or response.headers.get("X-Request-ID"),
            details=error.get("details"),
            headers=response.headers,
        )
    return body


def _page(envelope: Any) -> Page:
    meta = envelope.get("meta") or {}
    return Page(
        data=list(envelope.get("data") or []),
        has_more=bool(meta.get("hasMore")),
        next_cursor=meta.get("nextCursor"),
    )


async def _every_item(
    fetch_page: Callable[[str | None], Awaitable[Page]],
) -> AsyncGenerator[dict[str, Any], None]:
    """The items of every page `fetch_page(cursor)` returns, following `next_cursor`."""
    cursor: str | None = None
    while True:
        page = await fetch_page(cursor)
        for item in page.data:
            yield item
        if not page.has_more or not page.next_cursor:
            return
        cursor = page.next_cursor


class AsyncAgents:
    """`/v1/agents`: versioned agent definitions."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upsert(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace an agent; a changed definition is a new version.
        → `{id, slug, action, version, endpoint}`."""
        result: dict[str, Any] = await self._client.request(
            "POST", "/v1/agents", body=dict(spec), idempotent=True
        )
        return result

    async def get(self, slug: str, *, version: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.request(
            "GET", f"/v1/agents/{slug}", params={"version": version}
        )
        return result

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        """One page of the agents; pass the page's `next_cursor` as `cursor` for the next."""
        params = {"limit": limit, "cursor": cursor}
        return _page(await self._client.request_envelope("GET", "/v1/agents", params=params))

    def list_all(self, *, page_size: int = 100) -> AsyncGenerator[dict[str, Any], None]:
        """Every agent, fetching pages as it goes."""
        return _every_item(lambda cursor: self.list(limit=page_size, cursor=cursor))

    async def update(self, slug: str, **changes: Any) -> dict[str, Any]:
        """Change some fields of an agent's definition (wire names, e.g.
        `systemPrompt="…"`), keeping the others: a new version. The current definition is
        read and sent back with the changes; a secret the daemon only shows as
        `[REDACTED]` must be given again in `changes`, or this raises `ValueError` rather
        than overwrite it."""
        current = await self.get(slug)
        spec = {k: v for k, v in current.items() if k not in _AGENT_RECORD_FIELDS}
        spec.update(changes)
        if _contains(spec, _REDACTED):
            raise ValueError(
                f"agent {slug!r} has secret values the daemon does not reveal; pass them "
                "again in the update (e.g. env={...} or model={...}) so they are not lost"
            )
        return await self.upsert(spec)

    async def delete(self, slug: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.request("DELETE", f"/v1/agents/{slug}")
        return result

    async def versions(
        self, slug: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """One page of the agent's versions."""
        return _page(
            await self._client.request_envelope(
                "GET", f"/v1/agents/{slug}/versions", params={"limit": limit, "cursor": cursor}
            )
        )

    def versions_all(
        self, slug: str, *, page_size: int = 100
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every version of the agent, fetching pages as it goes."""
        return _every_item(lambda cursor: self.versions(slug, limit=page_size, cursor=cursor))

    async def rollback(self, slug: str, version: int) -> dict[str, Any]:
        """Make `version` the current definition again (as a new version)."""
        result: dict[str, Any] = await self._client.request(
            "POST", f"/v1/agents/{slug}/rollback", body={"version": version}, idempotent=True
        )
        return result


def _contains(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return value == needle
    if isinstance(value, dict):
        return any(_contains(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, needle) for v in value)
    return False


class AsyncRuns:
    """`/v1/run` and `/v1/runs`: start, follow, control and inspect runs."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def start(
        self,
        agent: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        thread_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a run and return at once with `{runId, threadId}`; follow it with
        `stream`, or `wait` for it. (The daemon answers a streamed start with the run's
        headers as soon as it is queued; the run goes on when the stream is closed.)"""
        body: dict[str, Any] = {"agent": agent, "stream": True}
        for key, value in (
            ("prompt", prompt),
            ("messages", messages),
            ("threadId", thread_id),
            ("config", dict(config) if config else None),
            ("metadata", dict(metadata) if metadata else None),
        ):
            if value is not None:
                body[key] = value
        return await self._client.retrying(lambda: self._start(body), safe_to_repeat=False)

    async def _start(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = await self._client.response_headers("POST", "/v1/run", body=body)
        if "X-Run-ID" not in headers:
            raise APIError(200, "bad_response", "the daemon's answer has no X-Run-ID header")
        return {"runId": headers["X-Run-ID"], "threadId": headers.get("X-Thread-ID")}

    async def get(self, run_id: str) -> dict[str, Any]:
        """The run with its conversation, tool calls, output, usage and timings."""
        result: dict[str, Any] = await self._client.request("GET", f"/v1/runs/{run_id}")
        return result

    async def list(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        """One page of the run history, newest first."""
        params = {"agent": agent, "status": status, "limit": limit, "cursor": cursor}
        return _page(await self._client.request_envelope("GET", "/v1/runs", params=params))

    def list_all(
        self, *, agent: str | None = None, status: str | None = None, page_size: int = 100
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every run of the history, newest first, fetching pages as it goes."""
        return _every_item(
            lambda cursor: self.list(agent=agent, status=status, limit=page_size, cursor=cursor)
        )

    async def stream(
        self,
        run_id: str,
        *,
        after: int = 0,
        on_reconnect: Callable[[AgentdError], Any] | None = None,
        max_reconnects: int | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The run's events after event id `after`, live, until `complete`. A dropped
        connection is resumed from the last event received (`Last-Event-ID`), with the
        client's retry policy between attempts; each event arrives once, in order.
        `on_reconnect(error)` is told why before each new attempt; `max_reconnects`
        (default: the client's `max_retries`) failed attempts in a row end it with the last
        error."""
        last = after
        failures = 0
        while True:
            received = 0
            try:
                frames = self._client.sse(
                    "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(last)}
                )
                async with aclosing(frames):
                    async for frame in frames:
                        event = _event_of(frame, run_id)
                        if event.id <= last:
                            continue
                        failures = 0
                        received += 1
                        last = event.id
                        yield event
                        if event.type == TERMINAL_EVENT:
                            return
                if not received and (await self.get(run_id))["status"] in TERMINAL_STATUSES:
                    return  # the run has ended and the daemon has nothing after `last`
                error: AgentdError = NetworkError(
                    f"the event stream of run {run_id} ended before its complete event"
                )
            except AgentdError as exc:
                if not is_retryable(exc):
                    raise
                error = exc
            failures += 1
            limit = self._client.config.max_retries if max_reconnects is None else max_reconnects
            if failures > limit:
                raise error
            if on_reconnect is not None:
                on_reconnect(error)
            await self._client.pause_before_retry(
                self._client.config.retry.backoff(failures, retry_after_of(error))
            )

    async def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented signature
        on_update: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        """Wait until the run has finished and return it (`get`). `on_update(run)` is
        called with the run each time its status changes (and once at the start).
        Raises `TimeoutError` after `timeout` seconds."""
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            run = await self.get(run_id)
            if on_update is not None:
                on_update(run)
            if run["status"] in TERMINAL_STATUSES:
                return run
            events = self.stream(run_id)
            async with aclosing(events):
                async for event in events:
                    if event.type not in ("status", TERMINAL_EVENT):
                        continue
                    latest = await self.get(run_id)
                    if on_update is not None and latest["status"] != run["status"]:
                        on_update(latest)
                    run = latest
            if run["status"] not in TERMINAL_STATUSES:
                run = await self.get(run_id)
            return run

    async def pause(self, run_id: str) -> dict[str, Any]:
        return await self._control(run_id, "pause")

    async def resume(self, run_id: str) -> dict[str, Any]:
        return await self._control(run_id, "resume")

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel the run (answered once it has stopped); `ConflictError` if it had ended."""
        return await self._control(run_id, "cancel")

    async def _control(self, run_id: str, action: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.request(
            "POST", f"/v1/runs/{run_id}/{action}", body={}, idempotent=True
        )
        return result

    async def send_input(self, run_id: str, text: str) -> dict[str, Any]:
        """User input that reaches the model at its next turn."""
        result: dict[str, Any] = await self._client.request(
            "POST", f"/v1/runs/{run_id}/input", body={"text": text}
        )
        return result

    async def fork(self, run_id: str, step: int, prompt: str | None = None) -> dict[str, Any]:
        """A new run from this run's first `step` messages (and `prompt` after them)."""
        body: dict[str, Any] = {"step": step}
        if prompt is not None:
            body["prompt"] = prompt
        result: dict[str, Any] = await self._client.request(
            "POST", f"/v1/runs/{run_id}/fork", body=body
        )
        return result

    async def files(self, run_id: str, path: str = "/") -> dict[str, Any]:
        """A directory of the run's workspace: `{path, entries: [{name, path, type, …}]}`."""
        result: dict[str, Any] = await self._client.request(
            "GET", f"/v1/runs/{run_id}/files", params={"path": path}
        )
        return result

    async def read_file(
        self, run_id: str, path: str, *, offset: int = 0, limit: int | None = None
    ) -> dict[str, Any]:
        """A file of the run's workspace: `{path, size, offset, encoding, content,
        truncated}`."""
        result: dict[str, Any] = await self._client.request(
            "GET",
            f"/v1/runs/{run_id}/files/content",
            params={"path": path, "offset": offset, "limit": limit},
        )
        return result


class AsyncThreads:
    """`/v1/run/threads`: the conversations runs append to."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(
        self, *, agent: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        """One page of the threads."""
        params = {"agent": agent, "limit": limit, "cursor": cursor}
        return _page(await self._client.request_envelope("GET", "/v1/run/threads", params=params))

    def list_all(
        self, *, agent: str | None = None, page_size: int = 100
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every thread, fetching pages as it goes."""
        return _every_item(lambda cursor: self.list(agent=agent, limit=page_size, cursor=cursor))

    async def get(self, thread_id: str) -> dict[str, Any]:
        """The thread with its messages."""
        result: dict[str, Any] = await self._client.request("GET", f"/v1/run/threads/{thread_id}")
        return result

    async def delete(self, thread_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.request(
            "DELETE", f"/v1/run/threads/{thread_id}"
        )
        return result


class AsyncTools:
    """`/v1/tools/{name}`: one core tool on the daemon's workspace, without a model."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def call(self, name: str, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """→ `{tool, output, isError, data, durationMs}` (a tool failure is `isError`, not
        an exception)."""
        result: dict[str, Any] = await self._client.request(
            "POST", f"/v1/tools/{name}", body=dict(arguments or {})
        )
        return result
