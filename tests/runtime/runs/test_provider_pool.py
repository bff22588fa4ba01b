"""The daemon's provider pool: runs with the same model and environment share one provider
(one SDK client); others, replayed cassettes and injected factories get their own."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from runtime.agents import AgentSpec
from runtime.providers.base import Provider
from runtime.providers.sdk_adapter import SdkAdapter
from runtime.runs.provider_factory import ProviderPool
from tests.fakes.scripted_provider import ScriptedFactory

ENV = {"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}


def spec(model: str) -> AgentSpec:
    return AgentSpec.model_validate({"slug": "pooled", "model": model})


def closed(provider: Provider) -> bool:
    assert isinstance(provider, SdkAdapter)
    return bool(provider.client().is_closed())


async def test_runs_arriving_together_share_one_provider_until_the_pool_closes() -> None:
    pool = ProviderPool()
    seen: list[Provider] = []
    inside = anyio.Event()
    release = anyio.Event()

    async def run() -> None:
        async with pool.provider(spec("claude-sonnet-4-6"), ENV) as (provider, model_id):
            assert model_id == "claude-sonnet-4-6"
            seen.append(provider)
            if len(seen) == 5:
                inside.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(run)
        with anyio.fail_after(30):
            await inside.wait()
        release.set()
    assert all(p is seen[0] for p in seen)
    assert not closed(seen[0])  # idle, kept for the next run
    async with pool.provider(spec("claude-sonnet-4-6"), dict(ENV)) as (again, _):
        assert again is seen[0]
    await pool.aclose()
    assert closed(seen[0])


async def test_another_model_or_environment_gets_its_own_provider() -> None:
    pool = ProviderPool()
    try:
        async with (
            pool.provider(spec("claude-sonnet-4-6"), ENV) as (first, _),
            pool.provider(spec("claude-opus-4-1"), ENV) as (other_model, _),
            pool.provider(spec("claude-sonnet-4-6"), {**ENV, "ANTHROPIC_API_KEY": "sk-2"}) as (
                other_key,
                _,
            ),
        ):
            assert len({id(first), id(other_model), id(other_key)}) == 3
    finally:
        await pool.aclose()


async def test_idle_providers_beyond_the_limit_are_closed_oldest_first() -> None:
    pool = ProviderPool(idle_limit=1)
    try:
        async with pool.provider(spec("claude-sonnet-4-6"), ENV) as (old, _):
            pass
        async with pool.provider(spec("claude-opus-4-1"), ENV) as (new, _):
            assert not closed(old)  # in use: `new`; idle: `old`, within the limit
        assert closed(old) and not closed(new)
    finally:
        await pool.aclose()


async def test_replayed_cassettes_and_injected_factories_serve_one_run_each(
    tmp_path: Path,
) -> None:
    cassette = tmp_path / "run.jsonl"
    cassette.write_text(json.dumps({"turn": 1}) + "\n")
    pool = ProviderPool()
    async with pool.provider(spec(f"replay:{cassette}"), ENV) as (first, _):
        pass
    async with pool.provider(spec(f"replay:{cassette}"), ENV) as (second, _):
        assert second is not first
    scripted = ProviderPool(ScriptedFactory())
    async with scripted.provider(spec("claude-sonnet-4-6"), ENV) as (one, _):
        pass
    async with scripted.provider(spec("claude-sonnet-4-6"), ENV) as (two, _):
        assert two is not one
    await pool.aclose()
    await scripted.aclose()
