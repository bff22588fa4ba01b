"""The errors of `runtime.client`: one class per kind of failure, and which are worth
retrying."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.providers.retry import parse_retry_after


class AgentdError(Exception):
    """Every error this client raises."""


class NetworkError(AgentdError):
    """The daemon could not be reached, or the connection broke or timed out. `sent` tells
    whether the request may have reached the daemon (False: it certainly did not). Like
    every error here it has `code` (always "network_error"), `message` and `request_id`
    (always None: no answer came with one)."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.code = "network_error"
        self.message = message
        self.request_id: str | None = None
        self.sent = sent


class APIError(AgentdError):
    """The daemon answered with an error status and its envelope
    `{"error": {"code", "message", "requestId", "details"?}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details or []
        self.headers: dict[str, str] = dict(headers or {})


class ValidationError(APIError):
    """400: the request was invalid; `details` lists the fields and what is allowed."""


class AuthenticationError(APIError):
    """401: no token, or the wrong one (`token=` or `AGENTD_TOKEN`)."""


class AuthorizationError(APIError):
    """403: not allowed (e.g. a path outside the workspace)."""


class NotFoundError(APIError):
    """404: no such agent, run, thread, file or route."""


class ConflictError(APIError):
    """409: conflicts with the current state (a control on a finished run, a busy thread)."""


class PayloadTooLargeError(APIError):
    """413: the body is over the daemon's `--max-body-bytes`."""


class RateLimitError(APIError):
    """429: the daemon's run queue is full; `retry_after` is its hint in seconds."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after({k.lower(): v for k, v in self.headers.items()})


class ServerError(APIError):
    """5xx: the daemon failed, is starting, or is shutting down."""


_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthorizationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


def error_for_status(
    status: int,
    code: str,
    message: str,
    *,
    request_id: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> APIError:
    """The typed error for an error status."""
    kind = _ERRORS_BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return kind(status, code, message, request_id=request_id, details=details, headers=headers)


def is_retryable(error: BaseException) -> bool:
    """Whether the same request may succeed later: a full queue (429), a server error or a
    daemon that is starting (5xx), a timeout (408), a network failure."""
    if isinstance(error, NetworkError | RateLimitError | ServerError):
        return True
    return isinstance(error, APIError) and error.status == 408


def acted_on(error: AgentdError) -> bool:
    """Whether the daemon may have acted on the request that failed with `error`."""
    if isinstance(error, NetworkError):
        return error.sent
    return not (isinstance(error, RateLimitError) or getattr(error, "status", 0) == 503)


def retry_after_of(error: AgentdError) -> float | None:
    if isinstance(error, APIError):
        return parse_retry_after({k.lower(): v for k, v in error.headers.items()})
    return None
