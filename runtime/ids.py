"""Identifiers and timestamps for stored records and events.

Ids are a prefix plus a ULID (48-bit millisecond time + 80 random bits in Crockford base32),
so ids of one kind sort by creation time: `run_01J9Z3…`, `thr_…`, `agt_…`. Timestamps are
RFC 3339 in UTC with milliseconds: `2025-01-31T12:00:00.123Z`.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# A thread id a caller may choose (`threadId`): it also names the thread's rollout file, so
# nothing that could be a path.
THREAD_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
THREAD_ID_RULE = "1–128 letters, digits, '_' or '-'"


def is_thread_id(value: str) -> bool:
    return re.fullmatch(THREAD_ID_PATTERN, value) is not None


def ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID: time-ordered to the millisecond, 80 random bits after that."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`<prefix>_<ulid>`, e.g. `new_id("run")` → `run_01J9Z3…`."""
    return f"{prefix}_{ulid()}"


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (as written by `utc_now`, or with an offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
