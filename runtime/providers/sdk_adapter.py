"""What the SDK adapters' `stream()` share: one template, written once.

Every adapter (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses) turns a model
turn into the same steps: without a client (no API key) the turn fails with
`ModelError.missing_api_key`; otherwise the request body is built once, and each attempt (one
streamed API call) runs under the one retry policy, its failures classified by the adapter.
`SdkAdapter.stream` is that template; an adapter supplies `build_request`, `_classify` and
`_turn` (or, for one request per turn, `_attempt` through `SingleRequestAdapter`).

An adapter touches the SDK resource it calls (`client.messages`, `client.chat.completions`,
`client.responses`) when it is made: the SDKs import a resource's module, and build its
types' validators, the first time it is used (~0.25 s for `openai.resources.responses`).
A provider is made in a worker thread (`runtime.runs.provider_factory.open_provider`), and a
run waits for it anyway; at the first request that work ran on the event loop, where every
stream of the daemon stood still for it, in a fresh daemon's first run (a daemon at rest has
had it done by its warm-up's rehearsal: `runtime.providers.rehearsal`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Generic, Protocol, TypeVar

from runtime.messages import Message
from runtime.providers.base import ModelError, ModelSettings, StreamItem
from runtime.providers.retry import Failure, RetryPolicy, stream_with_retries


class SdkClient(Protocol):
    """What the adapters need of an SDK client besides its API calls."""

    async def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=SdkClient)
Attempt = Callable[[], AsyncGenerator[StreamItem, None]]


class SdkAdapter(ABC, Generic[ClientT]):
    """A provider backed by an official SDK client (None when no key was given)."""

    def __init__(
        self,
        client: ClientT | None,
        *,
        retry: RetryPolicy | None,
        key_env_var: str,
        label: str,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.key_env_var = key_env_var
        self.label = label
        self._client = client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    def client(self) -> ClientT:
        """The SDK client; `ModelError` `missing_api_key` when there is none."""
        if self._client is None:
            raise ModelError.missing_api_key(self.key_env_var, self.label)
        return self._client

    @abstractmethod
    def build_request(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> dict[str, Any]:
        """The API's request body for one turn (without `stream`)."""

    async def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncGenerator[StreamItem, None]:
        """One model turn: deltas, then exactly one `AssistantTurn`."""
        self.client()  # without a key the turn fails here, before any request is built
        body = self.build_request(system, messages, tools, settings)
        extra = dict(settings.extra) or None
        async with aclosing(self._turn(body, extra)) as turn:
            async for item in turn:
                yield item

    @abstractmethod
    def _turn(
        self, body: dict[str, Any], extra: dict[str, Any] | None
    ) -> AsyncGenerator[StreamItem, None]:
        """The attempts of one turn (through `_retried`), ending with its `AssistantTurn`."""

    @abstractmethod
    def _classify(self, exc: BaseException) -> Failure | None:
        """The retry policy's view of a failure of an attempt; None: not a model failure."""

    async def _retried(self, attempt: Attempt) -> AsyncGenerator[StreamItem, None]:
        """`attempt()` until one finishes, under the retry policy."""
        retried = stream_with_retries(attempt, self._classify, self.retry)
        async with aclosing(retried):
            async for item in retried:
                yield item


class SingleRequestAdapter(SdkAdapter[ClientT]):
    """An adapter whose turn is one streamed request, retried as a whole."""

    def _turn(
        self, body: dict[str, Any], extra: dict[str, Any] | None
    ) -> AsyncGenerator[StreamItem, None]:
        return self._retried(lambda: self._attempt(body, extra))

    @abstractmethod
    def _attempt(
        self, body: dict[str, Any], extra: dict[str, Any] | None
    ) -> AsyncGenerator[StreamItem, None]:
        """One streamed API call: its deltas, then its `AssistantTurn`."""
