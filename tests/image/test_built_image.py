"""The built sandbox image, run: `./run image` builds it and runs these tests against it
(AGENTD_IMAGE names the image, AGENTD_IMAGE_ENGINE is `docker` or `buildah`).

The image's own entrypoint, environment and user serve the API with a token; a tool call runs
as the agent user in /workspace with the tools an agent reaches for; the agent's Python cannot
break agentd's; the HEALTHCHECK follows the configured port; the offline demo completes
inside the image. With buildah (no Docker engine) a working container runs the entrypoint
with `buildah run --isolation chroot`, which shares this machine's network, as `docker run
--network host` does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import REPO, free_port, http_get, wait_until

IMAGE = os.environ.get("AGENTD_IMAGE", "")
ENGINE = os.environ.get("AGENTD_IMAGE_ENGINE", "docker")
TOKEN = "image-smoke-token"

pytestmark = pytest.mark.skipif(
    not IMAGE, reason="no image to run: `./run image` builds one and runs these tests in it"
)


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`argv`'s outcome; past `timeout`, it and everything it started are killed."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def checked(argv: list[str], timeout: float = 60) -> str:
    result = run(argv, timeout)
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout.strip()


def descendants(pid: int) -> list[int]:
    """The processes under `pid`, parents before their children."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found: list[int] = []
    queue = list(parents.get(pid, []))
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(parents.get(current, []))
    return found


