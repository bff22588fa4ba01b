"""Fixtures shared by the tool tests."""

from __future__ import annotations

import os

import pytest

import tools.textfile
from tests.tools.commit_crasher import no_exchange
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


@pytest.fixture(params=["exchange", "replace"])
def swap(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """How `commit_writes` swaps each file in: `exchange` (renameat2 RENAME_EXCHANGE) or
    `replace` (`os.replace`, as where there is no exchange: macOS, a filesystem without it),
    forced here by an exchange that answers EINVAL as such a filesystem does."""
    if request.param == "exchange":
        if tools.textfile.rename_exchange is None:
            pytest.skip("no renameat2 on this system")
        probe = tmp_path_factory.mktemp("exchange")
        (probe / "a").write_text("a")
        (probe / "b").write_text("b")
        try:
            tools.textfile.rename_exchange(str(probe / "a"), str(probe / "b"))
        except OSError as exc:
            pytest.skip(f"the temporary directory's filesystem cannot exchange: {exc}")
    else:
        monkeypatch.setattr(tools.textfile, "rename_exchange", no_exchange)
    return str(request.param)
