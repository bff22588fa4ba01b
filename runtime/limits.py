"""The documented limits of an agent's settings and a run's overrides (values past them are
refused, not stored): shared by `runtime.agents` and `runtime.runs.run`, which need them
without each other."""

from __future__ import annotations

MAX_ITERATIONS = 100
MAX_TOKENS = 128_000
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_CONCURRENT = 10_000
MIN_CONTEXT_WINDOW = 2_048
MAX_CONTEXT_WINDOW = 10_000_000