def process_name(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def kill_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL a `buildah run` and everything under it: killed alone, it leaves its command
    running, reparented to init."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate()


class Container:
    """One container of the image: the daemon started from the image's ENTRYPOINT (and
    stopped with SIGTERM), and commands run beside it, as the image's user."""

    def __init__(self) -> None:
        if ENGINE == "buildah":
            data = json.loads(checked(["buildah", "inspect", "--type", "image", IMAGE]))
            self.config: dict[str, Any] = data["Docker"]["config"]
            self.name = checked(["buildah", "from", "--pull=never", IMAGE])
        else:
            (data,) = json.loads(checked(["docker", "image", "inspect", IMAGE]))
            self.config = data["Config"]
            self.name = f"agentd-smoke-{os.getpid()}"
        self.daemon: subprocess.Popen[str] | None = None

    def _env_flags(self, env: dict[str, str]) -> list[str]:
        return [flag for key, value in env.items() for flag in ("--env", f"{key}={value}")]

    def start_daemon(self, env: dict[str, str]) -> None:
        if ENGINE == "buildah":
            # tini reaps as PID 1 does in a container (it is not PID 1 under buildah run)
            env = {**env, "TINI_SUBREAPER": "1"}
            argv = ["buildah", "run", "--isolation", "chroot", *self._env_flags(env), self.name]
            self.daemon = subprocess.Popen(
                [*argv, "--", *self.config["Entrypoint"]],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        else:
            run(["docker", "rm", "--force", self.name])
            checked(
                ["docker", "run", "--detach", "--network", "host", "--name", self.name]
                + [f"--env={key}={value}" for key, value in env.items()]
                + [IMAGE]
            )

    def daemon_exited(self) -> str | None:
        """The daemon's output if it has exited, else None."""
        if ENGINE == "buildah":
            assert self.daemon is not None
            return None if self.daemon.poll() is None else self.daemon.communicate()[0]
        state = checked(["docker", "inspect", "--format", "{{.State.Running}}", self.name])
        return None if state == "true" else checked(["docker", "logs", self.name])

    def stop_daemon(self) -> int:
        """SIGTERM to the entrypoint's first process, as `docker stop` sends it; the exit
        status. (`buildah run` kills its command on SIGTERM rather than forward it, but with
        chroot isolation the container's processes are this machine's: tini is signalled.)"""
        if ENGINE == "buildah":
            assert self.daemon is not None
            first = self.config["Entrypoint"][0]
            (tini, *_) = [p for p in descendants(self.daemon.pid) if process_name(p) == first]
            os.kill(tini, signal.SIGTERM)
            try:
                self.daemon.communicate(timeout=30)
            finally:
                if self.daemon.poll() is None:
                    kill_tree(self.daemon)
            return self.daemon.returncode
        checked(["docker", "stop", "--time", "30", self.name], timeout=60)
        return int(checked(["docker", "inspect", "--format", "{{.State.ExitCode}}", self.name]))

    def exec(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A command in the container, as the image's user in its working directory."""
        flags = self._env_flags(env or {})
        if ENGINE == "buildah":
            return run(
                ["buildah", "run", "--isolation", "chroot", *flags, self.name, "--", *argv],
                timeout,
            )
        return run(["docker", "exec", *flags, self.name, *argv], timeout)

    def remove(self) -> None:
        if ENGINE == "buildah":
            if self.daemon is not None and self.daemon.poll() is None:
                kill_tree(self.daemon)
            run(["buildah", "rm", self.name])
        else:
            run(["docker", "rm", "--force", self.name])


class Daemon:
    """agentd serving from the image's entrypoint on a free port of this machine."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.container.start_daemon({"AGENTD_TOKEN": TOKEN, "AGENTD_PORT": str(self.port)})

        def healthy() -> bool:
            output = self.container.daemon_exited()
            assert output is None, f"the daemon exited:\n{output}"
            try:
                return http_get(self.url + "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(healthy, "the image's entrypoint to answer /healthz", timeout=60)

    def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/v1/tools/{name}",
            data=json.dumps(arguments).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            data: dict[str, Any] = json.loads(response.read())["data"]
        return data

    def shell(self, cmd: str) -> str:
        """`exec_command` through the API (a login shell, as the model gets), its output."""
        result = self.tool("exec_command", {"cmd": cmd, "yield_time_ms": 30000})
        assert not result["isError"], result["output"]
        assert result["data"]["exit_code"] == 0, result
        output: str = result["data"]["output"]
        return output.strip()


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    one = Container()
    try:
        yield one
    finally:
        one.remove()


@pytest.fixture(scope="module")
def daemon(container: Container) -> Iterator[Daemon]:
    one = Daemon(container)
    one.start()
    yield one
    assert container.stop_daemon() == 0  # SIGTERM through tini: a clean exit


def test_the_image_says_what_it_is(container: Container) -> None:
    config = container.config
    assert config["User"].split(":")[0] not in ("", "0", "root")
    assert config["WorkingDir"] == "/workspace"
    assert config["Entrypoint"][:3] == ["tini", "--", "agentd"]
    labels = config["Labels"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    head = run(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    if head.returncode == 0:  # the image was built from this checkout
        assert labels["org.opencontainers.image.revision"].startswith(head.stdout.strip())


def test_health_without_a_token_and_the_api_behind_it(daemon: Daemon) -> None:
    assert http_get(daemon.url + "/healthz")[0] == 200
    status, body = http_get(daemon.url + "/v1/agents")
    assert status == 401 and json.loads(body)["error"]["code"]
    status, body = http_get(daemon.url + "/v1/agents", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["data"] == []


def test_a_tool_call_runs_as_the_agent_user_in_the_workspace(daemon: Daemon) -> None:
    output = daemon.shell("id -un; id -u; pwd; touch owned && stat -c %U owned && rm owned")
    assert output.split() == ["agent", "1000", "/workspace", "agent"]


def test_the_healthcheck_follows_the_configured_port(container: Container, daemon: Daemon) -> None:
    kind, *check = container.config["Healthcheck"]["Test"]
    if kind == "CMD-SHELL":
        check = ["/bin/sh", "-c", *check]
    assert kind in ("CMD", "CMD-SHELL") and "AGENTD_PORT" in check[-1]
    assert container.exec(check, {"AGENTD_PORT": str(daemon.port)}).returncode == 0
    assert container.exec(check, {"AGENTD_PORT": str(free_port())}).returncode != 0


def test_the_tools_an_agent_reaches_for(daemon: Daemon) -> None:
    tools = "git curl wget jq rg unzip zip file tree less sqlite3 gcc make uv node npm pip3"
    missing = daemon.shell(f"for t in {tools}; do command -v $t >/dev/null || echo $t; done")
    assert missing.strip() == ""
    lts, node = daemon.shell(
        "node -p 'process.release.lts + \" \" + process.versions.node'"
    ).split()
    assert lts != "undefined" and int(node.split(".")[0]) >= 20, (lts, node)
    assert int(daemon.shell("npm --version").split(".")[0]) >= 10
    # a native addon builds against the image's Node headers (node-gyp downloads nothing)
    addon = daemon.shell(
        "mkdir -p /tmp/addon && cd /tmp/addon"
        """ && echo '{"targets": [{"target_name": "a", "sources": ["a.c"]}]}' > binding.gyp"""
        " && printf '#include <node_api.h>\\nstatic napi_value init(napi_env e, napi_value x)"
        " { return x; }\\nNAPI_MODULE(NODE_GYP_MODULE_NAME, init)\\n' > a.c"
        " && node /usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
        " rebuild >/dev/null 2>&1"
        ' && node -e \'require("./build/Release/a.node"); console.log("loaded")\''
        " ; rm -rf /tmp/addon"
    )
    assert addon == "loaded", addon
    # a fresh repository commits with the image's default identity
    author = daemon.shell(
        "git init -q /tmp/repo && cd /tmp/repo && git commit -q --allow-empty -m first"
        " && git log --format=%an%n%ae && rm -rf /tmp/repo"
    )
    assert author.split() == ["agent", "agent@agentd.invalid"]
    env = daemon.shell("echo $LANG $TERM")
    assert env.split() == ["C.UTF-8", "xterm-256color"]


def test_the_agents_python_cannot_break_agentds(daemon: Daemon) -> None:
    assert daemon.shell("command -v python3") == "/usr/bin/python3"
    # agentd's dependencies are not the agent's
    assert (
        "No module named 'aiohttp'"
        in daemon.tool("exec_command", {"cmd": "python3 -c 'import aiohttp'"})["data"]["output"]
    )
    # what `pip install --user pydantic==1.*` would do, without the download: a pydantic of
    # the agent's own, first on the agent's python3 path
    plant = (
        'site=$(python3 -m site --user-site) && mkdir -p "$site/pydantic"'
        ' && echo "raise ImportError(\\"the agent\'s pydantic\\")" > "$site/pydantic/__init__.py"'
    )
    daemon.shell(plant)
    try:
        shadowed = daemon.tool("exec_command", {"cmd": "python3 -c 'import pydantic'"})
        assert "the agent's pydantic" in shadowed["data"]["output"]
        assert daemon.container.stop_daemon() == 0
        daemon.start()  # agentd starts again, on its own pydantic
        status, _ = http_get(daemon.url + "/v1/agents", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
    finally:
        daemon.shell('rm -rf "$(python3 -m site --user-site)/pydantic"')


def test_the_offline_demo_completes_in_the_image(container: Container) -> None:
    result = container.exec(["agentd", "demo", "--exit"], timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"answered HTTP 200", result.stdout), result.stdout


def test_the_daemons_state_is_on_the_state_volume(container: Container, daemon: Daemon) -> None:
    assert "/state" in container.config["Volumes"]
    assert daemon.shell("ls /state").split(), "agentd wrote nothing under /state"
    assert daemon.shell("ls -A /workspace") == ""
