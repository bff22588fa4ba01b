"""How a run gets its model provider from the agent's model setting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
