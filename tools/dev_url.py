"""get_dev_url: find the dev server the agent started and give the user a URL for it.

Listening TCP sockets and their processes come from the settings' process table
(tools/proctable.py): `/proc/net/tcp{,6}` matched against `/proc/<pid>/fd` on Linux, psutil
elsewhere (macOS), where only the daemon's own user's processes can be seen. The daemon's own
ports (`ToolSettings.reserved_ports`, and anything the daemon process itself listens on) are
never offered.

Without a `port`, the tool prefers ports whose process the agent started (a process of one of
its exec sessions, or a descendant of one) and among those the most recently opened one.
"Most recently opened" is approximated by the owning process's start time (as the process
table gives it): a server restarted by the agent is newer than one it started before. Ports of
the same process cannot be ordered that way, so the model is asked to choose, as it is when
several unrelated ports listen and none is the agent's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
from pydantic import Field

from tools.base import Tool, ToolArgs, ToolContext, ToolError, ToolResult
from tools.proctable import ListeningSocket, ProcessTable

MAX_WAIT_MS = 300_000
PROBE_TIMEOUT_S = 2.0


Socket = ListeningSocket


@dataclass
class Process:
    pid: int
    ppid: int | None
    command: str
    started: float  # larger is newer (the process table's start time)


@dataclass
class Port:
    """A listening port, merged over its IPv4/IPv6 sockets."""

    port: int
    addresses: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    started: float | None = None
    by_agent: bool = False
    daemon: bool = False

    def owner(self) -> str:
        pairs = zip(self.commands, self.pids, strict=True)
        return ", ".join(f"{command} pid {pid}" for command, pid in pairs) or "unknown process"

    def describe(self) -> str:
        text = f"port {self.port}: {self.owner()}, on {', '.join(self.addresses)}"
        if self.by_agent:
            text += " (started by you)"
        if self.daemon:
            text += " (the agent daemon itself, not offered)"
        return text


# ---------------------------------------------------------------------------------------------
# Discovery


@dataclass
class Snapshot:
    sockets: list[Socket]
    lookup: Callable[[int], Process | None]


def take_snapshot(procs: ProcessTable, owners: set[int] | None = None) -> Snapshot:
    """Blocking: the listening sockets now (of `owners` only, when given), and a way to
    look up their processes."""

    def lookup(pid: int) -> Process | None:
        info = procs.info(pid)
        if info is None:
            return None
        return Process(pid, info.ppid, procs.command(pid) or "?", float(info.start))

    return Snapshot(procs.listening(owners), lookup)


def summarise(
    snapshot: Snapshot, agent_pids: set[int], reserved: Iterable[int], own_pid: int
) -> list[Port]:
    """Listening ports, one entry per port, marked as the agent's or the daemon's."""
    reserved = set(reserved)
    ports: dict[int, Port] = {}
    processes: dict[int, Process | None] = {}

    def process(pid: int) -> Process | None:
        if pid not in processes:
            processes[pid] = snapshot.lookup(pid)
        return processes[pid]

    def started_by_agent(pid: int) -> bool:
        seen = 0
        current: int | None = pid
        while current and current > 1 and seen < 64:
            if current in agent_pids:
                return True
            info = process(current)
            current = info.ppid if info else None
            seen += 1
        return False

    for sock in sorted(snapshot.sockets, key=lambda s: (s.port, s.address)):
        entry = ports.setdefault(sock.port, Port(sock.port))
        if sock.address not in entry.addresses:
            entry.addresses.append(sock.address)
        if sock.port in reserved or sock.pid == own_pid:
            entry.daemon = True
        if sock.pid is None or sock.pid in entry.pids:
            continue
        info = process(sock.pid)
        entry.pids.append(sock.pid)
        entry.commands.append(info.command if info else "?")
        if info is not None and (entry.started is None or info.started > entry.started):
            entry.started = info.started
        entry.by_agent |= sock.pid != own_pid and started_by_agent(sock.pid)
    return sorted(ports.values(), key=lambda p: p.port)


def _agent_port(ports: list[Port]) -> bool:
    return any(p.by_agent and not p.daemon for p in ports)


class Ambiguous(Exception):
    def __init__(self, candidates: list[Port]) -> None:
        self.candidates = candidates


def choose(ports: list[Port]) -> Port | None:
    """The port to show without being told: see the module docstring. None if there is
    nothing to offer; raises Ambiguous when the model must pick."""
    offered = [p for p in ports if not p.daemon]
    candidates = [p for p in offered if p.by_agent] or offered
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if any(p.by_agent for p in candidates):
        ranked = sorted(candidates, key=lambda p: -1e18 if p.started is None else p.started)
        newest, runner_up = ranked[-1], ranked[-2]
        if newest.started is not None and (
            runner_up.started is None or newest.started > runner_up.started
        ):
            return newest
    raise Ambiguous(candidates)


def listing(ports: list[Port]) -> str:
    if not ports:
        return "Nothing is listening on any TCP port."
    return "Listening now:\n" + "\n".join(f"- {p.describe()}" for p in ports)


# ---------------------------------------------------------------------------------------------
# The tool


class GetDevUrlArgs(ToolArgs):
    port: int | None = Field(
        default=None, ge=1, le=65535, description="The server's port; default: found for you."
    )
    path: str = Field(default="/", description="Path to append to the URL.")
    wait_ms: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT_MS,
        description="Wait up to this long for the server to accept connections and answer HTTP.",
    )


async def agent_pids(ctx: ToolContext) -> set[int]:
    """Processes of the agent's exec sessions (none if exec_command is not in this build)."""
    try:
        from tools.exec import SessionManager
    except ModuleNotFoundError as exc:
        if exc.name != "tools.exec":
            raise
        return set()
    manager = ctx.peek_service(SessionManager)
    return await manager.pids() if manager is not None else set()


