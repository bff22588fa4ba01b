"""Which values a run's events and records must never show: the credentials it can see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from runtime.events import LOG_SECRETS, Redactor

if TYPE_CHECKING:
    # runtime.agents loads with the /v1 API, after start-up (runtime.api.v1)
    from runtime.agents import AgentSpec

# Environment variables whose values are credentials a provider may be configured with.
KEY_SUFFIXES = ("_API_KEY", "_AUTH_TOKEN")


def credential_values(spec: AgentSpec, env: Mapping[str, str]) -> list[str]:
    """The credentials a run of `spec` in the daemon environment `env` can see: the agent's
    declared secrets, every `*_API_KEY`/`*_AUTH_TOKEN` value, and a custom model's API key."""
    from runtime.agents import CustomModel  # loaded: `spec` is one of its models

    merged = {**env, **spec.env}
    values = [merged[name] for name in spec.secrets if merged.get(name)]
    values += [v for k, v in merged.items() if k.upper().endswith(KEY_SUFFIXES) and v]
    if isinstance(spec.model, CustomModel) and spec.model.api_key:
        values.append(spec.model.api_key)
    return values


def run_redactor(spec: AgentSpec, env: Mapping[str, str]) -> Redactor:
    """A redactor of `credential_values`, for a run's events and records. The values join
    the process's log registry too (`LOG_SECRETS`), so no log line shows them either."""
    values = credential_values(spec, env)
    LOG_SECRETS.add(values)
    return Redactor(values)
