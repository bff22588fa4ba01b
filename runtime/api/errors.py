"""API failures as values: `ApiError` and the JSON error envelope every failure answers with.

`{"error": {"code": "...", "message": "...", "requestId": "..."}}` — `code` is stable and
machine-readable, `message` tells a person what to change, `requestId` finds the request in
the daemon's log (it is also in the `X-Request-ID` response header).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# The code used for a bare HTTP status (aiohttp's own 404/405/413, …).
STATUS_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A request the API refuses: answered with the envelope and `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def bad_request(message: str, code: str = "invalid_request", **kw: Any) -> ApiError:
    return ApiError(400, code, message, **kw)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, code, message)


def error_body(
    code: str, message: str, request_id: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "requestId": request_id}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(error_body(code, message, request_id, details)),
        content_type="application/json",
        headers=headers,
    )
