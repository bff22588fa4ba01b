"""Fixtures shared by the tool tests."""

from __future__ import annotations

import os

import pytest

from tools.proctable import ProcessTable, ProcTable, PsutilTable


@pytest.fixture(params=["proc", "psutil"])
def process_table(request: pytest.FixtureRequest) -> ProcessTable:
    """Each process table (tools/proctable.py), passed to the tools through ToolSettings:
    `psutil` forces the portable path (macOS's) on Linux too."""
    if request.param == "proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("needs /proc")
        return ProcTable()
    return PsutilTable()
