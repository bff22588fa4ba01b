"""Model id → provider. Importing this module does not import the model SDKs (start-up time).

Routing of a model string:

| model id                               | provider                                   |
|----------------------------------------|--------------------------------------------|
| `claude-*`                             | Anthropic Messages                         |
| `gpt-*`, `chatgpt-*`, `o1`…`o9*`, `codex-*` | OpenAI Responses                      |
| `gemini-*`                             | Gemini, OpenAI-compatible Chat endpoint    |
| `replay:<path>`                        | replay of a JSONL cassette                 |
| `anthropic:<id>`                       | Anthropic, whatever the id                 |
| `openai:<id>`, `openai-responses:<id>` | OpenAI Responses, whatever the id          |
| `openai-chat:<id>`                     | OpenAI Chat Completions                    |
| `gemini:<id>`                          | Gemini                                     |

A custom endpoint is an object `{"provider": "custom", "endpoint", "apiKey"?, "format":
"openai" | "anthropic", "model"?}`: `format: "openai"` speaks Chat Completions to `endpoint`
(a base URL with `/v1`, like `OPENAI_BASE_URL`; a trailing `/chat/completions` is dropped),
`format: "anthropic"` speaks Messages to it (a base URL without `/v1`). `model` is the id sent
(default `"default"`); without `apiKey` a placeholder is sent (local servers ignore it).

Credentials and base URLs come from `env` (the caller overlays the agent's `env` on the
daemon's environment; `None` means `os.environ`): `ANTHROPIC_API_KEY` (or
`ANTHROPIC_AUTH_TOKEN`), `ANTHROPIC_BASE_URL` (no `/v1`), `OPENAI_API_KEY`, `OPENAI_BASE_URL`
(with `/v1`), `GEMINI_API_KEY` (or `GOOGLE_API_KEY`), `GEMINI_BASE_URL` (default
`https://generativelanguage.googleapis.com/v1beta/openai/`). A missing key does not fail
here: the provider's first `stream()` raises `ModelError("missing_api_key", …)` naming the
variable, which the loop reports like any model error. Tuning: `AGENTD_MODEL_TIMEOUT`
(seconds), `AGENTD_MODEL_MAX_ATTEMPTS`, `AGENTD_MODEL_RETRY_BASE_MS`, and
`AGENTD_REPLAY_STRICT=0` (replay ignores divergence).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from runtime.providers.base import Provider
from runtime.providers.capabilities import UnsupportedSetting, context_window
from runtime.providers.capabilities import hosted_tool_problem as _route_hosted_problem
from runtime.providers.capabilities import unsupported_settings as _route_unsupported
from runtime.providers.retry import RetryPolicy

GEMINI_DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"

Kind = Literal["anthropic", "openai-responses", "openai-chat", "gemini", "replay", "custom"]

_PREFIXES: dict[str, Kind] = {
    "anthropic": "anthropic",
    "openai": "openai-responses",
    "openai-responses": "openai-responses",
    "openai-chat": "openai-chat",
    "gemini": "gemini",
    "replay": "replay",
}
_OPENAI_MODEL = re.compile(r"^(gpt-|chatgpt-|codex-|o[1-9](\d*)($|-))")


@dataclass(frozen=True)
class Route:
    """Where a model id goes: the provider kind and the id the API expects."""

    kind: Kind
    model_id: str
    custom: dict[str, Any] | None = None


def resolve_model(model: str | Mapping[str, Any] | Any) -> Route:
    """Parse a model id or custom endpoint spec; ValueError says what is wrong."""
    if not isinstance(model, str):
        return Route("custom", *_custom_spec(model))
    name = model.strip()
    if not name:
        raise ValueError("model id is empty")
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _PREFIXES:
        if not rest.strip():
            raise ValueError(f"model id {model!r} names no model after {prefix + ':'!r}")
        return Route(_PREFIXES[prefix], rest.strip())
    if name.startswith("claude-"):
        return Route("anthropic", name)
    if _OPENAI_MODEL.match(name):
        return Route("openai-responses", name)
    if name.startswith("gemini-"):
        return Route("gemini", name)
    raise ValueError(
        f"unknown model {model!r}: expected claude-*, gpt-*, o1…o9*, codex-*, gemini-*, "
        "replay:<path>, a provider prefix (anthropic:, openai:, openai-chat:, gemini:) or a "
        'custom endpoint {"provider": "custom", "endpoint", "format"}'
    )


def validate_model(model: str | Mapping[str, Any] | Any) -> None:
    """Raise ValueError naming what is wrong with a model id or custom spec."""
    resolve_model(model)


def unsupported_settings(
    model: str | Mapping[str, Any] | Any,
    *,
    temperature: float | None = None,
    thinking_budget: int | None = None,
) -> list[UnsupportedSetting]:
    """The given settings that `model`'s route never sends (see `capabilities`); ValueError
    for a model id that routes nowhere."""
    route = resolve_model(model)
    return _route_unsupported(
        route.kind,
        route.model_id,
        temperature=temperature,
        thinking_budget=thinking_budget,
        custom_format=(route.custom or {}).get("format"),
    )


def default_context_window(model: str | Mapping[str, Any] | Any) -> int | None:
    """The context window `model` is compacted to by default: the capabilities table's figure
    (a conservative default for custom endpoints and unknown ids); None for a replayed
    cassette, which answers what was recorded whatever the conversation's size."""
    try:
        route = resolve_model(model)
    except ValueError:
        return None
    if route.kind == "replay":
        return None
    return context_window(route.model_id)


