"""Tests that need an outside program: skipped where it is missing, failed under `CI=true`.

`./run test` installs every program the suite needs (ripgrep and hadolint from the locked
test extras, mypy and ruff likewise), so in CI a missing one is a broken install, never a
reason to check less.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need_program(name: str) -> str:
    """The path of `name` on PATH; otherwise skip the test, or fail it under `CI=true`."""
    path = shutil.which(name)
    if path is None:
        missing = f"{name} is not installed (./run test installs it)"
        if in_ci():
            pytest.fail(f"{missing}; CI must not skip what it needs", pytrace=False)
        pytest.skip(missing)
    return path


def need_module(name: str) -> None:
    """Like `need_program`, for a Python package run as `python -m name`."""
    if importlib.util.find_spec(name) is None:
        missing = f"the {name} package is not installed (it is in the [test] extra)"
        if in_ci():
            pytest.fail(f"{missing}; CI must not skip what it needs", pytrace=False)
        pytest.skip(missing)
