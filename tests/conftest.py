"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def own_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests, and every process they start, have a HOME of their own. Commands run as
    login shells (exec_command's default), which read ~/.profile: a developer's profile is
    not part of what is tested, and this machine's (pyenv's rehash) can wait a minute on a
    lock a killed shell left behind."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    return root