def build_url(template: str, *, port: int, sandbox_id: str, host: str, path: str) -> str:
    base = (
        template.replace("{port}", str(port))
        .replace("{sandboxId}", sandbox_id)
        .replace("{host}", host)
    )
    return base.rstrip("/") + "/" + path.lstrip("/")


async def probe_http(
    port: int, addresses: list[str], path: str, timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[int | None, str]:
    """One attempt: (HTTP status, "") or (None, why it failed)."""
    hosts = []
    for address in addresses or ["127.0.0.1"]:
        if address in ("0.0.0.0", "127.0.0.1", "*"):
            host = "127.0.0.1"
        elif address in ("::", "::1"):
            host = "[::1]"
        else:
            host = f"[{address}]" if ":" in address else address
        if host not in hosts:
            hosts.append(host)
    error = "no address to connect to"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for host in hosts:
            url = f"http://{host}:{port}/{path.lstrip('/')}"
            try:
                async with session.get(url, allow_redirects=False) as response:
                    return response.status, ""
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None, error


class GetDevUrl(Tool):
    name = "get_dev_url"
    description = (
        "Get the URL where the user can open a server you started (e.g. `npm run dev`, "
        "`python -m http.server`). Without `port`, finds the port your most recently started "
        "server listens on. With `wait_ms`, first waits until the server answers HTTP. Start "
        "long-running servers in the background of exec_command before calling this."
    )
    Args = GetDevUrlArgs

    async def run(self, args: GetDevUrlArgs, ctx: ToolContext) -> ToolResult:
        settings = ctx.settings
        if args.port is not None and args.port in settings.reserved_ports:
            raise ToolError(
                f"port {args.port} is the agent daemon's own port, not a dev server; start your "
                "server on another port"
            )
        deadline = time.monotonic() + (args.wait_ms or 0) / 1000
        own_pid = os.getpid()
        delay = 0.05
        while True:
            snapshot = await anyio.to_thread.run_sync(take_snapshot, settings.process_table)
            mine = await agent_pids(ctx)
            ports = summarise(snapshot, mine, settings.reserved_ports, own_pid)
            waiting = time.monotonic() < deadline
            # While waiting without a port, give the agent's own server time to appear
            # before settling for (or asking about) unrelated listeners.
            if not (waiting and args.port is None and mine and not _agent_port(ports)):
                chosen = self._pick(args.port, ports)
                if chosen is not None or not waiting:
                    break
            await anyio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 1.5, 0.5)
        if chosen is None:
            wanted = f"on port {args.port}" if args.port else "for you"
            waited = f" after waiting {args.wait_ms} ms" if args.wait_ms else ""
            raise ToolError(
                f"No server is listening {wanted}{waited}. Start it (in the background) with "
                f"exec_command, then call get_dev_url again, with wait_ms to let it boot.\n"
                + listing(ports)
            )
        status = None
        if args.wait_ms is not None:
            status = await self._wait_for_http(chosen, args.path, deadline, args.wait_ms)
        url = build_url(
            settings.dev_url_template,
            port=chosen.port,
            sandbox_id=settings.sandbox_id,
            host=settings.host,
            path=args.path,
        )
        await ctx.emit("dev_url", url=url, port=chosen.port)
        lines = [url, f"Port {chosen.port} ({chosen.owner()})."]
        if status is not None:
            lines.append(f"The server answered HTTP {status}.")
        data: dict[str, Any] = {"url": url, "port": chosen.port, "pids": chosen.pids}
        if status is not None:
            data["httpStatus"] = status
        return ToolResult(output="\n".join(lines), data=data)

    @staticmethod
    def _pick(port: int | None, ports: list[Port]) -> Port | None:
        if port is not None:
            found = next((p for p in ports if p.port == port), None)
            if found is not None and found.daemon:
                raise ToolError(f"port {port} belongs to the agent daemon itself, not a dev server")
            return found
        try:
            return choose(ports)
        except Ambiguous as exc:
            raise ToolError(
                "Several servers are listening and none is clearly the one you mean; call "
                "get_dev_url again with `port` set to one of:\n"
                + "\n".join(f"- {p.describe()}" for p in exc.candidates)
            ) from None

    @staticmethod
    async def _wait_for_http(chosen: Port, path: str, deadline: float, wait_ms: int) -> int:
        delay = 0.05
        while True:
            remaining = max(deadline - time.monotonic(), 0.05)
            budget = min(PROBE_TIMEOUT_S, remaining)
            status, error = await probe_http(chosen.port, chosen.addresses, path, budget)
            if status is not None:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ToolError(
                    f"Port {chosen.port} is listening but did not answer an HTTP request within "
                    f"{wait_ms} ms (last attempt: {error}). Check the server's output with "
                    "write_stdin, or call again with a longer wait_ms."
                )
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.5)


# The tools this module provides, in the order models see them (tools.load_core_tools
# registers them).
TOOLS: tuple[type[Tool], ...] = (GetDevUrl,)
