"""How a run gets its model provider from the agent's model setting, and the daemon's pool of
providers that runs share."""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from runtime.agents import AgentSpec
from runtime.providers.base import Provider
from runtime.providers.registry import create_provider as registry_factory
from runtime.providers.registry import shareable

ProviderFactory = Callable[..., tuple[Provider, str]]
"""`factory(model, *, env) -> (provider, api model id)`, like `registry.create_provider`."""


def model_label(spec: AgentSpec) -> str:
    """The model a run's record names before its provider exists."""
    return spec.model if isinstance(spec.model, str) else (spec.model.model or "custom")


def model_reference(spec: AgentSpec) -> str | dict[str, Any]:
    """The agent's model as a provider factory takes it: a name, or a custom model's fields."""
    return spec.model if isinstance(spec.model, str) else spec.model.model_dump(by_alias=True)


def create_provider(
    spec: AgentSpec, env: Mapping[str, str], factory: ProviderFactory | None = None
) -> tuple[Provider, str]:
    """`(provider, api model id)` for the agent's model; raises ValueError or ModelError when
    the model cannot be used (unknown name, missing key). Without a `factory`, the
    registry's (which imports a provider SDK the first time it builds one of its models)."""
    model = model_reference(spec)
    if factory is not None:
        return factory(model, env=env)
    return registry_factory(model, env=env)


async def open_provider(
    spec: AgentSpec, env: Mapping[str, str], factory: ProviderFactory | None = None
) -> tuple[Provider, str]:
    """`create_provider` for async callers: the registry's path runs in a worker thread, since
    it may still have to import a model SDK (seconds of CPU on a cold daemon, which on the
    event loop stalled every stream; the daemon preloads them in a thread after it listens,
    and a run arriving earlier waits for that import off the loop). An injected `factory`
    is called here, on the loop."""
    if factory is not None:
        return create_provider(spec, env, factory)
    return await anyio.to_thread.run_sync(create_provider, spec, env)


@dataclass
class _Pooled:
    provider: Provider
    model_id: str
    users: int = 0


class ProviderPool:
    """The providers of one daemon's runs, shared by runs with the same model and environment.

    Building an SDK client costs tens of milliseconds of CPU (its TLS context, its connection
    pool), which fifty runs starting together paid fifty times while their streams waited;
    an SDK client serves any number of concurrent requests, so runs whose agent names the
    same model with the same environment (hence the same key, base URL and timeouts) get one
    provider. Idle providers beyond `idle_limit` are closed, least recently used first, and
    every one is closed by `aclose()`.

    Not shared: providers of an injected `factory` (test doubles and recorders may keep a
    run's state) and replayed cassettes (read in order by one run): those are made for one
    run and closed after it, as before."""

    def __init__(
        self,
        factory: ProviderFactory | None = None,
        *,
        idle_limit: int = 16,
        close_grace: float = 2.0,
    ) -> None:
        self.factory = factory
        self.idle_limit = idle_limit
        self.close_grace = close_grace
        self._pooled: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], _Pooled] = OrderedDict()
        self._building = anyio.Lock()  # runs arriving together wait for one build

    @contextlib.asynccontextmanager
    async def provider(
        self, spec: AgentSpec, env: Mapping[str, str]
    ) -> AsyncIterator[tuple[Provider, str]]:
        """`(provider, api model id)` for a run, or a compaction, while the block runs;
        raises ValueError or ModelError like `create_provider`."""
        if self.factory is not None or not shareable(model_reference(spec)):
            provider, model_id = await open_provider(spec, env, self.factory)
            try:
                yield provider, model_id
            finally:
                await self._close(provider)
            return
        key = (
            json.dumps(model_reference(spec), sort_keys=True, default=str),
            tuple(sorted(env.items())),
        )
        entry = self._pooled.get(key)
        if entry is None:
            async with self._building:
                entry = self._pooled.get(key)
                if entry is None:
                    provider, model_id = await open_provider(spec, env)
                    entry = self._pooled[key] = _Pooled(provider, model_id)
        self._pooled.move_to_end(key)
        entry.users += 1
        try:
            yield entry.provider, entry.model_id
        finally:
            entry.users -= 1
            await self._close_idle()

    async def aclose(self) -> None:
        """Close every pooled provider (the runs are over)."""
        pooled = list(self._pooled.values())
        self._pooled.clear()
        for entry in pooled:
            await self._close(entry.provider)

    async def _close_idle(self) -> None:
        idle = [key for key, entry in self._pooled.items() if entry.users == 0]
        for key in idle[: max(0, len(idle) - self.idle_limit)]:
            await self._close(self._pooled.pop(key).provider)

    async def _close(self, provider: Provider) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_grace):
            await provider.aclose()
