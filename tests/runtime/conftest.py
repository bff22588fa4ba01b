"""Fixtures of the runtime tests: a real SQLite store, scripted providers, a RunManager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.events import Event
from runtime.runs import RunManager
from runtime.store import Store
from tests.fakes.scripted_provider import ScriptedFactory


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "state")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def factory() -> ScriptedFactory:
    return ScriptedFactory()


@pytest.fixture
async def manager(
    store: Store, workspace: Path, factory: ScriptedFactory
) -> AsyncIterator[RunManager]:
    async with RunManager(store, workspace, provider_factory=factory, env={}) as started:
        yield started


@pytest.fixture
def event_read_limits(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The `limit` of every `store.events_after` read from here on, in order."""
    limits: list[int | None] = []
    read = store.events_after

    async def recording(run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        limits.append(limit)
        return await read(run_id, after, limit)

    monkeypatch.setattr(store, "events_after", recording)
    return limits
