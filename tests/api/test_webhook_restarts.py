"""Webhook deliveries outlive the daemon (runtime/api/webhooks.py): real `agentd serve`
processes on one state dir, a receiver on 127.0.0.1. A delivery waiting to retry when the
daemon stops is sent by the next one under the same delivery id, with the attempts left; a
run the daemon was killed in sends its `run.failed` once the next daemon has recovered it;
and what was delivered is not kept. A backlog of deliveries left never takes the places of new
runs' webhooks."""

from __future__ import annotations

import gc
import json
import signal
import sqlite3
from pathlib import Path

import aiohttp
import anyio
import pytest

from runtime.api.webhooks import RESUMED_AT_ONCE, WebhookSender
from runtime.runs import RunManager
from runtime.store import RunRecord, Store, WebhookDelivery
from tests.api.conftest import MODEL, Receiver
from tests.api.daemon_process import agentd
from tests.fakes.model_server import FakeModelServer, Gate, Turn, text


def attempts(receiver: Receiver) -> list[tuple[str, dict[str, object]]]:
    """Each request the receiver had: its delivery id and payload."""
    return [(headers["X-Agentd-Delivery"], json.loads(body)) for headers, body in receiver.tried]


def kept_deliveries(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "state" / "agentd.db") as conn:
        return [row[0] for row in conn.execute("SELECT id FROM webhook_deliveries")]


async def create_agent(http: aiohttp.ClientSession, url: str, hook: str) -> None:
    agent = {"slug": "a", "model": MODEL, "tools": [], "webhookUrl": hook}
    async with http.post(url + "/v1/agents", json=agent) as resp:
        assert resp.status == 201, await resp.text()


async def test_a_delivery_waiting_to_retry_is_sent_by_the_next_daemon(
    tmp_path: Path, workspace: Path, receiver: Receiver
) -> None:
    receiver.script = [503]
    async with FakeModelServer() as model:
        model.script(Turn([text("all done")]))
        # a retry far away: the daemon stops while the delivery waits for it
        env = {**model.env(), "AGENTD_WEBHOOK_BACKOFF": "600", "AGENTD_SHUTDOWN_GRACE": "0.2"}
        async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
            await create_agent(http, proc.url, receiver.url)
            body = {"agent": "a", "prompt": "go", "stream": False}
            async with http.post(proc.url + "/v1/run", json=body) as resp:
                run = (await resp.json())["data"]
            with anyio.fail_after(30):
                await receiver.attempted.wait()
            proc.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await proc.process.wait() == 0
        [(delivery_id, _)] = attempts(receiver)
        assert kept_deliveries(tmp_path) == [delivery_id]

        env = {**model.env(), "AGENTD_WEBHOOK_BACKOFF": "0.01"}
        async with agentd(tmp_path, workspace, env) as proc:
            with anyio.fail_after(30):
                await receiver.delivered.wait()
            proc.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await proc.process.wait() == 0
    (first_id, first), (second_id, second) = attempts(receiver)
    assert first_id == second_id == delivery_id and first == second  # the same delivery
    assert second["event"] == "run.completed" and second["deliveryId"] == delivery_id
    assert second["data"]["runId"] == run["runId"] and second["data"]["output"] == "all done"
    assert kept_deliveries(tmp_path) == []  # delivered: a third daemon sends nothing