# What each kind of route needs imported to build its provider: the SDK, then the adapter
# (the adapters import their SDK when they build a client).
_ANTHROPIC_MODULES = ("anthropic", "runtime.providers.anthropic")
_OPENAI_CHAT_MODULES = ("openai", "runtime.providers.openai_chat")
_ROUTE_MODULES: dict[str, tuple[str, ...]] = {
    "anthropic": _ANTHROPIC_MODULES,
    "openai-responses": ("openai", "runtime.providers.openai_responses"),
    "openai-chat": _OPENAI_CHAT_MODULES,
    "gemini": _OPENAI_CHAT_MODULES,
    "custom-anthropic": _ANTHROPIC_MODULES,
    "custom-openai": _OPENAI_CHAT_MODULES,
}
# Every SDK and adapter, in the order preloaded when nothing says which comes first.
PRELOADED_MODULES = (
    "anthropic",
    "runtime.providers.anthropic",
    "openai",
    "runtime.providers.openai_responses",
    "runtime.providers.openai_chat",
)


def adapter_kind(model: str | Mapping[str, Any] | Any) -> str | None:
    """Which adapter `model`'s provider is: its route's kind, a custom endpoint's as
    `custom-<format>` (`custom-anthropic`, `custom-openai`); None for None or a model that
    routes nowhere."""
    try:
        route = resolve_model(model) if model is not None else None
    except ValueError:
        return None
    if route is None:
        return None
    if route.kind == "custom":
        return f"custom-{(route.custom or {}).get('format')}"
    return route.kind


def modules_for(model: str | Mapping[str, Any] | Any) -> tuple[str, ...]:
    """The SDK and the adapter `model`'s provider imports; none for a replayed cassette, None,
    or a model that routes nowhere.

    The SDKs' imports are most of what a fresh daemon's first run waits for (`anthropic`
    ~0.86 s of CPU, `openai` ~0.35 s on the machine this was measured on, under the one
    interpreter lock): the daemon preloads those of its `default_model` first, and the others
    once no run is active (`runtime.daemon`)."""
    return _ROUTE_MODULES.get(adapter_kind(model) or "", ())


