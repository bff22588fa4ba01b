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
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

import aiohttp
import anyio
from pydantic import AfterValidator, Field
from yarl import URL

from tools.base import Tool, ToolArgs, ToolContext, ToolError, ToolResult
from tools.proctable import ListeningSocket, ProcessTable

MAX_WAIT_MS = 300_000
PROBE_TIMEOUT_S = 2.0
# How to start a server that outlives the exec_command call (tools/exec.py): a job put in the
# background with `&` in a non-interactive shell shares the shell's process group, which the
# terminal's hangup kills when the command's shell exits; nohup and `setsid` lose that race
# more often than not, because they ignore the hangup only once they run. With job control
# (`set -m`) the shell gives the job a process group of its own before it returns.
START_SERVER_ADVICE = (
    "the call returns after yield_time_ms with a session ID while the server keeps running "
    "(write_stdin with that ID shows its later output). A job started with `&`, nohup "
    "included, is killed when the command returns; to detach a server anyway, use `set -m; "
    "CMD >server.log 2>&1 </dev/null &`."
)


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


# What a URL's path, query and fragment hold as they are (RFC 3986: unreserved characters,
# sub-delimiters, ':', '@', '/', '?'); everything else is percent-encoded as UTF-8, except
# the first '#' (the fragment begins there) and a '%' that begins an escape (`%20`).
_URL_SAFE = "-._~!$&'()*+,;=:@/?"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _no_control_characters(path: str) -> str:
    for position, character in enumerate(path):
        if unicodedata.category(character) == "Cc":
            raise ValueError(
                f"contains a control character (U+{ord(character):04X} at position "
                f"{position}), which no URL can hold; give the path as it is typed in a "
                "browser's address bar, e.g. /docs/intro?tab=2"
            )
    return path


def encode_url_path(path: str) -> str:
    """`path` (with its query and fragment) as it goes into a URL: what a URL cannot hold
    as it is (a space, a second '#', a non-ASCII character) percent-encoded, once: an escape
    already in it (`%20`) is kept, a '%' that begins none becomes `%25`."""
    path, hash_mark, fragment = path.partition("#")
    return _encode_part(path) + hash_mark + _encode_part(fragment)


def _encode_part(text: str) -> str:
    parts: list[str] = []
    start = 0
    for escape in _ESCAPE.finditer(text):
        parts += [quote(text[start : escape.start()], safe=_URL_SAFE), escape.group()]
        start = escape.end()
    parts.append(quote(text[start:], safe=_URL_SAFE))
    return "".join(parts)


class GetDevUrlArgs(ToolArgs):
    port: int | None = Field(
        default=None, ge=1, le=65535, description="The server's port; default: found for you."
    )
    path: Annotated[str, AfterValidator(_no_control_characters)] = Field(
        default="/",
        description=(
            "Path (with an optional ?query and #fragment) to append to the URL; characters "
            "a URL cannot hold as they are (spaces, non-ASCII) are percent-encoded."
        ),
    )
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
    """The URL of `path` on `port` through `template`; `path` is encoded (encode_url_path)."""
    path = encode_url_path(path)
    base = (
        template.replace("{port}", str(port))
        .replace("{sandboxId}", sandbox_id)
        .replace("{host}", host)
    )
    return base.rstrip("/") + "/" + path.lstrip("/")


async def probe_http(
    port: int, addresses: list[str], path: str, timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[int | None, str]:
    """One attempt: (HTTP status, "") or (None, why it failed). `path` is requested as
    `encode_url_path` gives it, exactly as the URL the tool returns holds it."""
    path = encode_url_path(path)
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
            # encoded=True: sent as it is (yarl would otherwise normalise it its own way)
            url = URL(f"http://{host}:{port}/{path.lstrip('/')}", encoded=True)
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
        "the server first with exec_command, as the command itself (not with `&`): "
        + START_SERVER_ADVICE
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
                f"No server is listening {wanted}{waited}. Start it with exec_command, as the "
                f"command itself (e.g. `npm run dev`, not `npm run dev &`): {START_SERVER_ADVICE} "
                "Then call get_dev_url again, with wait_ms to let it boot.\n" + listing(ports)
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
