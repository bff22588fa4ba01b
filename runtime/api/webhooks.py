"""Run webhooks: `run.completed` / `run.failed` POSTed to an agent's `webhookUrl`.

Deliveries happen in the sender's own task group, never in a run's: a slow or dead receiver
cannot delay a run or its response. Each delivery is retried under the one retry policy
(`runtime.retry`: exponential backoff with jitter, honouring `Retry-After` in seconds or as
an HTTP date) on connection errors, timeouts and the policy's retryable statuses (408, 409,
425, 429, 5xx); any other 4xx is final.

Every request carries:

- `X-Agentd-Event`: `run.completed` or `run.failed`;
- `X-Agentd-Delivery`: an id that stays the same across retries (deduplicate on it);
- `X-Agentd-Timestamp`: Unix seconds when the attempt was signed;
- `X-Agentd-Signature`: `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed with the
  daemon's webhook secret (`AGENTD_WEBHOOK_SECRET`, default: the API token). Receivers check
  it with `verify_signature` (or the same three lines in their language) and reject stale
  timestamps.

`cancelled` runs send nothing (the caller cancelled them); `interrupted` ones count as failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from runtime.ids import utc_now
from runtime.task_host import HostedTaskGroup
from tools.tls import https_context_ready

if TYPE_CHECKING:
    from runtime.api.metrics import ApiMetrics

    # runtime.retry loads with the run machinery (the providers' retries use it), which every
    # run awaits before it starts: before any delivery, never at start-up (~5 M instructions).
    from runtime.retry import RetryPolicy
    from runtime.runs import RunManager
    from runtime.store import RunRecord

log = logging.getLogger("agentd.webhooks")

SIGNATURE_HEADER = "X-Agentd-Signature"
TIMESTAMP_HEADER = "X-Agentd-Timestamp"
EVENT_HEADER = "X-Agentd-Event"
DELIVERY_HEADER = "X-Agentd-Delivery"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when `signature` is ours for `body` at `timestamp`, and the timestamp is fresh."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


def webhook_event(status: str) -> str | None:
    if status == "completed":
        return "run.completed"
    if status in ("failed", "interrupted"):
        return "run.failed"
    return None


def run_payload(
    event: str, record: RunRecord, *, sandbox_id: str, delivery_id: str
) -> dict[str, Any]:
    data = record.model_dump(mode="json", by_alias=True)
    data["output"] = record.result
    return {
        "event": event,
        "deliveryId": delivery_id,
        "createdAt": utc_now(),
        "sandboxId": sandbox_id,
        "data": data,
    }


class WebhookSender:
    """Owns webhook deliveries: `await sender.start()`, `sender.watch(manager, run_id, …)`,
    `await sender.aclose(grace)`."""

    def __init__(
        self,
        *,
        secret: str | None,
        sandbox_id: str = "local",
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        max_pending: int = 1000,
        metrics: ApiMetrics | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """`max_attempts`, `backoff` (the first retry's delay, doubled each time) and
        `max_backoff` (also the cap on a receiver's `Retry-After`) make the retry policy,
        unless `retry` gives one."""
        self.secret = secret
        self.sandbox_id = sandbox_id
        self._retry = retry
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self.timeout = timeout
        self.max_pending = max_pending
        self.metrics = metrics
        self.pending = 0
        self._tasks = HostedTaskGroup()
        self._idle = anyio.Event()
        self._idle.set()
        self._session: aiohttp.ClientSession | None = None
        self._warned_unsigned = False

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy: the one given, else made from the numbers given on first use
        (the first delivery's: see the import of RetryPolicy)."""
        if self._retry is None:
            from runtime.retry import RetryPolicy

            self._retry = RetryPolicy(
                max_attempts=self._max_attempts,
                base_delay=self._backoff,
                max_delay=self._max_backoff,
                max_retry_after=self._max_backoff,
                jitter=0.5,
            )
        return self._retry

    async def start(self) -> None:
        if not self._tasks.started:
            await self._tasks.start()

    async def aclose(self, grace: float = 5.0) -> None:
        """Give pending deliveries `grace` seconds, then cancel the rest."""
        if not self._tasks.started:
            return
        with anyio.move_on_after(grace):
            await self._idle.wait()
        if self.pending:
            log.warning("shutting down with %d webhook deliveries unfinished", self.pending)
        await self._tasks.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _spawn(self, func: Any, *args: Any) -> bool:
        if not self._tasks.running:
            log.error("webhook sender is not running; dropping %s", func.__name__)
            return False
        if self.pending >= self.max_pending:
            log.error("%d webhook tasks pending; dropping a new one", self.pending)
            if self.metrics is not None:
                self.metrics.webhook_finished("unknown", "dropped")
            return False
        self.pending += 1
        self._idle = anyio.Event()
        self._tasks.start_soon(self._tracked, func, *args)
        return True

    async def _tracked(self, func: Any, *args: Any) -> None:
        try:
            await func(*args)
        except Exception:
            log.exception("webhook task %s failed", func.__name__)
        finally:
            self.pending -= 1
            if self.pending == 0:
                self._idle.set()

    def watch(self, manager: RunManager, run_id: str, url: str | None, events: list[str]) -> None:
        """When the run ends, send the selected webhook (if the agent has a URL)."""
        if url and events:
            self._spawn(self._watch, manager, run_id, url, list(events))

    async def _watch(self, manager: RunManager, run_id: str, url: str, events: list[str]) -> None:
        record = await manager.wait(run_id)
        event = webhook_event(record.status)
        if event is None or event not in events:
            return
        await self.deliver(url, event, record)

    def send(self, url: str, event: str, record: RunRecord) -> bool:
        return self._spawn(self.deliver, url, event, record)

    async def deliver(self, url: str, event: str, record: RunRecord) -> bool:
        """POST the webhook, retrying; True once a receiver answered 2xx."""
        delivery_id = "whd_" + os.urandom(8).hex()
        body = json.dumps(
            run_payload(event, record, sandbox_id=self.sandbox_id, delivery_id=delivery_id),
            separators=(",", ":"),
        ).encode()
        for attempt in range(1, self.retry.max_attempts + 1):
            delay, outcome = await self._attempt(url, event, delivery_id, body)
            if outcome == "delivered":
                self._count(event, "delivered")
                return True
            if outcome == "rejected" or attempt == self.retry.max_attempts:
                self._count(event, "failed")
                log.warning(
                    "webhook %s for run %s to %s gave up after %d attempt(s)",
                    event,
                    record.run_id,
                    url,
                    attempt,
                )
                return False
            self._count(event, "retried")
            await (self.retry.sleep or anyio.sleep)(self.retry.backoff(attempt, delay))
        return False

    async def _attempt(
        self, url: str, event: str, delivery_id: str, body: bytes
    ) -> tuple[float | None, str]:
        """One POST: returns (server-requested delay or None, delivered|retry|rejected)."""
        from runtime.retry import parse_retry_after, retryable_status  # see RetryPolicy's

        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "agentd-webhooks",
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("webhooks are unsigned: set AGENTD_WEBHOOK_SECRET or AGENTD_TOKEN")
        try:
            if self._session is None:
                tls = await https_context_ready()
                self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None, "delivered"
                if retryable_status(response.status):
                    log.info("webhook %s to %s: HTTP %s, retrying", event, url, response.status)
                    return parse_retry_after(response.headers), "retry"
                log.warning("webhook %s to %s refused: HTTP %s", event, url, response.status)
                return None, "rejected"
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("webhook %s to %s failed (%r), retrying", event, url, exc)
            return None, "retry"

    def _count(self, event: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_finished(event, outcome)
