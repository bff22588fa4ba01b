"""Ids and timestamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from runtime.ids import format_ts, new_id, parse_ts, ulid, utc_now


def test_ids_are_prefixed_ulids_that_sort_by_time() -> None:
    run_id = new_id("run")
    assert re.fullmatch(r"run_[0-9A-HJKMNP-TV-Z]{26}", run_id)
    earlier, later = ulid(1_700_000_000_000), ulid(1_700_000_000_001)
    assert earlier < later and earlier[:10] != later[:10]
    assert len({new_id("thr") for _ in range(1000)}) == 1000


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
    moment = datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=timezone(timedelta(hours=2)))
    assert format_ts(moment) == "2025-03-04T03:06:07.891Z"
    assert parse_ts("2025-03-04T03:06:07.891Z") == datetime(2025, 3, 4, 3, 6, 7, 891000, UTC)
    with pytest.raises(ValueError):
        format_ts(datetime(2025, 1, 1))
