"""Webhooks: signed, retried with backoff, selected by webhookEvents, never blocking a run."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import anyio
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime.api.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    sign,
    verify_signature,
)
from tests.api.conftest import Daemon, DaemonFactory, Receiver
from tests.fakes.model_server import HttpError

SECRET = "hook-secret"


async def secured(make_daemon: DaemonFactory) -> Daemon:
    return await make_daemon(webhook_secret=SECRET)


async def test_a_completed_run_is_delivered_signed_after_retries(
    make_daemon: DaemonFactory, receiver: Receiver
) -> None:
    daemon = await secured(make_daemon)
    receiver.script = [500, 503]
    await daemon.upsert(webhookUrl=receiver.url)
    run = await daemon.run()
    with anyio.fail_after(10):
        await receiver.delivered.wait()
    assert receiver.attempts == 3
    headers, body = receiver.deliveries[0]
    assert headers["X-Agentd-Event"] == "run.completed"
    assert headers[SIGNATURE_HEADER] == sign(SECRET, headers[TIMESTAMP_HEADER], body)
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    assert not verify_signature("other", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
    payload = json.loads(body)
    assert payload["event"] == "run.completed" and payload["sandboxId"] == "local"
    assert payload["data"]["runId"] == run["runId"] and payload["data"]["status"] == "completed"
    assert payload["data"]["output"] == "default answer"

    status, body = await daemon.get("/metrics")
    assert status == 200
    assert 'agentd_webhook_deliveries_total{event="run.completed",outcome="retried"} 2' in body
    assert 'agentd_webhook_deliveries_total{event="run.completed",outcome="delivered"} 1' in body


async def test_failed_runs_send_run_failed_when_selected(
    make_daemon: DaemonFactory, receiver: Receiver
) -> None:
    daemon = await secured(make_daemon)
    await daemon.upsert("both", webhookUrl=receiver.url)
    await daemon.upsert("only-ok", webhookUrl=receiver.url, webhookEvents=["run.completed"])
    daemon.model.script(HttpError(400, "no"), HttpError(400, "no"))
    failed = await daemon.run("only-ok")  # not selected: nothing is sent
    assert failed["status"] == "failed"
    failed = await daemon.run("both")
    with anyio.fail_after(10):
        await receiver.delivered.wait()
    headers, body = receiver.deliveries[0]
    assert headers["X-Agentd-Event"] == "run.failed"
    assert json.loads(body)["data"]["runId"] == failed["runId"]
    assert json.loads(body)["data"]["error"]["code"] == "model_error"
    assert len(receiver.deliveries) == 1


async def test_a_hanging_receiver_never_blocks_the_run(
    make_daemon: DaemonFactory, receiver: Receiver
) -> None:
    daemon = await secured(make_daemon)
    receiver.hold = anyio.Event()
    await daemon.upsert(webhookUrl=receiver.url)
    with anyio.fail_after(10):
        first = await daemon.run()
        second = await daemon.run()
    assert first["status"] == second["status"] == "completed"
    receiver.hold.set()
    with anyio.fail_after(10):
        while len(receiver.deliveries) < 2:
            await anyio.sleep(0.01)


async def test_client_errors_are_final_and_attempts_are_bounded(receiver: Receiver) -> None:
    from runtime.store import RunRecord

    record = RunRecord(run_id="run_x", agent="a", status="completed", result="ok")
    sender = WebhookSender(secret=SECRET, max_attempts=3, backoff=0.001)
    await sender.start()
    try:
        receiver.script = [404]
        assert await sender.deliver(receiver.url, "run.completed", record) is False
        assert receiver.attempts == 1
        receiver.script = [500, 500, 500, 500]
        assert await sender.deliver(receiver.url, "run.completed", record) is False
        assert receiver.attempts == 4
        receiver.script = [429]
        assert await sender.deliver(receiver.url, "run.completed", record) is True
        # A dead endpoint: connection refused, retried, then given up.
        assert await sender.deliver("http://127.0.0.1:9/hook", "run.completed", record) is False
    finally:
        await sender.aclose(grace=0)


def test_signature_rejects_stale_or_garbled_timestamps() -> None:
    body = b'{"x":1}'
    signature = sign(SECRET, "1000", body)
    assert verify_signature(SECRET, body, "1000", signature, now=1100)
    assert not verify_signature(SECRET, body, "1000", signature, now=5000)
    assert not verify_signature(SECRET, body, "soon", signature, now=1000)
    assert not verify_signature(SECRET, body + b" ", "1000", signature, now=1000)


async def test_a_receivers_retry_after_is_honoured_also_as_an_http_date() -> None:
    """The one retry policy (runtime.retry) decides: a 503 with `Retry-After` as an HTTP date
    waits until that date, a 409 is retried like any status the policy calls transient."""
    from runtime.retry import RetryPolicy
    from runtime.store import RunRecord

    answers = [
        web.Response(
            status=503, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)}
        ),
        web.Response(status=409),
        web.Response(status=204),
    ]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return answers.pop(0)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_retry_after=60, sleep=record)
    sender = WebhookSender(secret=SECRET, retry=policy)
    await sender.start()
    try:
        record_ = RunRecord(run_id="run_x", agent="a", status="completed", result="ok")
        assert await sender.deliver(str(server.make_url("/hook")), "run.completed", record_)
        assert answers == [] and len(waits) == 2
        assert 25 <= waits[0] <= 31  # until the date, not the 1 ms backoff
        assert waits[1] <= 0.002  # the second retry: base_delay doubled, less jitter
    finally:
        await sender.aclose(grace=0)
        await server.close()
