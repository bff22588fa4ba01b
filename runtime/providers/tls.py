"""One TLS context for every model SDK client the daemon makes.

An SDK client given no HTTP client builds its own TLS context, and building one loads the
trusted certificates: ~20-35 ms of CPU per client here, and ~0.8 MiB that the client keeps
(the provider pool keeps up to 16 idle). A run whose provider was new (a model and
environment the pool had not seen) waited that long before its first model request, and
behind a proxy from the environment a client built two (benchmarks/provider_bench.py).

The context depends on nothing a provider is made with (neither the key nor the base URL):
it is the process's trust store. So it is built once, with the SDKs' own HTTP library
(`httpx2.create_ssl_context`, the very context each client would have built: it reads
`SSL_CERT_FILE` / `SSL_CERT_DIR`, and the system's trust store on macOS), and every client is
made with an HTTP client that uses it: the SDK's `DefaultAsyncHttpxClient`, which keeps the
SDK's own timeouts, connection limits, redirects, keep-alive and proxies from the
environment. An `ssl.SSLContext` serves any number of connections, in any thread; the HTTP
library sets the same ALPN protocols on it for each connection (HTTP/1.1 only here).
"""

from __future__ import annotations

import os
import ssl
import threading

_lock = threading.Lock()
_context: ssl.SSLContext | None = None


def shared_tls_context() -> ssl.SSLContext:
    """The process's TLS context for model requests, built on first use (blocking: call it
    where a provider is made, off the event loop; the warm-up calls it first). A trust store
    that cannot be read (`SSL_CERT_FILE` naming a directory, say) is a `ModelError`
    (`certificate`) that names it, which fails the run that asked, not an internal error."""
    global _context
    with _lock:
        if _context is None:
            import httpx2  # the SDKs' HTTP library, loaded with them

            try:
                _context = httpx2.create_ssl_context()
            except OSError as exc:  # ssl.SSLError included
                from runtime.providers.base import ModelError

                named = ", ".join(
                    f"{name}={os.environ[name]!r}"
                    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")
                    if name in os.environ
                )
                raise ModelError(
                    "certificate",
                    "the trusted certificates for model requests cannot be read"
                    + (f" ({named})" if named else "")
                    + f": {exc}. Fix the daemon's environment.",
                ) from exc
        return _context
