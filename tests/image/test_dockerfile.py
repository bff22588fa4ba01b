"""The sandbox image's Dockerfile has the properties the platform relies on.

There is no Docker engine on the build machines, so the file is parsed and checked here,
and linted with hadolint when it is installed (it is in the [test] extra).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.needs import need_program

DOCKERFILE = Path(__file__).resolve().parents[2] / "sandbox_image" / "Dockerfile"


def parse_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_instructions(DOCKERFILE.read_text())


def args_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in instructions if kw == keyword]


def test_multi_stage_build_installs_the_wheel(instructions: list[tuple[str, str]]) -> None:
    froms = args_of(instructions, "FROM")
    assert len(froms) == 2
    assert "slim" in froms[0] and froms[0].endswith("AS build")
    assert "slim" in froms[1]
    runs = " ".join(args_of(instructions, "RUN"))
    assert "pip wheel" in runs
    assert any(c.startswith("--from=build") for c in args_of(instructions, "COPY"))
    assert "pip install --no-cache-dir /wheels/*.whl" in runs


def test_agent_tooling_is_installed(instructions: list[tuple[str, str]]) -> None:
    apt = next(r for r in args_of(instructions, "RUN") if "apt-get install" in r)
    for package in (
        "git",
        "ripgrep",
        "curl",
        "build-essential",
        "nodejs",
        "npm",
        "python3-venv",
        "tini",
    ):
        assert f" {package} " in f" {apt} ", package
    assert "rm -rf /var/lib/apt/lists/*" in apt


def test_runs_as_non_root_owning_the_workspace(instructions: list[tuple[str, str]]) -> None:
    users = args_of(instructions, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(args_of(instructions, "RUN"))
    assert "useradd" in runs and "chown agent:agent /workspace" in runs
    assert args_of(instructions, "WORKDIR")[-1] == "/workspace"


def test_serves_on_7777_with_healthcheck_and_state_volume(
    instructions: list[tuple[str, str]],
) -> None:
    assert args_of(instructions, "EXPOSE") == ["7777"]
    (healthcheck,) = args_of(instructions, "HEALTHCHECK")
    assert "/healthz" in healthcheck and "7777" in healthcheck
    assert json.loads(args_of(instructions, "VOLUME")[0]) == ["/state"]
    env = " ".join(args_of(instructions, "ENV"))
    assert "RUNTOOLS_STATE_DIR=/state" in env


def test_entrypoint_is_tini_then_agentd_serve(instructions: list[tuple[str, str]]) -> None:
    (entrypoint,) = args_of(instructions, "ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert argv[:2] == ["tini", "--"]
    assert argv[2:] == ["agentd", "serve", "--host", "0.0.0.0", "--workspace", "/workspace"]


def test_hadolint_is_clean() -> None:
    hadolint = need_program("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
