"""The sandbox image's Dockerfile has the properties the platform relies on: parsed and
checked here, and linted with hadolint (from the [test] extra). `./run image` builds the image
and runs it (tests/image/test_built_image.py).
"""

from __future__ import annotations

import json
import re
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


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first."""
    out: list[list[tuple[str, str]]] = []
    for kw, rest in instructions:
        if kw == "FROM":
            out.append([])
        if out:
            out[-1].append((kw, rest))
    return out


def test_both_stages_start_from_debian_slim_pinned_by_digest(
    instructions: list[tuple[str, str]],
) -> None:
    (base,) = [r for kw, r in instructions if kw == "ARG" and r.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"BASE_IMAGE=debian:trixie-slim@sha256:[0-9a-f]{64}", base), base
    froms = args_of(instructions, "FROM")
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


def test_the_build_stage_makes_the_wheel_and_the_runtime_installs_only_results(
    instructions: list[tuple[str, str]],
) -> None:
    build, final = stages(instructions)
    assert "pip wheel" in " ".join(args_of(build, "RUN"))
    final_copies = args_of(final, "COPY")
    # the source tree never enters the runtime stage: only the build's results do
    assert not any(c.split()[0] in ("runtime", "tools", ".") for c in final_copies)
    assert any(c.startswith("--from=build /wheels") for c in final_copies)


def test_agentd_has_its_own_virtualenv_from_the_lock_in_a_dependency_layer(
    instructions: list[tuple[str, str]],
) -> None:
    _build, final = stages(instructions)
    runs = args_of(final, "RUN")
    venv = next(r for r in runs if "-m venv" in r and "/opt/agentd" in r)
    assert "--require-hashes" in venv and "-r /opt/agentd/requirements.lock" in venv
    assert "/wheels/" not in venv
    wheel = next(r for r in runs if "/wheels/*.whl" in r)
    assert "--python /opt/agentd/bin/python" in wheel and "--no-deps" in wheel
    # the lock's layer comes before the code's, so a code change leaves the dependencies be
    copies = args_of(final, "COPY")
    lock_copy = next(i for i, c in enumerate(copies) if c.startswith("requirements.lock "))
    wheel_copy = next(i for i, c in enumerate(copies) if c.startswith("--from=build /wheels"))
    assert lock_copy < wheel_copy
    # agentd's interpreter is not on the agent's PATH: only its console script is linked
    env = " ".join(args_of(final, "ENV"))
    assert "/opt/agentd" not in env
    assert "ln -s /opt/agentd/bin/agentd /usr/local/bin/agentd" in " ".join(runs)


def test_agent_tooling_is_installed(instructions: list[tuple[str, str]]) -> None:
    _build, final = stages(instructions)
    apt = next(r for r in args_of(final, "RUN") if "apt-get install" in r)
    for package in (
        "git",
        "ripgrep",
        "curl",
        "wget",
        "build-essential",
        "python3",
        "python3-pip",
        "python3-venv",
        "tini",
        "jq",
        "unzip",
        "file",
        "tree",
        "less",
        "sqlite3",
    ):
        assert f" {package} " in f" {apt} ", package
    assert "rm -rf /var/lib/apt/lists/*" in apt and "apt-get clean" in apt
    assert "sudo" not in apt  # the agent cannot change the system or agentd (README)
    assert "git config --system user.name" in apt
    copies = args_of(final, "COPY")
    assert "--from=build /node/ /usr/local/" in copies  # Node.js LTS and npm
    assert any(c.startswith("--from=build /tools/bin/uv ") for c in copies)


def test_node_and_npm_are_checked_against_pinned_hashes(
    instructions: list[tuple[str, str]],
) -> None:
    args = dict(a.split("=", 1) for a in args_of(instructions, "ARG") if "=" in a)
    assert int(args["NODE_VERSION"].split(".")[0]) % 2 == 0  # LTS lines are the even ones
    for name in ("NODE_SHA512_X64", "NODE_SHA512_ARM64", "NPM_SHA512"):
        assert re.fullmatch(r"[0-9a-f]{128}", args[name]), name
    fetch = next(r for r in args_of(instructions, "RUN") if "node-linux-" in r)
    assert fetch.count("sha512sum --check --strict") == 2


def test_runs_as_non_root_owning_the_workspace(instructions: list[tuple[str, str]]) -> None:
    users = args_of(instructions, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(args_of(instructions, "RUN"))
    assert "useradd" in runs and "chown agent:agent /workspace" in runs
    assert args_of(instructions, "WORKDIR")[-1] == "/workspace"


def test_healthcheck_on_the_configured_port_and_state_volume(
    instructions: list[tuple[str, str]],
) -> None:
    assert args_of(instructions, "EXPOSE") == ["7777"]
    (healthcheck,) = args_of(instructions, "HEALTHCHECK")
    assert "/healthz" in healthcheck and "${AGENTD_PORT}" in healthcheck
    assert "7777" not in healthcheck
    assert json.loads(args_of(instructions, "VOLUME")[0]) == ["/state"]
    env = " ".join(args_of(instructions, "ENV"))
    assert "RUNTOOLS_STATE_DIR=/state" in env and "AGENTD_PORT=7777" in env
    assert "LANG=C.UTF-8" in env and "TERM=" in env


def test_oci_labels(instructions: list[tuple[str, str]]) -> None:
    labels = " ".join(args_of(instructions, "LABEL"))
    for key, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in labels, key


def test_entrypoint_is_tini_then_agentd_serve(instructions: list[tuple[str, str]]) -> None:
    (entrypoint,) = args_of(instructions, "ENTRYPOINT")
    argv = json.loads(entrypoint)
    assert argv[:2] == ["tini", "--"]
    assert argv[2:] == ["agentd", "serve", "--host", "0.0.0.0", "--workspace", "/workspace"]


def test_the_build_context_holds_only_what_the_dockerfile_copies(
    instructions: list[tuple[str, str]],
) -> None:
    patterns = [
        line.strip()
        for line in (DOCKERFILE.parents[1] / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything out (.git, .venv, caches, tests) ...
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = [
        src
        for copy in args_of(instructions, "COPY")
        if not copy.startswith("--from")
        for src in copy.split()[:-1]
    ]
    assert sources and set(sources) == included  # ... but what COPY takes


def test_hadolint_is_clean() -> None:
    hadolint = need_program("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
