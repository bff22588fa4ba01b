"""In-process CLI tests see the same clean environment as the subprocess ones."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_agentd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's AGENTD_URL would send in-process runs to their daemon, and a real API
    # key would let a test reach a real model.
    for name in list(os.environ):
        if name.startswith(("AGENTD_", "RUNTOOLS_")) or name in (
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "NO_COLOR",
        ):
            monkeypatch.delenv(name)
