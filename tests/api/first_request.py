"""A daemon's first requests in a fresh interpreter, for test_daemon.py.

The app owns its runtime as under `agentd serve` (it opens the store and starts the run
manager), but nothing warms it up: the first requests (metrics, the OpenAPI document, an
agent upsert and a run that goes through the agent loop) are what load the modules start-up
defers (the /v1 handlers, the tool modules and the run machinery) and build the document.
Prints, as one JSON line, the requests' statuses, which of those modules were imported before
the first request, which on the event loop's thread, whether all of them were loaded by the
end, and on which thread the document was built.

With `broken machinery` (or `broken v1`), the run machinery (or the /v1 API) names a module
that does not exist: prints the answers to an agent upsert, a second /v1/ request, /readyz
and /healthz.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp.test_utils import TestServer

from runtime.api import openapi, v1
from runtime.api.app import create_app
from runtime.config import Settings
from runtime.runs import machinery
from runtime.runs.machinery import MODULES as RUN_MACHINERY
from tests.import_spy import ImportSpy
from tools import CORE_TOOL_MODULES

V1_OPERATIONS = v1.MODULES
# jsonschema: custom tools are allowed here, so the run machinery loads it too. Less what this
# script imported itself: the OpenAPI module it spies on imports the API's schemas, and so the
# messages and the thread events (tests/cli/test_serve_startup.py checks that a daemon does not
# import those before it listens).
DEFERRED = frozenset({*V1_OPERATIONS, *CORE_TOOL_MODULES, *RUN_MACHINERY, "jsonschema"}).difference(
    sys.modules
)
CUSTOM_TOOL_URL = "http://127.0.0.1:9/lookup"


openapi_on_loop: list[bool] = []
real_build_openapi = openapi.build_openapi


def spying_build_openapi(*args: Any, **kwargs: Any) -> dict[str, Any]:
    openapi_on_loop.append(threading.current_thread() is threading.main_thread())
    return real_build_openapi(*args, **kwargs)


async def main(workspace: Path) -> None:
    # Settings read before the daemon starts, as `agentd serve` reads them: checking the
    # custom tools' URL prefixes imports the HTTP tool's allow-list then
    settings = Settings(
        workspace=workspace,
        state_dir=workspace.parent / "state",
        custom_tool_url_prefixes="http://127.0.0.1:9/",
    )
    spy = ImportSpy(DEFERRED.__contains__)
    sys.meta_path.insert(0, spy)
    openapi.build_openapi = spying_build_openapi
    cassette = workspace.parent / "first-run.jsonl"
    turn = {
        "turn": 1,
        "model": "replayed",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "hello from the cassette"}],
    }
    cassette.write_text(json.dumps(turn) + "\n")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    loaded_at_start = sorted(DEFERRED.intersection(sys.modules))
    statuses: list[int] = []
    result: object = None
    try:
        async with aiohttp.ClientSession() as http:
            # Metrics count the tools' sessions: none yet, and nothing imported to say so.
            async with http.get(server.make_url("/metrics")) as resp:
                statuses.append(resp.status)
            # The OpenAPI document's first build (~0.1 s): off the event loop too.
            async with http.get(server.make_url("/openapi.json")) as resp:
                statuses.append(resp.status)
            agent = {
                "slug": "first",
                "model": f"replay:{cassette}",
                "tools": [
                    "exec_command",
                    {
                        "name": "lookup",
                        "description": "Looks a word up",
                        "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
                        "invokeUrl": CUSTOM_TOOL_URL,
                    },
                ],
            }
            async with http.post(server.make_url("/v1/agents"), json=agent) as resp:
                statuses.append(resp.status)
            run = {"agent": "first", "prompt": "hi", "stream": False}
            async with http.post(server.make_url("/v1/run"), json=run) as resp:
                statuses.append(resp.status)
                result = (await resp.json())["data"]["result"]
    finally:
        await server.close()
    report = {
        "statuses": statuses,
        "result": result,
        "loaded_at_start": loaded_at_start,
        "on_loop": spy.on_loop,
        "openapi_on_loop": openapi_on_loop,
        "missing": sorted(DEFERRED.difference(sys.modules)),
    }
    print(json.dumps(report))


async def broken(workspace: Path, part: str) -> None:
    if part == "v1":
        v1.MODULES = (*V1_OPERATIONS, "runtime.no_such_module")
    else:
        machinery.MODULES = (*RUN_MACHINERY, "runtime.no_such_module")
    settings = Settings(workspace=workspace, state_dir=workspace.parent / "state")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    answers: list[tuple[int, object]] = []
    try:
        async with aiohttp.ClientSession() as http:
            agent = {"slug": "first", "model": "claude-sonnet-4-6"}
            async with http.post(server.make_url("/v1/agents"), json=agent) as resp:
                answers.append((resp.status, await resp.json()))
            async with http.get(server.make_url("/v1/runs")) as resp:
                answers.append((resp.status, await resp.json()))
            for path in ("/readyz", "/healthz"):
                async with http.get(server.make_url(path)) as resp:
                    answers.append((resp.status, await resp.json()))
    finally:
        await server.close()
    print(json.dumps(answers))


if __name__ == "__main__":
    if sys.argv[2:3] == ["broken"]:
        anyio.run(broken, Path(sys.argv[1]), sys.argv[3])
    else:
        anyio.run(main, Path(sys.argv[1]))
