"""Compacting a thread between runs (`POST /v1/run/threads/{id}/compact`).

The thread's agent model summarises the older part of the stored conversation (as
`runtime.compaction` does inside a run when the window fills), and the record is appended to
the thread, so its next run starts from the compacted view. The caller (the `RunManager`)
holds the thread meanwhile, so no run starts on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from runtime.agents import AgentRecord, AgentSpec
from runtime.compaction import (
    DEFAULT_COMPACT_AT,
    CompactionFailed,
    Compactor,
    ContextMeter,
    NothingToCompact,
)
from runtime.events import LOG_SECRETS
from runtime.messages import CompactionPart, Message
from runtime.providers.base import ModelError, ModelSettings, Provider
from runtime.providers.capabilities import DEFAULT_CONTEXT_WINDOW
from runtime.providers.registry import default_context_window
from runtime.runs.credentials import credential_values
from runtime.runs.errors import InvalidRequest, RunError
from runtime.runs.provider_factory import ProviderPool, model_reference
from runtime.runs.threads import RunThreads
from runtime.store import Store

# A model the summary needed failed: the request depended on it (HTTP 424 Failed Dependency).
MODEL_FAILED = 424


async def compact_thread(
    store: Store,
    threads: RunThreads,
    agent: AgentRecord,
    thread_id: str,
    *,
    env: Mapping[str, str],
    providers: ProviderPool,
) -> CompactionPart:
    """Summarise the thread's older turns with its agent's model; the record is stored."""
    spec = agent.spec
    LOG_SECRETS.add(credential_values(spec, env))  # the summary's model call may log them
    async with contextlib.AsyncExitStack() as stack:
        try:
            provider, model_id = await stack.enter_async_context(
                providers.provider(spec, {**env, **spec.env})
            )
        except (ValueError, ModelError) as exc:
            raise RunError(
                "model_error", f"cannot use the agent's model: {exc}", MODEL_FAILED
            ) from exc
        record = await _summarise(store, provider, model_id, spec, thread_id)
    part = record.compaction
    assert part is not None
    # The thread's events (and rollout) first, as runs do: never behind the store.
    await threads.record_compaction(thread_id, part)
    await store.append_thread_messages(thread_id, [record])
    return part


async def _summarise(
    store: Store, provider: Provider, model_id: str, spec: AgentSpec, thread_id: str
) -> Message:
    model = model_reference(spec)
    compactor = Compactor(
        provider,
        spec.system_prompt or None,
        [],
        ModelSettings(model=model_id, max_tokens=spec.max_tokens or 8192),
        spec.context_window or default_context_window(model) or DEFAULT_CONTEXT_WINDOW,
        spec.compact_at or DEFAULT_COMPACT_AT,
    )
    try:
        conversation = await store.thread_messages(thread_id)
        return await compactor.compact(
            ContextMeter(), conversation, summarize=True, reason="manual"
        )
    except NothingToCompact as exc:
        raise InvalidRequest(str(exc), code="nothing_to_compact") from exc
    except CompactionFailed as exc:
        raise RunError("context_overflow", str(exc), 409) from exc
    except ModelError as exc:
        raise RunError(
            "model_error", f"the summary request failed: {exc.code}: {exc.message}", MODEL_FAILED
        ) from exc
