"""The retry policy on its own: classification, retry-after parsing, backoff, the loop."""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import AsyncIterator

import pytest

from runtime.providers.base import (
    AssistantTurn,
    ModelError,
    StreamItem,
    StreamRestarted,
    TextDelta,
)
from runtime.providers.retry import (
    Failure,
    RetryPolicy,
    classify_status,
    connection_failure,
    parse_retry_after,
    stream_with_retries,
    transient,
)
from tests.providers.conftest import SleepRecorder


def test_parse_retry_after_prefers_milliseconds() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"retry-after": future}) or 0) <= 31
    assert parse_retry_after({"retry-after": "not a date"}) is None


@pytest.mark.parametrize(
    ("status", "etype", "code", "retryable"),
    [
        (429, None, "rate_limited", True),
        (429, "insufficient_quota", "billing", False),
        (529, "overloaded_error", "overloaded", True),
        (500, "api_error", "server_error", True),
        (502, None, "server_error", True),
        (408, None, "timeout", True),
        (400, "invalid_request_error", "invalid_request", False),
        (401, None, "authentication", False),
        (403, None, "permission", False),
        (404, None, "not_found", False),
        (413, None, "invalid_request", False),
        (0, "overloaded_error", "overloaded", True),
        (0, "invalid_prompt", "invalid_request", False),
        (0, "something_new", "server_error", True),
    ],
)
def test_classify_status(status: int, etype: str | None, code: str, retryable: bool) -> None:
    failure = classify_status(status, "msg", error_type=etype)
    assert (failure.error.code, failure.error.retryable) == (code, retryable)
    assert failure.error.status == (status or None)


def test_x_should_retry_header_wins() -> None:
    assert not classify_status(500, "m", headers={"x-should-retry": "false"}).error.retryable
    assert classify_status(400, "m", headers={"x-should-retry": "true"}).error.retryable


def _raised_from(cause: BaseException) -> Exception:
    """An SDK-style connection error raised from `cause`, through the HTTP library's own."""
    try:
        try:
            raise cause
        except BaseException as exc:
            raise ConnectionError("the HTTP library's connect error") from exc
    except ConnectionError:
        try:
            raise RuntimeError("Connection error.")  # the SDK's, raised while handling it
        except RuntimeError as sdk_error:
            return sdk_error


def test_a_connection_failure_is_retried_unless_the_certificate_was_refused() -> None:
    refused = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] failed")
    refused.verify_message = "self-signed certificate in certificate chain"
    failure = connection_failure("OpenAI", _raised_from(refused))
    assert (failure.error.code, failure.error.retryable) == ("certificate", False)
    assert failure.error.message == (
        "connection to the OpenAI API failed: its server's certificate is not trusted "
        "(self-signed certificate in certificate chain). If a proxy or a private CA signs it, "
        "point SSL_CERT_FILE at a bundle of the CAs to trust, in the daemon's environment"
    )
    failure = connection_failure("OpenAI", _raised_from(ConnectionRefusedError(111, "refused")))
    assert (failure.error.code, failure.error.retryable) == ("connection", True)
    assert failure.error.message == "connection to the OpenAI API failed: Connection error."


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=0.25)
    for n, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delay = policy.backoff(n)
        assert ceiling * 0.75 <= delay <= ceiling
    assert policy.backoff(3, retry_after=0.01) == 0.01
    assert RetryPolicy(max_retry_after=10).backoff(1, retry_after=3600) == 10


def test_policy_from_env_ignores_junk() -> None:
    assert RetryPolicy.from_env({"AGENTD_MODEL_MAX_ATTEMPTS": "x"}) == RetryPolicy()
    tuned = RetryPolicy.from_env(
        {"AGENTD_MODEL_MAX_ATTEMPTS": "7", "AGENTD_MODEL_RETRY_BASE_MS": "10"}
    )
    assert (tuned.max_attempts, tuned.base_delay) == (7, 0.01)


class Flaky(Exception):
    pass


def classify(exc: BaseException) -> Failure | None:
    return transient("connection", str(exc)) if isinstance(exc, Flaky) else None


async def test_restart_marker_only_after_yielded_deltas(sleeps: SleepRecorder) -> None:
    calls = 0

    async def attempt() -> AsyncIterator[StreamItem]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Flaky("refused")  # before any delta: no marker needed
        yield TextDelta(text=f"try{calls}")
        if calls == 2:
            raise Flaky("dropped")
        yield AssistantTurn(content=[])

    policy = RetryPolicy(max_attempts=3, base_delay=0.5, jitter=0.0, sleep=sleeps)
    items = [i async for i in stream_with_retries(attempt, classify, policy)]
    assert [type(i).__name__ for i in items] == [
        "TextDelta",
        "StreamRestarted",
        "TextDelta",
        "AssistantTurn",
    ]
    restart = items[1]
    assert isinstance(restart, StreamRestarted) and restart.attempt == 3
    assert "dropped" in restart.reason
    assert sleeps.waits == [0.5, 1.0]


async def test_unclassified_errors_propagate_unchanged(sleeps: SleepRecorder) -> None:
    async def attempt() -> AsyncIterator[StreamItem]:
        raise KeyError("bug")
        yield  # pragma: no cover

    with pytest.raises(KeyError):
        _ = [i async for i in stream_with_retries(attempt, classify, RetryPolicy(sleep=sleeps))]
    assert sleeps.waits == []


async def test_non_retryable_model_error_is_raised_at_once(sleeps: SleepRecorder) -> None:
    async def attempt() -> AsyncIterator[StreamItem]:
        raise ModelError("invalid_request", "bad", status=400)
        yield  # pragma: no cover

    with pytest.raises(ModelError) as info:
        _ = [i async for i in stream_with_retries(attempt, classify, RetryPolicy(sleep=sleeps))]
    assert info.value.message == "bad" and sleeps.waits == []
