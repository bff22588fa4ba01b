"""A daemon's first /v1/ requests in a fresh interpreter, for test_daemon.py: prints, as one
JSON line, on which thread the tool modules were imported (True: the event loop's)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import aiohttp
import anyio
from aiohttp.test_utils import TestServer

import tools
from runtime.api.app import create_app
from runtime.config import Settings
from runtime.runs import RunManager
from runtime.store import Store

loads_on_loop: list[bool] = []
real_load = tools.load_core_tools


def spying_load() -> None:
    if "tools.exec" not in sys.modules:  # this call imports them (later ones return at once)
        loads_on_loop.append(threading.current_thread() is threading.main_thread())
    real_load()


async def main(workspace: Path) -> None:
    tools.load_core_tools = spying_load  # what core_tools_ready and tools.base call
    settings = Settings(workspace=workspace, state_dir=workspace / ".state")
    store = await Store.open(settings.state_dir)
    manager = RunManager(store, workspace, env={}, use_cgroups=False)
    await manager.start_background()
    server = TestServer(create_app(settings, manager), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            url = str(server.make_url("/v1/agents"))
            agent = {"slug": "first", "model": "claude-sonnet-4-6", "tools": ["exec_command"]}
            async with http.post(url, json=agent) as resp:
                status = resp.status
    finally:
        await server.close()
        await manager.shutdown(grace=0)
        await store.close()
    loaded = "tools.exec" in sys.modules
    print(json.dumps({"status": status, "loads_on_loop": loads_on_loop, "loaded": loaded}))


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
