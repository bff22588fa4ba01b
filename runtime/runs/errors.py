"""The requests the run manager refuses, each with the HTTP status the API answers with."""

from __future__ import annotations


class RunError(Exception):
    """A request the manager refuses; `status` is the HTTP status the API answers with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFound(RunError):
    def __init__(self, message: str, code: str = "not_found") -> None:
        super().__init__(code, message, 404)


class Conflict(RunError):
    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(code, message, 409)


class QueueFull(RunError):
    def __init__(self, message: str, code: str = "queue_full") -> None:
        super().__init__(code, message, 429)


class InvalidRequest(RunError):
    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(code, message, 400)