def preload_adapters(modules: Iterable[str] = PRELOADED_MODULES) -> list[str]:
    """Import model adapters and their SDKs (`modules`, in order; all of them by default)
    now rather than at a run (seconds of CPU in a cold process). Blocking: the daemon calls
    it in a worker thread once it listens, so no run imports an SDK on the event loop.
    Returns the modules that failed."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            failed.append(name)
    return failed


def hosted_tool_problem(model: str | Mapping[str, Any] | Any, tools: list[str]) -> str | None:
    """Why `model`'s route cannot run the hosted tools `tools` (see `capabilities`); None
    when it can. ValueError for a model id that routes nowhere."""
    route = resolve_model(model)
    return _route_hosted_problem(route.kind, route.model_id, tools)


def shareable(model: str | Mapping[str, Any] | Any) -> bool:
    """Whether one provider for `model` may serve many runs at once: an SDK client may (it
    pools its connections); a replayed cassette is read in order by one run. False for a
    model that routes nowhere (creating it fails anyway)."""
    try:
        return resolve_model(model).kind != "replay"
    except ValueError:
        return False


def create_provider(
    model: str | Mapping[str, Any] | Any,
    *,
    env: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    record: str | Path | None = None,
) -> tuple[Provider, str]:
    """Build the provider for `model`; returns it with the model id to put in
    `ModelSettings.model`. `retry` / `timeout` override the env-derived defaults. `record`
    wraps the provider in a `RecordingProvider` appending every turn to that cassette (so
    several runs can record into one file; start from a new or empty file)."""
    provider, model_id = _create(model, env=env, retry=retry, timeout=timeout)
    if record is not None:
        from runtime.providers.replay import RecordingProvider

        return RecordingProvider(provider, Path(record), append=True), model_id
    return provider, model_id


def _create(
    model: str | Mapping[str, Any] | Any,
    *,
    env: Mapping[str, str] | None,
    retry: RetryPolicy | None,
    timeout: float | None,
) -> tuple[Provider, str]:
    route = resolve_model(model)
    env = os.environ if env is None else env
    retry = retry or RetryPolicy.from_env(env)
    if timeout is None:
        try:
            timeout = float(env.get("AGENTD_MODEL_TIMEOUT", "")) or None
        except ValueError:
            timeout = None
    kind = route.kind
    if kind == "replay":
        from runtime.providers.replay import ReplayProvider

        strict = env.get("AGENTD_REPLAY_STRICT", "1").strip().lower() not in ("0", "false", "no")
        return ReplayProvider(Path(route.model_id).expanduser(), strict=strict), "replay"
    if kind == "anthropic":
        from runtime.providers.anthropic import AnthropicProvider

        return (
            AnthropicProvider(
                api_key=env.get("ANTHROPIC_API_KEY") or None,
                auth_token=env.get("ANTHROPIC_AUTH_TOKEN") or None,
                base_url=env.get("ANTHROPIC_BASE_URL") or None,
                retry=retry,
                timeout=timeout,
            ),
            route.model_id,
        )
    if kind == "openai-responses":
        from runtime.providers.openai_responses import OpenAIResponsesProvider

        return (
            OpenAIResponsesProvider(
                api_key=env.get("OPENAI_API_KEY") or None,
                base_url=env.get("OPENAI_BASE_URL") or None,
                retry=retry,
                timeout=timeout,
            ),
            route.model_id,
        )
    from runtime.providers.openai_chat import OpenAIChatProvider

    if kind == "openai-chat":
        return (
            OpenAIChatProvider(
                api_key=env.get("OPENAI_API_KEY") or None,
                base_url=env.get("OPENAI_BASE_URL") or None,
                retry=retry,
                timeout=timeout,
            ),
            route.model_id,
        )
    if kind == "gemini":
        return (
            OpenAIChatProvider(
                api_key=env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY") or None,
                base_url=env.get("GEMINI_BASE_URL") or GEMINI_DEFAULT_BASE_URL,
                key_env_var="GEMINI_API_KEY",
                max_tokens_field="max_tokens",
                name="gemini",
                label="Gemini",
                retry=retry,
                timeout=timeout,
            ),
            route.model_id,
        )
    spec = route.custom or {}
    api_key = spec.get("apiKey") or "unused"
    host = urlparse(spec["endpoint"]).netloc
    if spec["format"] == "anthropic":
        from runtime.providers.anthropic import AnthropicProvider

        return (
            AnthropicProvider(
                api_key=api_key,
                base_url=spec["endpoint"],
                retry=retry,
                timeout=timeout,
                label=f"custom endpoint {host}",
            ),
            route.model_id,
        )
    return (
        OpenAIChatProvider(
            api_key=api_key,
            base_url=spec["endpoint"],
            max_tokens_field="max_tokens",
            name="custom-openai",
            label=f"custom endpoint {host}",
            retry=retry,
            timeout=timeout,
        ),
        route.model_id,
    )


def _custom_spec(model: Any) -> tuple[str, dict[str, Any]]:
    if hasattr(model, "model_dump"):
        raw = model.model_dump(by_alias=True)
    elif isinstance(model, Mapping):
        raw = dict(model)
    else:
        raise ValueError(f"model must be a string or a custom endpoint object, not {model!r}")
    if raw.get("provider") != "custom":
        raise ValueError(
            f'a model object must have "provider": "custom" (got {raw.get("provider")!r})'
        )
    endpoint = raw.get("endpoint")
    if not isinstance(endpoint, str) or urlparse(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"custom model endpoint must be an http(s) URL (got {endpoint!r})")
    if not urlparse(endpoint).netloc:
        raise ValueError(f"custom model endpoint has no host: {endpoint!r}")
    fmt = raw.get("format")
    if fmt not in ("openai", "anthropic"):
        raise ValueError(f'custom model format must be "openai" or "anthropic" (got {fmt!r})')
    api_key = raw.get("apiKey", raw.get("api_key"))
    if api_key is not None and not isinstance(api_key, str):
        raise ValueError("custom model apiKey must be a string")
    model_id = raw.get("model") or "default"
    if not isinstance(model_id, str):
        raise ValueError("custom model id must be a string")
    spec = {"endpoint": endpoint, "format": fmt, "apiKey": api_key, "model": model_id}
    return model_id, spec
