"""`agentd connect`: the whole daemon on loopback, plus the link to the control plane.

A Mac behind NAT cannot be called: agentd dials out. The daemon is `agentd serve` on
127.0.0.1 (its runs, tools and store, and its local API for the person at the Mac); beside it
run the `Link` (the control plane's requests) and the `ThreadEventOutbox` (the persisted thread
events, pushed). A refused token ends both and the daemon, with exit status 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
import anyio
from aiohttp import web

from runtime.api.app import daemon_version
from runtime.api.state import STATE_KEY
from runtime.config import Settings
from runtime.daemon import Companion
from runtime.link.client import Link, platform_name
from runtime.link.dispatch import HttpDispatcher
from runtime.link.outbox import LinkRefused, ThreadEventOutbox
from runtime.link.protocol import PROTOCOL_VERSION, max_frame_bytes
from tools import core_tools_ready
from tools.base import core_tool_names
from tools.tls import https_context_ready

log = logging.getLogger("agentd.link")

EXIT_REFUSED = 1
# A request through the link can stream for as long as a run lasts: no total timeout, but a
# connection to the control plane (or the local API) must open within this.
CONNECT_TIMEOUT = 10.0


@dataclass
class LinkTarget:
    control_plane: str
    device_id: str
    token: str


def link_companion(settings: Settings, target: LinkTarget) -> Companion:
    """The `serve` companion that keeps the link and the outbox going."""

    async def companion(app: web.Application, url: str) -> int:
        state = app[STATE_KEY]
        manager = state.require_manager()

        async def hello() -> dict[str, object]:
            await core_tools_ready()
            return {
                "deviceId": target.device_id,
                "agentdVersion": daemon_version(),
                "protocol": PROTOCOL_VERSION,
                "platform": platform_name(),
                "workspace": str(settings.workspace),
                "tools": core_tool_names(),
                "activeRuns": [run.run_id for run in manager.active_runs()],
            }

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        # the control plane is called over HTTPS with agentd's own context (tools/tls.py)
        connector = aiohttp.TCPConnector(ssl=await https_context_ready())
        status = 0
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            link = Link(
                session,
                control_plane=target.control_plane,
                device_id=target.device_id,
                token=target.token,
                dispatcher=HttpDispatcher(session, url, settings.token),
                hello=hello,
                # any request the local API would take fits in a frame
                max_frame_bytes=max_frame_bytes(settings.max_body_bytes),
            )
            outbox = await ThreadEventOutbox.open(
                manager.store, settings.state_dir, session, target.control_plane, target.token
            )
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(link.run)
                    tasks.start_soon(outbox.run)
            except* LinkRefused as refused:
                log.error(
                    "%s; check --token / AGENTD_TOKEN for device %s. Stopping.",
                    refused.exceptions[0],
                    target.device_id,
                )
                status = EXIT_REFUSED
        return status

    return companion
