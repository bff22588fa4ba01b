"""Model requests over HTTPS in a fresh interpreter, for test_tls.py.

    python -m tests.providers.tls_requests CA_DIR MODEL...

Serves the fake model server over HTTPS with the certificate in CA_DIR (`server.pem`,
`server.key`, made by test_tls.py from a throwaway CA), then for each MODEL makes its provider
in a worker thread (as a run's `open_provider` does) and streams one turn from the server.
The CA is trusted only if the environment says so (`SSL_CERT_FILE`), as a corporate CA would
be. Prints one JSON line: each model's reply, or its error, and how many times the process
loaded trusted certificates into a TLS context (`ssl.SSLContext.load_verify_locations`, what
makes building one costly), from the first provider made to the last request's end.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import anyio

from runtime.messages import Message
from runtime.providers.base import AssistantTurn, ModelError, ModelSettings
from runtime.providers.registry import create_provider, preload_adapters
from runtime.retry import RetryPolicy
from tests.fakes.model_server import FakeModelServer, Turn, text

loaded: list[object] = []
load_verify_locations = ssl.SSLContext.load_verify_locations


def counted_load_verify_locations(context: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
    loaded.append(args or kwargs)
    load_verify_locations(context, *args, **kwargs)


async def reply_of(model: str, env: dict[str, str]) -> str:
    provider, model_id = await anyio.to_thread.run_sync(
        lambda: create_provider(model, env=env, retry=RetryPolicy(max_attempts=1))
    )
    settings = ModelSettings(model=model_id)
    try:
        async for item in provider.stream(None, [Message.user("hi")], [], settings):
            if isinstance(item, AssistantTurn):
                return item.text
        return "no reply"
    except ModelError as exc:
        return f"error: {exc.message}"
    finally:
        await provider.aclose()


async def main(certificates: Path, models: list[str]) -> None:
    assert preload_adapters() == []
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    ssl.SSLContext.load_verify_locations = counted_load_verify_locations  # type: ignore[method-assign]
    replies = {}
    done = Turn([text("done")])
    async with FakeModelServer(default_turn=done, ssl_context=server_side) as server:
        for model in models:
            replies[model] = await reply_of(model, server.env())
    print(json.dumps({"replies": replies, "certificates_loaded": len(loaded)}))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2:]))
