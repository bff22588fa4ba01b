"""Servers as they start: the TCP ports the agent's processes listen on, watched over a run.

`PortWatcher.poll()` looks once and returns what changed since its last look: a port one of
the agent's processes (see `SessionManager.pids`) started listening on is `opened` (the
run emits `dev_url` with `{url, port, pid, command}`), and a port it stopped listening on is
`closed` (`port_closed`). Each port is reported once while it stays open. Discovery is
get_dev_url's (tools/dev_url.py, through the toolbox's process table). The daemon's own
ports are never reported.

A look is cheap while nothing started or stopped listening anywhere (the process table's
`listeners_key`, on Linux two small reads of /proc/net): only then does it read the agent's
processes and their sockets.

Every /proc read happens in a worker thread (`SessionManager.pids` reads its table in one).
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

import anyio

from tools.base import Toolbox
from tools.dev_url import Port, build_url, summarise, take_snapshot
from tools.exec import SessionManager

__all__ = ["PortChange", "PortWatcher"]


@dataclass(frozen=True)
class PortChange:
    """A port of the agent's that opened or closed, and the process behind it."""

    kind: Literal["opened", "closed"]
    port: int
    url: str
    pid: int | None
    command: str | None

    def payload(self) -> dict[str, object]:
        """The `dev_url` / `port_closed` event payload."""
        return {"url": self.url, "port": self.port, "pid": self.pid, "command": self.command}

    @property
    def event_type(self) -> str:
        return "dev_url" if self.kind == "opened" else "port_closed"


class PortWatcher:
    """Compares the agent's listening ports with the previous look (see the module doc)."""

    def __init__(self, box: Toolbox) -> None:
        self._box = box
        self._open: dict[int, Port] = {}
        self._key: Hashable | None = None  # the listeners' key at the last full look

    @property
    def open_ports(self) -> list[int]:
        return sorted(self._open)

    async def poll(self) -> list[PortChange]:
        manager = self._box.peek_service(SessionManager)
        # The cheap look first: while no socket started or stopped listening since the last
        # full look, none of the agent's can have (a full look reads every process).
        key = await anyio.to_thread.run_sync(self._box.settings.process_table.listeners_key)
        if manager is None and not self._open:
            # No command ever ran in this toolbox: none of these listeners is the agent's.
            self._key = key
            return []
        if key is not None and key == self._key:
            return []
        pids = await manager.pids() if manager is not None else set()
        ports = await anyio.to_thread.run_sync(self._agent_ports, pids) if pids else {}
        # Taken before the full look: a socket that opened during it makes the next key
        # differ, so it is looked for again.
        self._key = key
        return self._changes(ports)

    def _agent_ports(self, pids: set[int]) -> dict[int, Port]:
        settings = self._box.settings
        # Owners are looked for among the agent's processes only (their descriptors, not
        # every process's): a socket of anyone else's is not reported anyway.
        snapshot = take_snapshot(settings.process_table, pids)
        ports = summarise(snapshot, pids, settings.reserved_ports, os.getpid())
        return {p.port: p for p in ports if p.by_agent and not p.daemon}

    def _changes(self, ports: dict[int, Port]) -> list[PortChange]:
        changes = [
            self._change("closed", port)
            for number, port in self._open.items()
            if number not in ports
        ]
        changes += [
            self._change("opened", port)
            for number, port in ports.items()
            if number not in self._open
        ]
        self._open = ports
        return changes

    def _change(self, kind: Literal["opened", "closed"], port: Port) -> PortChange:
        settings = self._box.settings
        url = build_url(
            settings.dev_url_template,
            port=port.port,
            sandbox_id=settings.sandbox_id,
            host=settings.host,
            path="/",
        )
        pid = port.pids[0] if port.pids else None
        command = port.commands[0] if port.commands else None
        return PortChange(kind, port.port, url, pid, command)
