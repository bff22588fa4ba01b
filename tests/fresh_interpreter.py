"""Scripts that must run in a fresh interpreter (what they check happens once per process:
a first import, a first request, a process-wide cache), started from the repository root."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def json_printed(*argv: str, env: Mapping[str, str] | None = None, timeout: float = 180) -> Any:
    """`python argv...` (`-m module ...` or `-c code ...`) in a fresh interpreter: the JSON of
    the last line it printed. It must exit 0 (else its stderr is the failure)."""
    out = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])
