"""A provider's first streamed request in a fresh interpreter, for test_rehearsal.py.

    python -m tests.providers.first_request MODEL rehearsed|cold|broken

The interpreter is made ready as a daemon's is once its warm-up has loaded the SDKs: the
event loop and anyio's backend running, every adapter and SDK imported, agentd's models
built, all of it frozen for the collector. Then, with `rehearsed`, the first request of
MODEL's API is rehearsed in a worker thread (runtime/providers/rehearsal.py), as the warm-up
does; with `broken`, it is rehearsed once against a canned stream that breaks off, then
again as it is. Then MODEL's provider is made in a worker thread (as `open_provider` makes
it) and streams one turn from the fake model server on the event loop, while a finder notes
every module imported on the loop's thread. Prints one JSON line: the rehearsals, the
modules imported on the loop during the request, and the reply's text.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio

from runtime.daemon import build_deferred_models
from runtime.messages import Message
from runtime.providers import rehearsal
from runtime.providers.base import AssistantTurn, ModelSettings
from runtime.providers.registry import create_provider, preload_adapters
from tests.fakes.model_server import FakeModelServer, Turn, text
from tests.import_spy import ImportSpy


def broken_anthropic(body: dict[str, Any]) -> Iterator[bytes]:
    """The Messages stream cut after its first event."""
    return iter([next(rehearsal.CANNED_STREAMS["/v1/messages"](body))])


def rehearse_in_a_thread(models: list[str]) -> rehearsal.Rehearsal:
    done: list[rehearsal.Rehearsal] = []
    worker = threading.Thread(target=lambda: done.append(rehearsal.rehearse(models)))
    worker.start()
    worker.join(120)
    return done[0]


async def main(model: str, mode: str) -> None:
    await anyio.to_thread.run_sync(lambda: None)  # anyio's backend and worker threads up
    assert preload_adapters() == []
    build_deferred_models()
    gc.freeze()
    rehearsals: list[dict[str, Any]] = []
    if mode == "broken":
        canned = rehearsal.CANNED_STREAMS["/v1/messages"]
        rehearsal.CANNED_STREAMS["/v1/messages"] = broken_anthropic
        rehearsals.append(rehearse_in_a_thread([model])._asdict())
        rehearsal.CANNED_STREAMS["/v1/messages"] = canned
    if mode in ("rehearsed", "broken"):
        rehearsals.append(rehearse_in_a_thread([model])._asdict())
        rehearsals.append(rehearse_in_a_thread([model])._asdict())  # once is enough
    spy = ImportSpy(lambda name: False)
    sys.meta_path.insert(0, spy)
    async with FakeModelServer(default_turn=Turn([text("done")])) as server:
        provider, model_id = await anyio.to_thread.run_sync(
            lambda: create_provider(model, env=server.env())
        )
        spy.watch = lambda name: True
        reply = None
        settings = ModelSettings(model=model_id)
        async for item in provider.stream(None, [Message.user("hi")], [], settings):
            if isinstance(item, AssistantTurn):
                reply = item.text
        spy.watch = lambda name: False
        await provider.aclose()
    print(json.dumps({"rehearsals": rehearsals, "imported_on_loop": spy.on_loop, "reply": reply}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
