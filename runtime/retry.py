"""The one retry policy: which HTTP statuses are worth another attempt, how long to wait (the
server's `Retry-After`, or exponential backoff with jitter) and when to give up.

Model calls (`runtime.providers.retry`) and webhook deliveries (`runtime.api.webhooks`) both
use it; they differ only in their numbers (attempts, delays), not in their rules:

- 408, 409, 425, 429 and every 5xx are retried; any other status is final;
- the wait honours `retry-after-ms`, then `retry-after` (seconds or an HTTP date), capped at
  `max_retry_after`, and otherwise grows exponentially from `base_delay` with jitter.
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Statuses worth another attempt, besides every 5xx: a timeout, a conflict that may clear,
# "too early", and rate limiting.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def retryable_status(status: int) -> bool:
    """Whether an HTTP error status is worth another attempt."""
    return status in RETRYABLE_STATUSES or status >= 500


Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried.

    `max_attempts` counts the first try. The backoff before retry `n` (1-based) is
    `min(max_delay, base_delay * 2**(n-1))` scaled by a random factor in `[1-jitter, 1]`;
    a server-sent `retry-after-ms` / `retry-after` replaces it (capped at
    `max_retry_after`).
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0
    jitter: float = 0.25
    # How to wait between attempts (tests inject a recorder); None = `anyio.sleep`.
    sleep: Sleep | None = field(default=None, compare=False)

    def backoff(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `retry_number` (1-based); `retry_after` is the
        server's own wait (`parse_retry_after`), if it sent one."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)
        delay = min(self.max_delay, self.base_delay * 2.0 ** max(0, retry_number - 1))
        return float(delay * (1 - self.jitter * random.random()))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        """The policy of model calls: `AGENTD_MODEL_MAX_ATTEMPTS` and
        `AGENTD_MODEL_RETRY_BASE_MS` tune the defaults (invalid values are ignored)."""
        env = os.environ if env is None else env
        policy = cls()
        try:
            if attempts := env.get("AGENTD_MODEL_MAX_ATTEMPTS"):
                policy = replace(policy, max_attempts=max(1, int(attempts)))
        except ValueError:
            pass
        try:
            if base_ms := env.get("AGENTD_MODEL_RETRY_BASE_MS"):
                policy = replace(policy, base_delay=max(0.0, float(base_ms) / 1000))
        except ValueError:
            pass
        return policy


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(raw)
    if parsed is None:
        return None
    return max(0.0, float(email.utils.mktime_tz(parsed) - time.time()))
