"""Helpers for the workspace tool tests: a Toolbox on a fresh workspace that records events.

Each test module declares its own `harness` fixture with `open_harness` (a shared conftest
would collide with other tool modules' fixtures)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tools.textfile
from tools.base import Toolbox, ToolResult
from tools.workspace import AGENTD_DIR


@dataclass
class Harness:
    root: Path
    box: Toolbox
    events: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, name: str, **args: Any) -> ToolResult:
        return await self.box.call(name, args)

    def write(self, files: dict[str, str | bytes]) -> None:
        write_tree(self.root, files)

    def tree(self) -> dict[str, bytes]:
        return read_tree(self.root)


def envelope(*body: str) -> str:
    """A patch envelope (`*** Begin Patch` ... `*** End Patch`) around these lines."""
    return "\n".join(["*** Begin Patch", *body, "*** End Patch"]) + "\n"


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root (symlinks and their targets excluded), by relative path;
    not the daemon's own directory (`.agentd`: apply_patch's spare files, rollouts)."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and not path.is_symlink()
        and path.relative_to(root).parts[0] != AGENTD_DIR
    }


def hidden_leftovers(root: Path) -> list[Path]:
    """Hidden files and directories under root (a commit's temporary files left behind), not
    counting the daemon's own directory."""
    return [path for path in root.rglob(".*") if path.relative_to(root).parts[0] != AGENTD_DIR]


@asynccontextmanager
async def open_harness(workspace: Path, **toolbox_args: Any) -> AsyncIterator[Harness]:
    events: list[dict[str, Any]] = []
    async with Toolbox(workspace, on_event=events.append, **toolbox_args) as box:
        yield Harness(root=box.workspace.root, box=box, events=events)


def fail_swaps(
    monkeypatch: pytest.MonkeyPatch, error_for: Callable[[str, str], OSError | None]
) -> list[str]:
    """Make `commit_writes` fail each swap (source, target) that `error_for` gives an error
    for, whether it swaps by exchange or by `os.replace` (see the `swap` fixture); the list
    returned names the target of every swap and rename that succeeded, in order (those of a
    rollback too)."""
    swapped: list[str] = []

    def failing(real: Callable[[str, str], None]) -> Callable[[str, str], None]:
        def swap(source: str, target: str) -> None:
            error = error_for(os.fspath(source), os.fspath(target))
            if error is not None:
                raise error
            real(source, target)
            swapped.append(Path(target).name)

        return swap

    monkeypatch.setattr(os, "replace", failing(os.replace))  # what tools.textfile calls
    if tools.textfile.rename_exchange is not None:
        monkeypatch.setattr(
            tools.textfile, "rename_exchange", failing(tools.textfile.rename_exchange)
        )
    return swapped
