"""`agentd serve` as a real subprocess for tests: started on a free port of 127.0.0.1 with its
state under `tmp_path / "state"` (so a second start with the same `tmp_path` restarts on the
same state dir), its stderr collected line by line, killed if the test left it running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import Process

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Proc:
    process: Process
    url: str
    log: list[str] = field(default_factory=list)


@asynccontextmanager
async def agentd(
    tmp_path: Path, workspace: Path, env: dict[str, str], *args: str
) -> AsyncIterator[Proc]:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AGENTD_STATE_DIR": str(tmp_path / "state"),
        **env,
    }
    full_env.pop("AGENTD_TOKEN", None)
    process = await anyio.open_process(
        [sys.executable, "-m", "runtime.cli", "serve", "--port", "0", *args],
        cwd=workspace,
        env=full_env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    lines: list[str] = []
    found = anyio.Event()
    url = ""

    async def read_log() -> None:
        nonlocal url
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                lines.append(line)
                match = LISTENING.search(line)
                if match and not found.is_set():
                    url = match.group(1)
                    found.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_log)
            with anyio.fail_after(20):
                await found.wait()
            yield Proc(process, url, lines)
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
