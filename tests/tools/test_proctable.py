"""The process table interface (tools/proctable.py) against real processes, with each
implementation: `proc` (Linux's /proc) and `psutil` (the portable path macOS takes, forced
here on Linux)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import psutil
import pytest

from tools.proctable import (
    PROCESS_TAG_VAR,
    ProcessTable,
    ProcTable,
    descendants,
    listening_ports,
    parse_proc_net_tcp,
)
from tools.sock_diag import listening_tcp


@pytest.fixture
def shell() -> Iterator[subprocess.Popen[str]]:
    """`sh` with two children, a grandchild, and a tag in its environment."""
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            "sleep 1001 & echo $!; sh -c 'sleep 1002 & echo $!; wait' & echo $!; wait",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, PROCESS_TAG_VAR: "test-owner/run_1/7"},
        start_new_session=True,
    )
    yield proc
    os.killpg(proc.pid, 9)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


async def test_descendants_of_a_shell_and_their_tags(
    shell: subprocess.Popen[str], process_table: ProcessTable
) -> None:
    assert shell.stdout is not None
    with anyio.fail_after(20):
        # the order of the lines is not fixed: `sh -c` echoes its own $! when it runs
        pids = {int(await anyio.to_thread.run_sync(shell.stdout.readline)) for _ in range(3)}
        # `$!` is echoed as soon as the child is forked: until it has exec'd and waits
        # (`sleep`, or the inner `sh` in `wait`) its environment can read as empty. Nothing
        # to await: look until every one sleeps.
        while not all(psutil.Process(pid).status() == psutil.STATUS_SLEEPING for pid in pids):
            await anyio.sleep(0.01)
    table = process_table.scan(tags=True)
    assert table is not None
    assert pids <= descendants(table, shell.pid)
    assert shell.pid not in descendants(table, shell.pid)
    for pid in pids | {shell.pid}:
        assert table[pid].tag == "test-owner/run_1/7"
        assert table[pid].state not in ("Z", "X")
    assert table[shell.pid].pgrp == table[shell.pid].sid == shell.pid
    environ = process_table.environ(shell.pid)
    assert environ is not None and environ[PROCESS_TAG_VAR] == "test-owner/run_1/7"
    info = process_table.info(shell.pid)
    assert info is not None and info.ppid == os.getpid() and info.tag is None
    assert process_table.command(shell.pid) == "sh"
    assert process_table.info(_gone_pid()) is None
    assert process_table.environ(_gone_pid()) is None


async def test_listening_ports_of_a_set_of_pids(process_table: ProcessTable) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    listener = subprocess.Popen(
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
        assert listener.stdout is not None
        with anyio.fail_after(20):
            assert await anyio.to_thread.run_sync(listener.stdout.readline) == b"ready\n"
        assert listening_ports(process_table, [listener.pid]) == {port: listener.pid}
        assert listening_ports(process_table, [os.getpid()]).get(port) is None
        everything = process_table.listening()
        assert any(s.port == port and s.pid == listener.pid for s in everything)
        assert ("127.0.0.1", port) in {(s.address, s.port) for s in everything}
    finally:
        listener.kill()
        listener.wait()
        for stream in (listener.stdin, listener.stdout):
            if stream is not None:
                stream.close()


def _gone_pid() -> int:
    """A pid that named a process which has exited and been reaped."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _proc_net_listeners() -> set[tuple[str, int, int | None]]:
    found = set()
    for name, ipv6 in (("tcp", False), ("tcp6", True)):
        with open(f"/proc/net/{name}") as table:
            found |= {
                (s.address, s.port, s.inode) for s in parse_proc_net_tcp(table.read(), ipv6=ipv6)
            }
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sock_diag is Linux's")
def test_sock_diag_sees_the_listeners_proc_net_tcp_lists() -> None:
    """The netlink answer (tools/sock_diag.py) is the same table /proc/net/tcp{,6} spells as
    text: every listener with its address, port and inode, IPv4 and IPv6."""
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6, socket.socket() as idle:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::1", 0))
        v6.listen()
        idle.bind(("127.0.0.1", 0))  # bound, not listening: not a listener
        diagnosed = listening_tcp()
        assert diagnosed is not None
        assert set(diagnosed) == _proc_net_listeners()
        ports = {(address, port) for address, port, _ in diagnosed}
        assert ("127.0.0.1", v4.getsockname()[1]) in ports
        assert ("::1", v6.getsockname()[1]) in ports
        assert ("127.0.0.1", idle.getsockname()[1]) not in ports
        before = ProcTable().listeners_key()
    assert ProcTable().listeners_key() != before  # closing a listener changes the key
