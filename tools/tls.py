"""The TLS context of agentd's own HTTPS requests made with aiohttp (webhook deliveries, custom
tools, the Tool Hub, the link to the control plane), and the start-up that does not wait for it.

Importing aiohttp builds two default TLS contexts at once (its connector module's
`_make_ssl_context`, for requests that name no context), and each reads the whole trust store:
~20-30 ms of CPU apiece here, ~50 ms of `agentd serve`'s ~0.35 s start-up, for contexts a
daemon uses, if ever, after it listens. So `agentd serve` and `agentd connect` first import
aiohttp with `SSL_CERT_FILE` and `SSL_CERT_DIR` naming nothing (`trust_store_unread`: the
environment variables OpenSSL documents for where its default trust store is; the process's own
values are put back at once), which leaves those defaults trusting nothing, and every request
agentd makes over HTTPS passes the context built here instead (`ssl=` on the session's
connector or the request, aiohttp's documented way): the one `ssl.create_default_context()`
aiohttp would have built (the trust store `SSL_CERT_FILE` / `SSL_CERT_DIR` or the system
name, HTTP/1.1 offered by ALPN), built once, off the event loop, by the warm-up after the daemon
listens or by the first request that needs it. A request that named no context would find a
context that trusts nothing and fail on the certificate: closed, never open
(tests/api/test_own_https.py sends each kind through a real `agentd serve`).

The model SDKs' clients use their own HTTP library and context: runtime/providers/tls.py.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Iterator

import anyio

# Where OpenSSL looks for its default trust store (`ssl.get_default_verify_paths()`).
TRUST_STORE_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")
# A path that holds nothing, so that loading the default trust store reads nothing.
NOWHERE = "/nonexistent/agentd-trust-store-unread"

_lock = threading.Lock()
_context: ssl.SSLContext | None = None


def https_context() -> ssl.SSLContext:
    """Blocking (it reads the trust store): the context of agentd's own HTTPS requests, built
    on first use. Call it off the event loop (`https_context_ready`)."""
    global _context
    with _lock:
        if _context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            _context = context
        return _context


async def https_context_ready() -> ssl.SSLContext:
    """The context of `https_context`, built in a worker thread if nothing has built it yet."""
    if _context is not None:
        return _context
    return await anyio.to_thread.run_sync(https_context)


@contextlib.contextmanager
def trust_store_unread() -> Iterator[None]:
    """While it lasts, a TLS context that loads the default trust store loads nothing; the
    process's own `SSL_CERT_FILE` / `SSL_CERT_DIR` (set or not) are back when it ends. For the
    first import of aiohttp at start-up only, before any other thread runs: the environment is
    the process's."""
    saved = {name: os.environ.get(name) for name in TRUST_STORE_VARIABLES}
    try:
        for name in TRUST_STORE_VARIABLES:
            os.environ[name] = NOWHERE
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
