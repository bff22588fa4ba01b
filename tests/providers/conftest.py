"""Fixtures for the provider tests: the fake model server and a retry policy that never waits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.providers.base import AssistantTurn, Delta, StreamItem
from runtime.providers.retry import RetryPolicy
from tests.fakes.model_server import FakeModelServer


class SleepRecorder:
    """Stands in for `anyio.sleep` in the retry policy: records the waits, never waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as srv:
        yield srv


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def retry(sleeps: SleepRecorder) -> RetryPolicy:
    return RetryPolicy(max_attempts=4, base_delay=0.25, sleep=sleeps)


async def collect(stream: AsyncIterator[StreamItem]) -> tuple[list[Delta], AssistantTurn]:
    """Drain a provider stream: the deltas, and the final turn (which must come last, once)."""
    deltas: list[Delta] = []
    turns: list[AssistantTurn] = []
    async for item in stream:
        assert not turns, "nothing may follow the final AssistantTurn"
        if isinstance(item, AssistantTurn):
            turns.append(item)
        else:
            deltas.append(item)
    assert len(turns) == 1
    return deltas, turns[0]
