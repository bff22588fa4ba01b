"""Retrying model calls with the one retry policy (`runtime.retry`).

The SDKs are built with `max_retries=0`; this module owns retrying instead, so there is
exactly one place that decides what is retried, how long to wait and when to give up:

- the policy's retryable statuses (408, 409, 425, 429, every 5xx, so Anthropic's 529) and
  Anthropic's `overloaded_error` are retried; so are
  connection failures, timeouts and streams that broke off (dropped connection, malformed
  frame, a stream that ended without its terminal event), but not a server certificate
  that was not trusted (`connection_failure`);
- 400, 401, 403, 404, 413, 422 are not;
- the wait honours `retry-after-ms` then `retry-after` (seconds or an HTTP date), capped,
  and otherwise grows exponentially from `base_delay` with jitter;
- a turn is attempted at most `max_attempts` times; the last failure is raised as one
  `ModelError`.

A retry always restarts the whole model turn. When the failed attempt had already yielded
deltas, `StreamRestarted` is yielded first so consumers discard what they showed.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

import anyio

from runtime.providers.base import AssistantTurn, ModelError, StreamItem, StreamRestarted
from runtime.retry import (
    RETRYABLE_STATUSES,
    RetryPolicy,
    Sleep,
    parse_retry_after,
    retryable_status,
)

_STATUS_CODES = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
    529: "overloaded",
}

# Error `type`s in Anthropic / OpenAI error bodies, mapped to our codes.
_ERROR_TYPES = {
    "overloaded_error": ("overloaded", True),
    "rate_limit_error": ("rate_limited", True),
    "rate_limit_exceeded": ("rate_limited", True),
    "api_error": ("server_error", True),
    "server_error": ("server_error", True),
    "timeout_error": ("timeout", True),
    "invalid_request_error": ("invalid_request", False),
    "authentication_error": ("authentication", False),
    "permission_error": ("permission", False),
    "not_found_error": ("not_found", False),
    "billing_error": ("billing", False),
    "insufficient_quota": ("billing", False),
    "invalid_prompt": ("invalid_request", False),
    "invalid_image": ("invalid_request", False),
    "context_length_exceeded": ("invalid_request", False),
}


@dataclass
class Failure:
    """A classified failure: the error to raise if we give up, and the server's wait hint."""

    error: ModelError
    retry_after: float | None = None


def classify_status(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Failure:
    """Map an HTTP error status (and the body's error `type`/`code`, if any) to a `Failure`.

    `status` 0 (or any non-error status) means an error event inside a 200 stream: the body's
    type decides, and unknown in-stream errors count as retryable server errors.
    """
    if status >= 400:
        code = _STATUS_CODES.get(status) or ("server_error" if status >= 500 else "invalid_request")
        retryable = retryable_status(status)
        if error_type in ("insufficient_quota", "billing_error"):
            code, retryable = "billing", False  # a 429 that waiting will not fix
        elif error_type == "overloaded_error":
            code, retryable = "overloaded", True
    else:
        code, retryable = _ERROR_TYPES.get(error_type or "", ("server_error", True))
    should_retry = (headers or {}).get("x-should-retry")
    if should_retry == "true":
        retryable = True
    elif should_retry == "false":
        retryable = False
    return Failure(
        ModelError(code, message, status=status if status >= 400 else None, retryable=retryable),
        parse_retry_after(headers),
    )


def transient(code: str, message: str, *, status: int | None = None) -> Failure:
    """A failure of the transport or the stream itself (always retryable)."""
    return Failure(ModelError(code, message, status=status, retryable=True))


def connection_failure(label: str, exc: BaseException) -> Failure:
    """A request to the `label` API that got no answer (the SDK's connection error, `exc`):
    retryable, unless TLS refused the server's certificate, which no retry changes; that one
    says why (the SDKs' message is only "Connection error.") and what would fix it."""
    refused = _cause(exc, ssl.SSLCertVerificationError)
    if refused is None:
        return transient("connection", f"connection to the {label} API failed: {exc}")
    reason = refused.verify_message or str(refused)
    return Failure(
        ModelError(
            "certificate",
            f"connection to the {label} API failed: its server's certificate is not trusted "
            f"({reason}). If a proxy or a private CA signs it, point SSL_CERT_FILE at a "
            "bundle of the CAs to trust, in the daemon's environment",
        )
    )


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in `exc`'s chain of causes (`raise ... from`) and
    contexts (raised while handling), `exc` included."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


Classifier = Callable[[BaseException], "Failure | None"]

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


class StreamBroken(Exception):
    """The response body broke off while it streamed: the connection dropped, a read timed
    out, the chunked encoding was cut. Always retryable."""


async def read_stream(
    stream: AsyncIterable[T], sdk_error: type[BaseException]
) -> AsyncGenerator[T, None]:
    """Iterate an SDK's event stream, giving transport failures one public name.

    The SDKs wrap failures of the request itself in their own public exception types, but
    an error while *reading* a streamed body comes through as the HTTP library's own
    exception. Those are raised here as `StreamBroken`, so no adapter needs to know the
    SDKs' HTTP library. The SDK's own errors (`sdk_error`) and malformed data (`ValueError`,
    JSON included) pass through unchanged for the adapter to classify; only the iteration is
    guarded, never the code that consumes the events.
    """
    iterator = aiter(stream)
    while True:
        try:
            item = await anext(iterator)
        except StopAsyncIteration:
            return
        except (sdk_error, ValueError):
            raise
        except Exception as exc:
            raise StreamBroken(f"the stream broke off: {type(exc).__name__}: {exc}") from exc
        yield item


async def stream_with_retries(
    attempt: Callable[[], AsyncGenerator[StreamItem, None]],
    classify: Classifier,
    policy: RetryPolicy,
    *,
    sleep: Sleep | None = None,
) -> AsyncGenerator[StreamItem, None]:
    """Run `attempt()` until one finishes, retrying classified retryable failures.

    `classify` returns None for exceptions that are not model failures (programming errors),
    which propagate unchanged. `ModelError`s raised by the attempt are final unless their
    `retryable` flag is set.
    """
    attempt_no = 0
    while True:
        attempt_no += 1
        yielded = False
        try:
            stream = attempt()
            async with aclosing(stream):
                async for item in stream:
                    if not isinstance(item, AssistantTurn):
                        yielded = True
                    yield item
            return
        except ModelError as exc:
            failure = Failure(exc, getattr(exc, "retry_after", None))
        except Exception as exc:
            classified = classify(exc)
            if classified is None:
                raise
            failure = classified
            failure.error.__cause__ = exc
        if not failure.error.retryable or attempt_no >= policy.max_attempts:
            if failure.error.retryable and attempt_no > 1:
                failure.error.message = (
                    f"{failure.error.message} (gave up after {attempt_no} attempts)"
                )
                failure.error.args = (failure.error.message,)
            raise failure.error
        if yielded:
            yield StreamRestarted(attempt=attempt_no + 1, reason=failure.error.message)
        await (sleep or policy.sleep or anyio.sleep)(
            policy.backoff(attempt_no, failure.retry_after)
        )


__all__ = [
    "RETRYABLE_STATUSES",
    "Classifier",
    "Failure",
    "RetryPolicy",
    "Sleep",
    "StreamBroken",
    "classify_status",
    "connection_failure",
    "parse_retry_after",
    "read_stream",
    "stream_with_retries",
    "transient",
]