async def test_the_attempts_made_before_a_restart_count(
    tmp_path: Path, workspace: Path, receiver: Receiver
) -> None:
    """Two attempts at most, one made before the restart: the next daemon makes one more and
    gives up, rather than starting the count again."""
    receiver.script = [503, 503, 503]
    async with FakeModelServer() as model:
        model.script(Turn([text("done")]))
        limits = {"AGENTD_WEBHOOK_MAX_ATTEMPTS": "2", "AGENTD_SHUTDOWN_GRACE": "0.2"}
        env = {**model.env(), **limits, "AGENTD_WEBHOOK_BACKOFF": "600"}
        async with agentd(tmp_path, workspace, env) as proc, aiohttp.ClientSession() as http:
            await create_agent(http, proc.url, receiver.url)
            body = {"agent": "a", "prompt": "go", "stream": False}
            async with http.post(proc.url + "/v1/run", json=body) as resp:
                assert resp.status == 200
            with anyio.fail_after(30):
                await receiver.attempted.wait()
            proc.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await proc.process.wait() == 0

        env = {**model.env(), **limits, "AGENTD_WEBHOOK_BACKOFF": "0.01"}
        async with agentd(tmp_path, workspace, env) as proc:
            with anyio.fail_after(30):
                while not any("gave up after" in line for line in proc.log):
                    await anyio.sleep(0.02)
            proc.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await proc.process.wait() == 0
    assert any("gave up after 2 attempt(s)" in line for line in proc.log), proc.log
    assert len(attempts(receiver)) == 2 and len({id_ for id_, _ in attempts(receiver)}) == 1
    assert kept_deliveries(tmp_path) == []  # given up: nothing left to send


@pytest.mark.parametrize("when", ["in its model request", "as its start was answered"])
async def test_a_run_the_daemon_was_killed_in_sends_run_failed_after_the_restart(
    when: str, tmp_path: Path, workspace: Path, receiver: Receiver
) -> None:
    """Killed in the run's model request, or the moment the API began to answer the request
    that started it: the delivery is kept before that answer (it was kept a moment later, and
    a kill in that moment lost the run's webhook)."""
    async with FakeModelServer() as model:
        gate = Gate()
        model.script(Turn([text("never ", "finished")], hold=gate, hold_after=1))
        async with (
            agentd(tmp_path, workspace, model.env()) as proc,
            aiohttp.ClientSession() as http,
        ):
            await create_agent(http, proc.url, receiver.url)
            stream = await http.post(proc.url + "/v1/run", json={"agent": "a", "prompt": "go"})
            run_id = stream.headers["X-Run-ID"]
            if when == "in its model request":
                with anyio.fail_after(60):  # the first model call waits for the SDK's import
                    await gate.reached.wait()
            proc.process.kill()
            await proc.process.wait()
            stream.close()
        gate.open()
        assert attempts(receiver) == [] and len(kept_deliveries(tmp_path)) == 1

        async with agentd(tmp_path, workspace, model.env()):
            with anyio.fail_after(30):
                await receiver.delivered.wait()
    [(delivery_id, payload)] = attempts(receiver)
    assert payload["event"] == "run.failed" and payload["deliveryId"] == delivery_id
    assert payload["data"]["runId"] == run_id and payload["data"]["status"] == "interrupted"


async def test_deliveries_left_take_one_place_and_new_runs_webhooks_are_not_refused(
    tmp_path: Path, workspace: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """More deliveries left than the sender's bound on pending tasks: they are resumed
    together, a bounded number at a time, as one pending task, so a new run's webhook still
    finds a place; each is sent once, over one HTTP session (resumed deliveries each made
    their own and left them unclosed)."""
    left = RESUMED_AT_ONCE + 8
    store = await Store.open(tmp_path / "state")
    try:
        for n in range(left):
            await store.save_webhook_delivery(
                WebhookDelivery(
                    id=f"whd_{n}",
                    run_id=f"run_{n}",
                    url=receiver.url,
                    events=["run.completed"],
                    event="run.completed",
                    body=json.dumps({"n": n}),
                )
            )
        await store.insert_run(RunRecord(run_id="run_new", agent="a", status="completed"))
        manager = RunManager(store, workspace)
        sender = WebhookSender(secret="s", max_pending=3, backoff=0.001)
        await sender.start(manager)
        try:
            assert sender.pending == 1
            await sender.watch(manager, "run_new", receiver.url, ["run.completed"])
            assert sender.pending == 2  # not refused
            with anyio.fail_after(30):
                while len({delivery for delivery, _ in attempts(receiver)}) < left + 1:
                    receiver.attempted = anyio.Event()
                    await receiver.attempted.wait()
        finally:
            await sender.aclose(grace=10)
        assert len(attempts(receiver)) == left + 1  # each once
        assert await store.webhook_deliveries() == []
        gc.collect()
        assert not [r for r in caplog.records if "Unclosed client session" in r.getMessage()]
    finally:
        await store.close()
