"""Fixtures for the provider tests: the fake model server, a retry policy that never waits,
and scripts in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runtime.providers.base import AssistantTurn, Delta, StreamItem
from runtime.providers.retry import RetryPolicy
from tests.fakes.model_server import FakeModelServer

ROOT = Path(__file__).resolve().parents[2]


def fresh_interpreter(module: str, *args: str, env: Mapping[str, str] | None = None) -> Any:
    """`python -m module args...` from the repository root, in a fresh interpreter (what it
    checks happens once per process): the JSON of the last line it printed."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


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
