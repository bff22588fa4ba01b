"""Compacting a thread between runs (`POST /v1/run/threads/{id}/compact`).

The thread's agent model summarises the older part of the stored conversation (as
`runtime.compaction` does inside a run when the window fills), and the record is appended to
the thread, so its next run starts from the compacted view. The caller (the `RunManager`)
holds the thread meanwhile, so no run starts on it and it is not deleted; the record is
written only to a thread that still exists. A replayed cassette's thread is never compacted
(it answers what was recorded, whatever it is asked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.agents import AgentRecord, AgentSpec
from runtime.compaction import (
    DEFAULT_COMPACT_AT,
    CompactionFailed,
    Compactor,
    ContextMeter,
    NothingToCompact,
    SummaryObserver,
    SummaryUnusable,
)
from runtime.events import LOG_SECRETS
from runtime.messages import CompactionPart, Message
from runtime.providers.base import ModelError, ModelSettings, Provider
from runtime.providers.capabilities import DEFAULT_CONTEXT_WINDOW
from runtime.providers.registry import adapter_kind, default_context_window
from runtime.runs.credentials import credential_values
from runtime.runs.errors import InvalidRequest, NotFound, RunError
from runtime.runs.provider_factory import ProviderPool, model_reference
from runtime.runs.threads import RunThreads
from runtime.store import Store
from runtime.usage import Usage

if TYPE_CHECKING:
    from runtime.loop import LoopMetrics

# A model the summary needed failed: the request depended on it (HTTP 424 Failed Dependency).
MODEL_FAILED = 424


@dataclass(frozen=True)
class ThreadCompaction:
    """What compacting a thread did: the record appended to it, and what its summary
    request cost (a run's usage shape)."""

    record: CompactionPart
    usage: Usage


async def compact_thread(
    store: Store,
    threads: RunThreads,
    agent: AgentRecord,
    thread_id: str,
    *,
    env: Mapping[str, str],
    providers: ProviderPool,
    metrics: LoopMetrics | None = None,
) -> ThreadCompaction:
    """Summarise the thread's older turns with its agent's model; the record is stored.
    The summary request's tokens are reported to `metrics` (even when its answer is no
    usable summary) and returned."""
    spec = agent.spec
    if adapter_kind(model_reference(spec)) == "replay":
        raise InvalidRequest(
            f"thread {thread_id!r} belongs to agent {spec.slug!r}, which replays a recorded "
            "cassette: it answers what was recorded, not a request to summarise, so its "
            "threads are never compacted",
            code="not_compactable",
        )
    # Deleted after the caller found it, before it held it: nothing to compact.
    await _ensure_exists(store, thread_id)
    LOG_SECRETS.add(credential_values(spec, env))  # the summary's model call may log them
    spent = Usage()

    async def summary_answered(usage: Usage, seconds: float) -> None:
        nonlocal spent
        spent = spent + usage
        if metrics is not None:
            metrics.model_turn_finished(usage, seconds)

    async with contextlib.AsyncExitStack() as stack:
        try:
            provider, model_id = await stack.enter_async_context(
                providers.provider(spec, {**env, **spec.env})
            )
        except (ValueError, ModelError) as exc:
            raise RunError(
                "model_error", f"cannot use the agent's model: {exc}", MODEL_FAILED
            ) from exc
        record = await _summarise(store, provider, model_id, spec, thread_id, summary_answered)
    part = record.compaction
    assert part is not None
    # Nothing is recorded for a thread that is gone (the caller's hold keeps it from being
    # deleted through the API meanwhile; this is for anything else that removed it).
    await _ensure_exists(store, thread_id)
    # The thread's events (and rollout) first, as runs do: never behind the store.
    await threads.record_compaction(thread_id, part)
    try:
        await store.append_thread_messages(thread_id, [record])
    except KeyError as exc:
        raise NotFound(f"thread {thread_id!r} no longer exists") from exc
    return ThreadCompaction(record=part, usage=spent)


async def _ensure_exists(store: Store, thread_id: str) -> None:
    if await store.get_thread(thread_id) is None:
        raise NotFound(f"thread {thread_id!r} no longer exists")


async def _summarise(
    store: Store,
    provider: Provider,
    model_id: str,
    spec: AgentSpec,
    thread_id: str,
    on_summary: SummaryObserver,
) -> Message:
    model = model_reference(spec)
    compactor = Compactor(
        provider,
        spec.system_prompt or None,
        [],
        ModelSettings(model=model_id, max_tokens=spec.max_tokens or 8192),
        spec.context_window or default_context_window(model) or DEFAULT_CONTEXT_WINDOW,
        spec.compact_at or DEFAULT_COMPACT_AT,
        on_summary=on_summary,
    )
    try:
        conversation = await store.thread_messages(thread_id)
        return await compactor.compact(
            ContextMeter(), conversation, summarize=True, reason="manual"
        )
    except NothingToCompact as exc:
        raise InvalidRequest(str(exc), code="nothing_to_compact") from exc
    except CompactionFailed as exc:
        # The thread's state, not a conflict with whatever holds it (409 means busy).
        raise InvalidRequest(str(exc), code="context_overflow") from exc
    except SummaryUnusable as exc:
        raise RunError("model_error", str(exc), MODEL_FAILED) from exc
    except ModelError as exc:
        raise RunError(
            "model_error", f"the summary request failed: {exc.code}: {exc.message}", MODEL_FAILED
        ) from exc
