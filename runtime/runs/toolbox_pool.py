"""Toolboxes that outlive a run: what a thread's last completed run left running, and the
daemon's own toolbox for tool calls without a run.

When a run completes normally its Toolbox stays alive (a dev server it started keeps serving
the `devUrl` in `complete`) and is handed to the same thread's next run when that one starts,
so the agent finds its sessions under the same ids and can poll, feed or restart them ("now
add a delete button" with the server still up). From then on they belong to the new run: if
it fails, is cancelled or interrupted they are killed with its own. Kept toolboxes are
bounded (`max_kept`, least recently used closed first) and closed on shutdown or thread
deletion. A toolbox never crosses threads (a fork gets a new thread).

Every process a toolbox starts carries the tag `<owner>/...` in its environment, where the
owner is derived from the state dir (`process_owner_for`). A daemon killed with SIGKILL
cannot kill what its runs left running; the next daemon on the same state dir does, before
it takes runs (`kill_leftovers`), however those processes detached (nohup, setsid).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

import tools.textfile
from tools.base import Tool, Toolbox, ToolSettings, core_tool_names
from tools.commit_journal import journal_directory
from tools.commit_journal import recover as recover_commits
from tools.proctable import kill_tagged

if TYPE_CHECKING:
    # runtime.agents loads with the /v1 API, after start-up (runtime.api.v1)
    from runtime.agents import AgentSpec

log = logging.getLogger("agentd.runs")


def toolbox_key(spec: AgentSpec) -> str:
    """What a run's Toolbox is built from: the agent's env and its tools (names and custom
    tool definitions, in order). A kept toolbox is handed over only when this is unchanged."""
    tools = [t if isinstance(t, str) else t.model_dump(mode="json") for t in spec.tools]
    return json.dumps({"env": spec.env, "tools": tools}, sort_keys=True)


def process_owner_for(state_dir: Path) -> str:
    """The process-tag owner of the daemon on `state_dir`: the same for every daemon that
    opens it (the store's lock lets one at a time), different for any other state dir."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(state_dir))).hexdigest()
    return f"agentd-{digest[:16]}"


class ToolboxPool:
    """Builds run toolboxes, keeps the ones completed runs leave per thread, and owns the
    daemon's toolbox. Closing a toolbox waits at most `close_grace` seconds."""

    def __init__(
        self,
        workspace: Path,
        *,
        env: Mapping[str, str],
        settings: ToolSettings,
        max_kept: int = 16,
        close_grace: float = 2.0,
    ) -> None:
        self.workspace = workspace
        self.env = env
        self.settings = settings
        self.max_kept = max_kept
        self.close_grace = close_grace
        # Per thread: the toolbox its last completed run left, and the `toolbox_key` it was
        # built for; least recently used first.
        self._kept: OrderedDict[str, tuple[Toolbox, str]] = OrderedDict()
        self._daemon: Toolbox | None = None

    async def kill_leftovers(self) -> int:
        """Kill every process a previous daemon with this pool's owner left running (it was
        killed before it could); returns how many. Call before any run starts."""
        prefix = self.settings.process_owner + "/"
        procs, cgroups = self.settings.process_table, self.settings.cgroups

        def sweep() -> tuple[dict[int, str], dict[str, list[int]], list[str]]:
            owned = kill_tagged(lambda tag: tag.startswith(prefix), procs=procs)
            groups = cgroups.sweep() if cgroups is not None else {}
            # with nothing of the dead daemon left writing: the commit it was killed in
            journal = journal_directory(self.workspace)
            return owned, groups, recover_commits(journal, tools.textfile.rename_exchange)

        # One trip to a worker thread (start-up waits for it).
        killed, swept, settled = await anyio.to_thread.run_sync(sweep)
        for line in settled:
            log.warning("%s", line)
        if killed:
            log.warning(
                "killed %d process(es) a previous daemon left running: %s",
                len(killed),
                ", ".join(f"{pid} ({tag})" for pid, tag in sorted(killed.items())),
            )
        for name, pids in swept.items():
            log.warning(
                "killed %d process(es) left in the cgroup of %s by a previous daemon: %s",
                len(pids),
                name,
                ", ".join(str(pid) for pid in pids),
            )
        return len(killed) + sum(len(pids) for pids in swept.values())

    async def checkout(
        self, thread_id: str, spec: AgentSpec, extra_tools: Sequence[Tool] = ()
    ) -> Toolbox:
        """The toolbox for a new run of `spec` on the thread: the one the thread's previous
        run left if it was built for the same tools and env, else a new one."""
        kept = await self.take(thread_id, toolbox_key(spec))
        if kept is not None:
            return kept
        return Toolbox(
            self.workspace,
            env=dict(spec.env),
            enabled=spec.core_tool_names(),
            settings=self.settings,
            extra_tools=list(extra_tools),
        )

    async def take(self, thread_id: str, key: str) -> Toolbox | None:
        """Hand the toolbox the thread's previous run left to the thread's new run, if it was
        built for `key`; None when there is none or it no longer fits."""
        kept = self._kept.pop(thread_id, None)  # no await before the run holds it
        if kept is None:
            return None
        toolbox, kept_key = kept
        if kept_key == key:
            return toolbox
        # The agent's tools or env changed since (a new version): the old box runs commands
        # with the old env and offers tools the agent no longer has, so its processes are
        # stopped and the run starts with a fresh box, as a run on a new thread would.
        log.info(
            "thread %s: the agent's tools or env changed; stopping what its previous run "
            "left running",
            thread_id,
        )
        await self._close(toolbox)
        return None

    async def keep(self, thread_id: str, toolbox: Toolbox, key: str) -> None:
        """Keep what a completed run left running for the thread's next run (built for
        `key`); the least recently kept boxes beyond `max_kept` are closed."""
        await self.release(thread_id)
        self._kept[thread_id] = (toolbox, key)  # the most recently used: evicted last
        while len(self._kept) > self.max_kept:
            oldest = next(iter(self._kept))
            await self.release(oldest)

    async def discard(self, toolbox: Toolbox) -> None:
        """Close a run's toolbox that is not kept (the run did not complete)."""
        with anyio.move_on_after(self.close_grace):
            await toolbox.aclose()

    async def release(self, thread_id: str) -> None:
        """Close the toolbox kept for the thread, if any."""
        kept = self._kept.pop(thread_id, None)
        if kept is not None:
            await self._close(kept[0])

    def daemon_toolbox(self) -> Toolbox:
        """The toolbox for tool calls without a run (made on first use): every core tool,
        the aliases an agent only gets by listing them (`bash`) too, as `POST /v1/tools`
        offers them all."""
        if self._daemon is None:
            self._daemon = Toolbox(
                self.workspace,
                enabled=core_tool_names(),
                env=dict(self.env),
                settings=self.settings,
            )
        return self._daemon

    def toolboxes(self) -> list[Toolbox]:
        """The kept toolboxes and the daemon's, if it has one."""
        boxes = [box for box, _ in self._kept.values()]
        if self._daemon is not None:
            boxes.append(self._daemon)
        return boxes

    async def aclose(self) -> None:
        """Close every kept toolbox and the daemon's."""
        for thread_id in list(self._kept):
            await self.release(thread_id)
        if self._daemon is not None:
            await self._daemon.aclose()
            self._daemon = None
        if self.settings.cgroups is not None:
            await anyio.to_thread.run_sync(self.settings.cgroups.close)

    async def _close(self, toolbox: Toolbox) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_grace):
            await toolbox.aclose()
