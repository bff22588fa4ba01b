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

Deliveries outlive the daemon: each is kept in the store (`WebhookDelivery`) from its run's
start until it is delivered or given up, with its body and its attempts once the run has
ended. A daemon that stops (SIGTERM past the grace, a crash, a kill) before that delivers it
when it starts again (`WebhookSender.start` with the run manager, after crash recovery has
ended the runs it left: an interrupted run's `run.failed`), under the same delivery id and
with the attempts left. So a receiver may see a delivery twice (an attempt cut off by the
stop is made again): at least once, deduplicate on `X-Agentd-Delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio

from runtime.ids import utc_now
from runtime.runs.errors import NotFound
from runtime.store import StoreClosed, StoreFull, WebhookDelivery
from runtime.task_host import HostedTaskGroup
from tools.tls import https_context_ready

if TYPE_CHECKING:
    from runtime.api.metrics import ApiMetrics

    # runtime.retry loads with the run machinery (the providers' retries use it), which every
    # run awaits before it starts: before any delivery, never at start-up (~5 M instructions).
    from runtime.retry import RetryPolicy
    from runtime.runs import RunManager
    from runtime.store import RunRecord, Store

log = logging.getLogger("agentd.webhooks")

SIGNATURE_HEADER = "X-Agentd-Signature"
TIMESTAMP_HEADER = "X-Agentd-Timestamp"
EVENT_HEADER = "X-Agentd-Event"
DELIVERY_HEADER = "X-Agentd-Delivery"
# Deliveries a previous daemon kept, sent at once at most (the others wait their turn).
RESUMED_AT_ONCE = 32


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


def new_delivery_id() -> str:
    return "whd_" + os.urandom(8).hex()


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
    """Owns webhook deliveries: `await sender.start(manager)`, `await sender.watch(manager,
    run_id, …)`, `await sender.aclose(grace)`."""

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
        self._store: Store | None = None  # where deliveries are kept: see start

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

    async def start(self, manager: RunManager | None = None) -> None:
        """Start sending. With the run manager, deliveries are kept in its store, and those a
        previous daemon left are sent again (call it after crash recovery: a run the previous
        daemon left running must have ended)."""
        if not self._tasks.started:
            await self._tasks.start()
        if manager is None or self._store is not None:
            return
        self._store = manager.store
        # read here, before the daemon is ready: once runs start, their own deliveries are in
        # the table too, and would be sent twice
        left = await self._store.webhook_deliveries()
        if left:
            log.info(
                "%d webhook deliveries kept by the previous daemon: resuming them, %d at a time",
                len(left),
                RESUMED_AT_ONCE,
            )
            # One task for them all, so that they never take the places of new runs' webhooks
            self._spawn(self._resume_all, manager, left)

    async def _resume_all(self, manager: RunManager, left: list[WebhookDelivery]) -> None:
        at_once = anyio.CapacityLimiter(RESUMED_AT_ONCE)

        async def resume(delivery: WebhookDelivery) -> None:
            async with at_once:
                try:
                    await self._resume(manager, delivery)
                except Exception:  # the others go on
                    log.exception("webhook delivery %s failed", delivery.id)

        async with anyio.create_task_group() as group:
            for delivery in left:
                group.start_soon(resume, delivery)

    async def aclose(self, grace: float = 5.0) -> None:
        """Give pending deliveries `grace` seconds, then cancel the rest."""
        if not self._tasks.started:
            return
        with anyio.move_on_after(grace):
            await self._idle.wait()
        if self.pending:
            kept = ": kept, the next daemon sends them" if self._store is not None else ""
            log.warning("shutting down with %d webhook deliveries unfinished%s", self.pending, kept)
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

    async def watch(
        self, manager: RunManager, run_id: str, url: str | None, events: list[str]
    ) -> None:
        """When the run ends, send the selected webhook (if the agent has a URL). The delivery
        is kept before this returns, so before the API answers the request that started the
        run."""
        if url and events:
            delivery = WebhookDelivery(id=new_delivery_id(), run_id=run_id, url=url, events=events)
            await self._keep(delivery)
            self._spawn(self._watch, manager, delivery)

    async def _watch(self, manager: RunManager, delivery: WebhookDelivery) -> None:
        await self._finish(delivery, await manager.wait(delivery.run_id))

    async def _resume(self, manager: RunManager, delivery: WebhookDelivery) -> None:
        if delivery.body is not None:
            await self._send(delivery)
            return
        try:  # the previous daemon stopped while the run was active: recovery has ended it
            record = await manager.wait(delivery.run_id)
        except NotFound:  # the store has no such run (a state dir restored from a copy, say)
            await self._forget(delivery)
            return
        await self._finish(delivery, record)

    async def _finish(self, delivery: WebhookDelivery, record: RunRecord) -> None:
        """The run has ended: send its webhook if the agent selected that event."""
        event = webhook_event(record.status)
        if event is None or event not in delivery.events:
            await self._forget(delivery)
            return
        self._write_body(delivery, event, record)
        await self._keep(delivery)
        await self._send(delivery)

    def _write_body(self, delivery: WebhookDelivery, event: str, record: RunRecord) -> None:
        """`delivery` becomes `event`'s, with the run's payload as its body."""
        payload = run_payload(event, record, sandbox_id=self.sandbox_id, delivery_id=delivery.id)
        delivery.event = event
        delivery.body = json.dumps(payload, separators=(",", ":"))

    def send(self, url: str, event: str, record: RunRecord) -> bool:
        return self._spawn(self.deliver, url, event, record)

    async def deliver(self, url: str, event: str, record: RunRecord) -> bool:
        """POST the webhook now, retrying (not kept in the store); True once a receiver
        answered 2xx."""
        delivery = WebhookDelivery(
            id=new_delivery_id(), run_id=record.run_id, url=url, events=[event]
        )
        self._write_body(delivery, event, record)
        return await self._send(delivery, kept=False)

    async def _send(self, delivery: WebhookDelivery, *, kept: bool = True) -> bool:
        """POST the delivery's body, retrying, from the attempts it has made; it is forgotten
        once delivered or given up, and its attempts are kept after each retry."""
        assert delivery.event is not None and delivery.body is not None
        event, url, body = delivery.event, delivery.url, delivery.body.encode()
        first = delivery.attempts + 1
        for attempt in range(first, max(first, self.retry.max_attempts) + 1):
            delay, outcome = await self._attempt(url, event, delivery.id, body)
            if outcome == "delivered":
                self._count(event, "delivered")
                if kept:
                    await self._forget(delivery)
                return True
            if outcome == "rejected" or attempt >= self.retry.max_attempts:
                self._count(event, "failed")
                log.warning(
                    "webhook %s for run %s to %s gave up after %d attempt(s)",
                    event,
                    delivery.run_id,
                    url,
                    attempt,
                )
                if kept:
                    await self._forget(delivery)
                return False
            self._count(event, "retried")
            delivery.attempts = attempt
            if kept:
                await self._keep(delivery)
            wait = self.retry.backoff(attempt, delay)
            log.info(
                "webhook %s %s: attempt %d failed, retrying in %.1fs", event, url, attempt, wait
            )
            await (self.retry.sleep or anyio.sleep)(wait)
        return False

    async def _keep(self, delivery: WebhookDelivery) -> None:
        if self._store is None:
            return
        try:
            await self._store.save_webhook_delivery(delivery)
        except (StoreFull, StoreClosed, sqlite3.Error) as exc:  # it is still sent, if not kept
            log.warning("webhook delivery %s not kept for a restart: %s", delivery.id, exc)

    async def _forget(self, delivery: WebhookDelivery) -> None:
        if self._store is None:
            return
        try:
            await self._store.drop_webhook_delivery(delivery.id)
        except (StoreFull, StoreClosed, sqlite3.Error) as exc:  # a restart sends it again
            log.warning("webhook delivery %s not forgotten: %s", delivery.id, exc)

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
                if self._session is None:  # another delivery may have made it meanwhile
                    connector = aiohttp.TCPConnector(ssl=tls)
                    self._session = aiohttp.ClientSession(connector=connector)
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None, "delivered"
                if retryable_status(response.status):
                    log.info("webhook %s to %s: HTTP %s", event, url, response.status)
                    return parse_retry_after(response.headers), "retry"
                log.warning("webhook %s to %s refused: HTTP %s", event, url, response.status)
                return None, "rejected"
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("webhook %s to %s failed (%r)", event, url, exc)
            return None, "retry"

    def _count(self, event: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.webhook_finished(event, outcome)
