"""What a run sees happen in its workspace by itself: files changed by any means, servers.

`WorkspaceWatch` is the agent loop's companion for one run:

- **Files.** `run()` first takes the workspace's state (tools/workspace_changes.py) while the
  model thinks about its first turn; tool calls wait for it (`ready()`). After each call the
  loop calls `report_files(call_id)`: the workspace is rescanned and every change the call's
  tools did not report themselves becomes a `file_edit` with that `callId`; `finish()`
  reports what changed after the last call (background processes) without one.
- **Ports.** `run()` then looks every `port_poll_s` for TCP ports the run's processes opened
  or closed (tools/port_watch.py) and emits `dev_url {url, port, pid, command}` once per
  port and `port_closed` when it closes; `finish()` takes a last look.

Every walk of the workspace and every /proc read happens in a worker thread. What the run
reports in `complete` (its files, its dev URL) is kept by the loop's `ToolArtifacts`, which
this module feeds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from tools.base import Toolbox

if TYPE_CHECKING:
    from tools.port_watch import PortWatcher
    from tools.workspace_changes import WorkspaceScanner

log = logging.getLogger("agentd.workspace_watch")

# How often a run looks for ports its processes opened or closed.
PORT_POLL_S = 0.25

_watchers_imported = threading.Event()

# The watches of the runs under way, by workspace root: what one run's tools write, the other
# runs on that workspace must not take for changes of their own calls.
_WATCHES: dict[Path, set[WorkspaceWatch]] = {}


def import_watchers() -> None:
    """Blocking: import the watchers' modules (~35 ms, pathspec's among them). They are left
    out of the run machinery, which every first /v1 request waits for: the daemon's warm-up
    imports them later, and a run that starts before awaits `WorkspaceWatch.open`, which
    imports them in a worker thread, never on the event loop."""
    import tools.port_watch
    import tools.workspace_changes  # noqa: F401

    _watchers_imported.set()


class Emitter(Protocol):
    async def emit(self, type: str, **payload: Any) -> Any: ...


class Artifacts(Protocol):
    """What the watch tells the loop's `ToolArtifacts`."""

    def take_reported(self) -> set[str]: ...

    def note_file(self, path: str, action: str, moved_from: str | None) -> None: ...

    def note_port(self, opened: bool, url: str) -> None: ...


class WorkspaceWatch:
    """File changes and listening ports of one run (see the module doc)."""

    @classmethod
    async def open(
        cls,
        toolbox: Toolbox,
        events: Emitter,
        artifacts: Artifacts,
        *,
        port_poll_s: float | None = PORT_POLL_S,
    ) -> WorkspaceWatch:
        """A watch, its modules imported first in a worker thread if they are not yet
        (`import_watchers`)."""
        if not _watchers_imported.is_set():
            await anyio.to_thread.run_sync(import_watchers)
        return cls(toolbox, events, artifacts, port_poll_s=port_poll_s)

    def __init__(
        self,
        toolbox: Toolbox,
        events: Emitter,
        artifacts: Artifacts,
        *,
        port_poll_s: float | None = PORT_POLL_S,
    ) -> None:
        # Imported by `import_watchers` (not with the daemon: start-up time).
        from tools.port_watch import PortWatcher
        from tools.workspace_changes import WorkspaceScanner

        self._events = events
        self._artifacts = artifacts
        self._port_poll_s = port_poll_s
        skip_dirs = toolbox.settings.workspace_skip_dirs
        self._scanner: WorkspaceScanner | None = None
        if skip_dirs is not None:
            self._scanner = WorkspaceScanner(toolbox.workspace.root, skip_dirs=skip_dirs)
        self._ports: PortWatcher | None = None
        if port_poll_s is not None:
            self._ports = PortWatcher(toolbox)
        self._ready = anyio.Event()
        self._looking = anyio.Lock()  # the poll loop and finish() may look at once
        self._root = toolbox.workspace.root
        self._written_elsewhere: set[str] = set()  # by other runs' tools, since the last scan

    async def run(self) -> None:
        """Take the workspace's starting state, then watch ports until cancelled."""
        neighbours = _WATCHES.setdefault(self._root, set())
        neighbours.add(self)
        try:
            await self._watch()
        finally:
            neighbours.discard(self)
            if not neighbours:
                _WATCHES.pop(self._root, None)

    def tool_wrote(self, paths: Iterable[str]) -> None:
        """This run's tool reported writing `paths` (as `file_edit` paths): the other runs
        on the workspace do not report them as changes their own calls made."""
        wrote = set(paths)
        for other in _WATCHES.get(self._root, ()):
            if other is not self:
                other._written_elsewhere |= wrote

    async def _watch(self) -> None:
        try:
            if self._scanner is not None:
                await anyio.to_thread.run_sync(self._scanner.baseline)
        except Exception:  # the run goes on; only commands' edits go unreported
            log.exception("could not take the workspace's state; file changes go unreported")
            self._scanner = None
        try:
            # The first look, before any tool call: in a fresh toolbox it only notes the
            # listeners that are not the agent's, so later looks are cheap until one changes.
            await self.report_ports()
        except Exception:
            log.exception("looking for the run's listening ports failed")
        finally:
            self._ready.set()
        if self._ports is None or self._port_poll_s is None:
            return
        while True:
            await anyio.sleep(self._port_poll_s)
            try:
                await self.report_ports()
            except Exception:  # a failed look must not end the run; the next one may work
                log.exception("looking for the run's listening ports failed")

    async def ready(self) -> None:
        """Wait until the starting state is taken (before the first tool call runs)."""
        await self._ready.wait()

    async def finish(self) -> None:
        """What changed after the last call, and ports it opened or closed."""
        await self.report_files(None)
        await self.report_ports()

    async def report_files(self, call_id: str | None) -> None:
        """Emit `file_edit` for what changed since the last scan that the tools did not
        report themselves; `call_id` is the call it happened during, if one."""
        reported = self._artifacts.take_reported() | self._written_elsewhere
        self._written_elsewhere = set()
        scanner = self._scanner
        if scanner is None:
            return
        await self._ready.wait()
        changes = await anyio.to_thread.run_sync(lambda: scanner.rescan(already_reported=reported))
        if scanner.too_large:
            self._scanner = None
            await self._events.emit(
                "error",
                code="workspace_too_large",
                message=f"the workspace holds more than {scanner.max_files} files: changes "
                "made by commands are not reported as file_edit events",
            )
            return
        for path, action, moved_from in changes.paths:
            self._artifacts.note_file(path, action, moved_from)
        attribution = {"callId": call_id} if call_id is not None else {}
        for change in changes.events:
            await self._events.emit("file_edit", **change.payload(), **attribution)

    async def report_ports(self) -> None:
        if self._ports is None:
            return
        async with self._looking:
            changes = await self._ports.poll()
        for change in changes:
            self._artifacts.note_port(change.kind == "opened", change.url)
            await self._events.emit(change.event_type, **change.payload())
