"""get_dev_url against real listening servers, through `Toolbox.call`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import tools.dev_url
from tests.tools.harness import Harness, open_harness
from tools.base import ToolSettings
from tools.dev_url import Port, Process, Snapshot, Socket, choose, summarise
from tools.proctable import ProcessTable, parse_proc_net_tcp

WAIT_MS = 20_000  # generous: the machine is shared; the tool returns as soon as it can


@pytest.fixture
async def harness(workspace: Path, process_table: ProcessTable) -> AsyncIterator[Harness]:
    """A toolbox reading processes through each process table (`psutil`: the portable path
    macOS takes, forced on Linux)."""
    async with open_harness(workspace, settings=ToolSettings(process_table=process_table)) as h:
        yield h


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A real `python -m http.server` in a child process, killed at the end of the test; with
    `log`, its request log (a line per request, written before the response) goes there."""

    def __init__(self, directory: Path, log: Path | None = None) -> None:
        self.port = free_port()
        with open(log or os.devnull, "wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
                cwd=directory,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    running = Server(tmp_path)
    yield running
    running.stop()


# ---------------------------------------------------------------------------------------------
# Parsing


def test_parse_proc_net_tcp() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000"
        "        0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
        "        0 4343 1 0000000000000000 100 0 0 10 0\n"
        "   2: 0100007F:8032 0100007F:B1A3 06 00000000:00000000 03:00000CEB 00000000     0"
        "        0 0 3 0000000000000000\n"
    )
    assert parse_proc_net_tcp(tcp, ipv6=False) == [
        Socket("127.0.0.1", 8080, inode=4242),
        Socket("0.0.0.0", 3000, inode=4343),
    ]
    tcp6 = (
        "  sl  local_address                         remote_address                        st\n"
        "   0: 00000000000000000000000001000000:1435 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0\n"
        "   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000  1000        0 778 1 0000000000000000 100 0 0\n"
    )
    assert parse_proc_net_tcp(tcp6, ipv6=True) == [
        Socket("::1", 5173, inode=777),
        Socket("::", 80, inode=778),
    ]


def snapshot(sockets: list[Socket], processes: dict[int, Process]) -> Snapshot:
    return Snapshot(sockets, processes.get)


PROCESSES = {
    10: Process(10, 1, "sshd", 1.0),
    20: Process(20, 1, "bash", 5.0),  # an exec session's shell
    21: Process(21, 20, "node", 6.0),  # its child: started by the agent
    22: Process(22, 20, "vite", 9.0),  # started later by the agent
    30: Process(30, 1, "postgres", 2.0),
    99: Process(99, 1, "agentd", 0.5),
}


def ports_for(
    sockets: list[Socket], agent: set[int], reserved: frozenset[int] = frozenset()
) -> list[Port]:
    return summarise(snapshot(sockets, PROCESSES), agent, reserved, own_pid=99)


def test_choose_prefers_the_agents_newest_server() -> None:
    sockets = [
        Socket("0.0.0.0", 22, 10),
        Socket("127.0.0.1", 3000, 21),
        Socket("::", 3000, 21),
        Socket("127.0.0.1", 5173, 22),
        Socket("127.0.0.1", 5432, 30),
        Socket("0.0.0.0", 8787, 99),
    ]
    ports = ports_for(sockets, agent={20})
    by_port = {p.port: p for p in ports}
    assert by_port[3000].addresses == ["127.0.0.1", "::"] and by_port[3000].by_agent
    assert by_port[8787].daemon and not by_port[5432].by_agent
    chosen = choose(ports)
    assert chosen is not None and chosen.port == 5173
    # without the newer one, the older agent server wins over unrelated listeners
    chosen = choose(ports_for([s for s in sockets if s.port != 5173], agent={20}))
    assert chosen is not None and chosen.port == 3000


def test_choose_asks_when_unclear() -> None:
    unrelated = [Socket("0.0.0.0", 22, 10), Socket("127.0.0.1", 5432, 30)]
    with pytest.raises(tools.dev_url.Ambiguous) as unclear:
        choose(ports_for(unrelated, agent=set()))
    assert [p.port for p in unclear.value.candidates] == [22, 5432]
    same_process = [Socket("127.0.0.1", 5173, 22), Socket("127.0.0.1", 24678, 22)]
    with pytest.raises(tools.dev_url.Ambiguous):
        choose(ports_for(same_process, agent={22}))
    only = choose(ports_for([Socket("127.0.0.1", 5432, 30)], agent=set()))
    assert only is not None and only.port == 5432
    # the daemon's own ports are never offered, even as the only listener
    assert choose(ports_for([Socket("0.0.0.0", 8787, 99)], agent=set())) is None
    reserved = frozenset({7000})
    assert choose(ports_for([Socket("0.0.0.0", 7000, 30)], agent=set(), reserved=reserved)) is None


