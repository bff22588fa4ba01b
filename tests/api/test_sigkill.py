"""SIGKILL of `agentd serve` at seeded random points of a run with text and tool calls, and
a restart on the same state dir: events, thread, rollout and workspace intact, and the thread
carries on (see tests/api/kill_points.py for the run and every check). A failing seed is
rerun alone with `AGENTD_KILL_SEEDS=<seed>`; benchmarks/faults_bench.py runs many more."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.kill_points import kill_at_random_point, seeds_from_env


@pytest.mark.parametrize("seed", seeds_from_env([3, 17, 29]))
async def test_sigkill_at_a_random_point_keeps_events_thread_and_workspace(
    seed: int, tmp_path: Path
) -> None:
    report = await kill_at_random_point(seed, tmp_path)
    print(report.line())  # the kill point, for the record (-s shows it)
    assert report.status in ("interrupted", "completed")
    # The run may have had fewer events than the reference run (output is coalesced by time).
    assert report.received >= report.kill_after or report.status == "completed"
