"""The codebase stays `ruff check` and `ruff format` clean (CONVENTIONS §7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.needs import need_module

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["runtime", "tools", "tests", "benchmarks"]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *TARGETS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_ruff_check_and_format() -> None:
    need_module("ruff")
    check = _ruff("check")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = _ruff("format", "--check")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean() -> None:
    """CONVENTIONS §2: runtime/ and tools/ are `mypy --strict` clean (settings in pyproject)."""
    need_module("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
