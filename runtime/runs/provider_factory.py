"""How a run gets its model provider from the agent's model setting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio

from runtime.agents import AgentSpec
from runtime.providers.base import Provider

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
    the model cannot be used (unknown name, missing key). Without a `factory`, the registry's
    (imported on first use: it loads the provider SDKs)."""
    model = model_reference(spec)
    if factory is not None:
        return factory(model, env=env)
    from runtime.providers.registry import create_provider as registry_factory

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
