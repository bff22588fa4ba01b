"""`Client`: the blocking client. It runs an `AsyncClient` on an event loop in a
background thread (anyio's blocking portal), so both share one implementation."""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import ExitStack, aclosing
from typing import Any, TypeVar

import anyio
import anyio.from_thread

from runtime.client.aio import AsyncClient, ClientConfig, Page
from runtime.client.errors import AgentdError
from runtime.events import Event
from runtime.providers.retry import RetryPolicy

T = TypeVar("T")


class Client:
    """`with Client(url, token) as agentd:` — the blocking client, same arguments and
    methods as `AsyncClient`. Callbacks (`runs.wait(on_update=…)`) run on the client's I/O
    thread."""

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
        config = ClientConfig.resolve(
            url,
            token,
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy,
            stream_read_timeout=stream_read_timeout,
        )
        stack = ExitStack()
        self._portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        try:
            self.async_client = self._portal.call(self._open, config)
            portal_thread = self._portal.call(threading.get_ident)
        except BaseException:
            stack.close()
            raise
        # A client that is never closed must not hang the interpreter at exit: once
        # finalization has begun the portal's thread can no longer run, so stopping it
        # from the portal context manager's own clean-up (when the garbage collector
        # gets to it) waits for ever. `weakref.finalize` stops it when the client is
        # collected, or at exit (its atexit hook runs while threads still run); `close()`
        # runs the same finalizer, once.
        self._finalizer = weakref.finalize(
            self, _shut_down, self._portal, self.async_client, stack, portal_thread
        )
        self.config = config
        self.base_url = config.url
        self.agents = Agents(self)
        self.runs = Runs(self)
        self.threads = Threads(self)
        self.tools = Tools(self)

    @staticmethod
    async def _open(config: ClientConfig) -> AsyncClient:
        # aiohttp's session belongs to the loop it is made on: the portal's.
        return AsyncClient(
            config.url,
            config.token,
            timeout=config.timeout,
            max_retries=config.max_retries,
            retry_policy=config.retry,
            stream_read_timeout=config.stream_read_timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and stop the I/O thread (idempotent)."""
        self._finalizer()

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run one of the async client's coroutines on its loop and return the result."""
        return self._portal.call(func, *args)

    def iterate(self, stream: Callable[[], AsyncGenerator[T, None]]) -> Iterator[T]:
        """Iterate an async iterator of the async client from this thread. It runs whole in
        one task on the client's loop (its timeouts and cancel scopes need that), handing
        items over one at a time."""
        send, receive = anyio.create_memory_object_stream[T](0)

        async def pump() -> None:
            async with send:
                iterator = stream()
                async with aclosing(iterator):
                    async for item in iterator:
                        await send.send(item)

        future: Future[None] = self._portal.start_task_soon(pump)
        try:
            while True:
                try:
                    item = self._portal.call(receive.receive)
                except anyio.EndOfStream:
                    break
                yield item
            future.result()
        finally:
            future.cancel()
            self._portal.call(receive.aclose)


def _shut_down(
    portal: anyio.from_thread.BlockingPortal,
    async_client: AsyncClient,
    stack: ExitStack,
    portal_thread: int,
) -> None:
    """Close `async_client` on `portal`'s loop, then stop the portal and join its thread."""
    if threading.get_ident() == portal_thread:
        # The garbage collector can run this on the portal's own thread, which cannot
        # wait for itself: a short-lived thread does the stopping instead.
        threading.Thread(
            target=_shut_down, args=(portal, async_client, stack, -1), daemon=True
        ).start()
        return
    try:
        portal.call(async_client.aclose)
    finally:
        stack.close()


class Agents:
    """`Client.agents`: see `AsyncAgents`."""

    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client.async_client.agents

    def upsert(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._c.call(self._a.upsert, spec)

    def get(self, slug: str, *, version: int | None = None) -> dict[str, Any]:
        return self._c.call(lambda: self._a.get(slug, version=version))

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        return self._c.call(lambda: self._a.list(limit=limit, cursor=cursor))

    def list_all(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._c.iterate(lambda: self._a.list_all(page_size=page_size))

    def update(self, slug: str, **changes: Any) -> dict[str, Any]:
        return self._c.call(lambda: self._a.update(slug, **changes))

    def delete(self, slug: str) -> dict[str, Any]:
        return self._c.call(self._a.delete, slug)

    def versions(self, slug: str, *, limit: int | None = None, cursor: str | None = None) -> Page:
        return self._c.call(lambda: self._a.versions(slug, limit=limit, cursor=cursor))

    def versions_all(self, slug: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._c.iterate(lambda: self._a.versions_all(slug, page_size=page_size))

    def rollback(self, slug: str, version: int) -> dict[str, Any]:
        return self._c.call(self._a.rollback, slug, version)


class Runs:
    """`Client.runs`: see `AsyncRuns`."""

    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client.async_client.runs

    def start(
        self,
        agent: str,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        thread_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self._c.call(
            lambda: self._a.start(
                agent,
                prompt,
                messages=messages,
                thread_id=thread_id,
                config=config,
                metadata=metadata,
            )
        )

    def get(self, run_id: str) -> dict[str, Any]:
        return self._c.call(self._a.get, run_id)

    def list(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page:
        return self._c.call(
            lambda: self._a.list(agent=agent, status=status, limit=limit, cursor=cursor)
        )

    def list_all(
        self, *, agent: str | None = None, status: str | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        return self._c.iterate(
            lambda: self._a.list_all(agent=agent, status=status, page_size=page_size)
        )

    def stream(
        self,
        run_id: str,
        *,
        after: int = 0,
        on_reconnect: Callable[[AgentdError], Any] | None = None,
        max_reconnects: int | None = None,
    ) -> Iterator[Event]:
        return self._c.iterate(
            lambda: self._a.stream(
                run_id, after=after, on_reconnect=on_reconnect, max_reconnects=max_reconnects
            )
        )

    def wait(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        return self._c.call(lambda: self._a.wait(run_id, timeout=timeout, on_update=on_update))

    def pause(self, run_id: str) -> dict[str, Any]:
        return self._c.call(self._a.pause, run_id)

    def resume(self, run_id: str) -> dict[str, Any]:
        return self._c.call(self._a.resume, run_id)

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._c.call(self._a.cancel, run_id)

    def send_input(self, run_id: str, text: str) -> dict[str, Any]:
        return self._c.call(self._a.send_input, run_id, text)

    def fork(self, run_id: str, step: int, prompt: str | None = None) -> dict[str, Any]:
        return self._c.call(self._a.fork, run_id, step, prompt)

    def files(self, run_id: str, path: str = "/") -> dict[str, Any]:
        return self._c.call(self._a.files, run_id, path)

    def read_file(
        self, run_id: str, path: str, *, offset: int = 0, limit: int | None = None
    ) -> dict[str, Any]:
        return self._c.call(lambda: self._a.read_file(run_id, path, offset=offset, limit=limit))


class Threads:
    """`Client.threads`: see `AsyncThreads`."""

    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client.async_client.threads

    def list(
        self, *, agent: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page:
        return self._c.call(lambda: self._a.list(agent=agent, limit=limit, cursor=cursor))

    def list_all(
        self, *, agent: str | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        return self._c.iterate(lambda: self._a.list_all(agent=agent, page_size=page_size))

    def get(self, thread_id: str) -> dict[str, Any]:
        return self._c.call(self._a.get, thread_id)

    def delete(self, thread_id: str) -> dict[str, Any]:
        return self._c.call(self._a.delete, thread_id)


class Tools:
    """`Client.tools`: see `AsyncTools`."""

    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client.async_client.tools

    def call(self, name: str, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._c.call(self._a.call, name, arguments)