# ---------------------------------------------------------------------------------------------
# Real servers


async def test_get_dev_url_for_a_port_waits_for_http(harness: Harness, server: Server) -> None:
    result = await harness.call("get_dev_url", port=server.port, wait_ms=WAIT_MS)
    assert not result.is_error, result.output
    url = f"http://localhost:{server.port}/"
    assert result.output.splitlines()[0] == url
    assert result.data["httpStatus"] == 200
    assert result.data["pids"] == [server.process.pid]
    assert f"Port {server.port} (python" in result.output
    assert harness.events == [{"type": "dev_url", "url": url, "port": server.port}]


async def test_wait_covers_a_server_that_starts_later(harness: Harness, tmp_path: Path) -> None:
    port = free_port()
    outcome: dict[str, object] = {}

    async def call() -> None:
        result = await harness.call("get_dev_url", port=port, wait_ms=WAIT_MS)
        outcome.update(result.data)

    late: subprocess.Popen[bytes] | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            # the tool is polling (nothing listens on the port yet) when the server starts
            await anyio.wait_all_tasks_blocked()
            late = subprocess.Popen(
                [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    finally:
        if late is not None:
            late.kill()
            late.wait()
    assert outcome["httpStatus"] == 200 and outcome["port"] == port


async def test_template_and_path(workspace: Path, server: Server) -> None:
    settings = ToolSettings(
        dev_url_template="https://{port}-{sandboxId}.sandboxes.example/{host}",
        sandbox_id="sb-42",
        host="box",
    )
    async with open_harness(workspace, settings=settings) as h:
        result = await h.call("get_dev_url", port=server.port, path="app/?x=1", wait_ms=WAIT_MS)
    assert not result.is_error, result.output
    assert result.data["url"] == f"https://{server.port}-sb-42.sandboxes.example/box/app/?x=1"
    assert h.events[0]["url"] == result.data["url"]


async def test_path_is_encoded_once_and_the_url_returned_is_the_one_checked(
    harness: Harness, tmp_path: Path
) -> None:
    """A space, a non-ASCII character, an escape already made (`%7e`, which yarl would
    turn into `~`) and a fragment: the URL returned, the `dev_url` event and the request
    the readiness check made hold the same encoded path."""
    log = tmp_path / "requests.log"
    server = Server(tmp_path, log)
    try:
        result = await harness.call(
            "get_dev_url", port=server.port, path="/%7e/a b/é?q=x y#top", wait_ms=WAIT_MS
        )
    finally:
        server.stop()
    assert not result.is_error, result.output
    url = f"http://localhost:{server.port}/%7e/a%20b/%C3%A9?q=x%20y#top"
    assert result.data["url"] == url and result.output.splitlines()[0] == url
    assert result.data["httpStatus"] == 404
    assert harness.events == [{"type": "dev_url", "url": url, "port": server.port}]
    assert '"GET /%7e/a%20b/%C3%A9?q=x%20y HTTP/1.1" 404' in log.read_text()


@pytest.mark.parametrize("path", ["\r\nX-Injected: 1", "/a\tb", "/a\x7fb", "/\x85"])
async def test_a_path_with_a_control_character_is_refused(
    harness: Harness, server: Server, path: str
) -> None:
    result = await harness.call("get_dev_url", port=server.port, path=path)
    assert result.is_error and result.data["code"] == "invalid_arguments"
    assert "path: Value error, contains a control character (U+" in result.output
    assert harness.events == []


async def test_no_port_picks_the_agents_server(
    harness: Harness, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def server_pid(ctx: object) -> set[int]:
        return {server.process.pid}

    monkeypatch.setattr(tools.dev_url, "agent_pids", server_pid)
    result = await harness.call("get_dev_url", wait_ms=WAIT_MS)
    assert not result.is_error, result.output
    assert result.data["port"] == server.port


async def test_reserved_port_is_refused_and_not_offered(workspace: Path, server: Server) -> None:
    settings = ToolSettings(reserved_ports=frozenset({server.port}))
    async with open_harness(workspace, settings=settings) as h:
        asked = await h.call("get_dev_url", port=server.port)
        assert asked.is_error and "the agent daemon's own port" in asked.output
        found = await h.call("get_dev_url")
        assert found.is_error or found.data["port"] != server.port
        if found.is_error:
            assert f"port {server.port}:" not in found.output.split("Listening now:")[0]


async def test_nothing_listening_on_the_port(harness: Harness, server: Server) -> None:
    up = await harness.call("get_dev_url", port=server.port, wait_ms=WAIT_MS)
    assert not up.is_error, up.output
    harness.events.clear()
    port = free_port()
    result = await harness.call("get_dev_url", port=port)
    assert result.is_error
    assert f"No server is listening on port {port}." in result.output
    assert "Listening now:" in result.output
    assert f"port {server.port}: python" in result.output
    assert harness.events == []


async def test_listener_that_never_answers_http(harness: Harness) -> None:
    port = free_port()
    silent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys\n"
            f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
            "print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert silent.stdout is not None
        assert await anyio.to_thread.run_sync(silent.stdout.readline) == b"ready\n"
        result = await harness.call("get_dev_url", port=port, wait_ms=300)
    finally:
        silent.kill()
        silent.wait()
    assert result.is_error
    assert f"Port {port} is listening but did not answer an HTTP request within 300 ms" in (
        result.output
    )


async def test_dev_server_started_with_exec_command(harness: Harness, tmp_path: Path) -> None:
    """The whole story: the agent starts a server with exec_command, get_dev_url finds it
    among whatever else listens on this machine, because the agent's session owns it."""
    if harness.box.tool("exec_command") is None:
        pytest.skip("exec_command is not available in this build")
    (harness.root / "index.html").write_text("<h1>built by the agent</h1>")
    port = free_port()
    started = await harness.call(
        "exec_command",
        cmd=f"{sys.executable} -m http.server {port} --bind 127.0.0.1",
        yield_time_ms=250,
    )
    assert not started.is_error, started.output
    assert "Process running with session ID" in started.output
    result = await harness.call("get_dev_url", wait_ms=WAIT_MS)
    assert not result.is_error, result.output
    assert result.data["port"] == port
    assert result.data["httpStatus"] == 200
    assert result.data["url"] == f"http://localhost:{port}/"
    assert {"type": "dev_url", "url": f"http://localhost:{port}/", "port": port} in harness.events


async def test_the_advice_on_starting_a_server_works(
    workspace: Path, process_table: ProcessTable
) -> None:
    """What get_dev_url's "nothing is listening" error and the descriptions of get_dev_url
    and exec_command tell the model to do, done as they say: a server run as the command
    itself, and one detached with the command they give. Each outlives the call that started
    it, is found by get_dev_url, and is killed with the toolbox. (A plain `server &`, nohup
    included, dies with its command: see test_exec.)"""
    settings = ToolSettings(process_table=process_table)
    async with open_harness(workspace, settings=settings) as h:
        exec_command, get_dev_url = h.box.tool("exec_command"), h.box.tool("get_dev_url")
        if exec_command is None:
            pytest.skip("exec_command is not available in this build")
        assert get_dev_url is not None
        port, detached_port = free_port(), free_port()
        nothing = await h.call("get_dev_url", port=port)
        assert nothing.is_error
        advice = [nothing.output, get_dev_url.description, exec_command.description]
        recipes = set()
        for text in advice:
            assert "in the background" not in text
            assert "as the command itself" in text and "killed when the command returns" in text
            recipes.update(re.findall(r"`(set -m; CMD [^`]*)`", text))
        assert len(recipes) == 2  # one form, with another log file name in exec_command's

        server = f"{sys.executable} -m http.server {port} --bind 127.0.0.1"
        started = await h.call("exec_command", cmd=server, yield_time_ms=250)
        assert started.data["session_id"] is not None, started.output
        found = await h.call("get_dev_url", port=port, wait_ms=WAIT_MS)
        assert found.data.get("httpStatus") == 200, found.output

        recipe = min(recipes).replace(
            "CMD", f"{sys.executable} -m http.server {detached_port} --bind 127.0.0.1"
        )
        detached = await h.call("exec_command", cmd=f"{recipe} echo pid=$!")
        assert detached.data["exit_code"] == 0, detached.output
        pid = int(detached.data["output"].split("pid=")[1].split()[0])
        found = await h.call("get_dev_url", port=detached_port, wait_ms=WAIT_MS)
        assert found.data.get("httpStatus") == 200, found.output
        assert found.data["pids"] == [pid]
        leader = started.data["pid"]
    with pytest.raises(ChildProcessError):
        os.waitpid(leader, os.WNOHANG)  # the session's shell: killed and reaped
    assert _gone(leader) and _gone(pid)


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie that is not this process's to reap."""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return True
    return fields[0] in "ZX" and int(fields[1]) != os.getpid()
