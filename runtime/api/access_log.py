"""The access log: one line per request, with credentials in the query string redacted.

A browser's `EventSource` cannot send headers, so it authenticates with `?access_token=` on
the events route; the token must never reach a log line. aiohttp's own format (`%r`) prints
the query string as sent, so the daemon writes its access lines with this logger instead.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

REDACTED = "[REDACTED]"
SECRET_QUERY_PARAMETERS = frozenset({"access_token", "token", "api_key"})


def redacted_target(url: URL) -> str:
    """The request target (path and query) with secret query parameters' values redacted."""
    if not any(key in SECRET_QUERY_PARAMETERS for key in url.query):
        return url.raw_path_qs
    query = [
        (key, REDACTED if key in SECRET_QUERY_PARAMETERS else value)
        for key, value in url.query.items()
    ]
    return url.with_query(query).raw_path_qs


class AccessLog(AbstractAccessLogger):
    """`<remote> "<METHOD> <target> HTTP/x.y" <status> <bytes> <seconds>s rid=<request id>`."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6fs rid=%s',
            request.remote or "-",
            request.method,
            redacted_target(request.rel_url),
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
            response.headers.get("X-Request-ID", "-"),
        )
