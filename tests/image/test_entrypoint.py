"""The image's exact ENTRYPOINT, run outside a container: with the image's ENV, a token, a
free port and temporary directories standing in for /workspace and the /state volume, it
serves the API (health without auth, everything else behind the token) and exits 0 on
SIGTERM, as `docker stop` sends it. Without a token it refuses to listen on 0.0.0.0."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import agentd_argv, clean_env, free_port, http_get, wait_until
from tests.image.test_dockerfile import DOCKERFILE, parse_instructions

TOKEN = "entrypoint-test-token"


def image_entrypoint() -> list[str]:
    (entrypoint,) = [
        rest for kw, rest in parse_instructions(DOCKERFILE.read_text()) if kw == "ENTRYPOINT"
    ]
    argv: list[str] = json.loads(entrypoint)
    if argv[0] in ("tini", "dumb-init") and shutil.which(argv[0]) is None:
        argv = argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
    return argv


def image_env() -> dict[str, str]:
    """The ENV instructions' variables (KEY=VALUE form, several per instruction)."""
    env: dict[str, str] = {}
    for keyword, rest in parse_instructions(DOCKERFILE.read_text()):
        if keyword == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def localise(argv: list[str], paths: dict[str, Path]) -> list[str]:
    """The command line with `agentd` resolved here and the image's paths replaced."""
    if argv[0] == "agentd":
        argv = [*agentd_argv(), *argv[1:]]
    return [str(paths[a]) if a in paths else a for a in argv]


@pytest.fixture
def image_paths(tmp_path: Path) -> dict[str, Path]:
    paths = {"/workspace": tmp_path / "workspace", "/state": tmp_path / "state"}
    for path in paths.values():
        path.mkdir()
    return paths


def start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def entrypoint(image_paths: dict[str, Path]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    image = {k: str(image_paths.get(v, v)) for k, v in image_env().items()}
    overrides = {
        "AGENTD_TOKEN": TOKEN,
        "AGENTD_PORT": str(port),
        "AGENTD_STATE_DIR": str(image_paths["/state"]),
    }
    env = clean_env(**{**image, **overrides})
    proc = start(localise(image_entrypoint(), image_paths), env, image_paths["/workspace"])
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()
            try:
                return http_get(url + "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(healthy, "the entrypoint to answer /healthz")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_the_entrypoint_line_is_agentd_serve_on_all_interfaces() -> None:
    argv = image_entrypoint()
    assert argv[:2] == ["agentd", "serve"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_entrypoint_serves_with_the_token(
    entrypoint: tuple[subprocess.Popen[str], str], image_paths: dict[str, Path]
) -> None:
    proc, url = entrypoint
    assert http_get(url + "/healthz")[0] == 200
    status, body = http_get(url + "/v1/agents")
    assert status == 401 and json.loads(body)["error"]["code"]
    status, body = http_get(url + "/v1/agents", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["data"] == []
    status, _ = http_get(url + "/v1/agents", {"Authorization": "Bearer wrong"})
    assert status == 401
    # the state lives on the volume, not in the workspace
    assert any(image_paths["/state"].iterdir())
    assert not any(image_paths["/workspace"].iterdir())

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_entrypoint_without_a_token_refuses_to_listen(image_paths: dict[str, Path]) -> None:
    env = clean_env(AGENTD_PORT=str(free_port()), AGENTD_STATE_DIR=str(image_paths["/state"]))
    proc = start(localise(image_entrypoint(), image_paths), env, image_paths["/workspace"])
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "without an API token" in err
