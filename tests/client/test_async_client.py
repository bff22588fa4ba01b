"""`runtime.client.AsyncClient` against a real daemon: every resource, typed events,
auto-pagination, wait, and the typed errors of each status."""

from __future__ import annotations

import anyio
import pytest

from runtime.client import (
    AsyncClient,
    AuthenticationError,
    ConflictError,
    Event,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ValidationError,
    is_retryable,
)
from runtime.events.model import (
    CompletePayload,
    TextPayload,
    ToolCallPayload,
    ToolResultPayload,
)
from tests.api.conftest import MODEL, Daemon, DaemonFactory
from tests.cli.support import free_port
from tests.fakes.model_server import Gate, Turn, text, tool_call


async def test_agents_upsert_get_list_update_versions_rollback_delete(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url) as agentd:
        created = await agentd.agents.upsert({"slug": "helper", "model": MODEL, "tools": []})
        assert created["action"] == "created" and created["version"] == 1
        updated = await agentd.agents.update("helper", systemPrompt="Be brief.")
        assert updated["action"] == "updated" and updated["version"] == 2
        agent = await agentd.agents.get("helper")
        assert agent["systemPrompt"] == "Be brief." and agent["tools"] == []
        assert (await agentd.agents.get("helper", version=1))["systemPrompt"] == ""
        assert [a["slug"] for a in await agentd.agents.list()] == ["helper"]
        versions = await agentd.agents.versions("helper")
        assert sorted(v["version"] for v in versions) == [1, 2]
        rolled = await agentd.agents.rollback("helper", 1)
        assert rolled["version"] == 3
        assert (await agentd.agents.get("helper"))["systemPrompt"] == ""
        await agentd.agents.delete("helper")
        with pytest.raises(NotFoundError) as missing:
            await agentd.agents.get("helper")
    assert missing.value.status == 404 and missing.value.request_id


async def test_update_refuses_to_write_back_a_redacted_secret(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url) as agentd:
        await agentd.agents.upsert(
            {
                "slug": "keyed",
                "model": MODEL,
                "tools": [],
                "env": {"DB": "hunter22"},
                "secrets": ["DB"],
            }
        )
        with pytest.raises(ValueError, match="secret"):
            await agentd.agents.update("keyed", systemPrompt="new")
        result = await agentd.agents.update("keyed", systemPrompt="new", env={"DB": "hunter23"})
        assert result["version"] == 2


async def test_start_stream_typed_events_then_detail_and_files(daemon: Daemon) -> None:
    await daemon.upsert(tools=["exec_command", "write_file"])
    daemon.model.script(
        Turn([tool_call("write_file", {"path": "hello.txt", "content": "hi\n"}, id="c1")]),
        Turn([text("wrote ", "it")]),
    )
    async with AsyncClient(daemon.url) as agentd:
        started = await agentd.runs.start("helper", "write hello.txt", metadata={"k": "v"})
        run_id = started["runId"]
        assert started["threadId"]
        events = [event async for event in agentd.runs.stream(run_id)]
        assert all(isinstance(e, Event) for e in events)
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        kinds = [e.type for e in events]
        assert kinds[0] == "run_started" and kinds[-1] == "complete"
        call = next(e.typed_payload() for e in events if e.type == "tool_call")
        assert isinstance(call, ToolCallPayload) and call.tool == "write_file"
        result = next(e.typed_payload() for e in events if e.type == "tool_result")
        assert isinstance(result, ToolResultPayload) and not result.is_error
        texts = [e.typed_payload() for e in events if e.type == "text"]
        assert "".join(t.content for t in texts if isinstance(t, TextPayload)) == "wrote it"
        final = events[-1].typed_payload()
        assert isinstance(final, CompletePayload) and final.status == "completed"

        # Resuming after an id replays exactly what follows it.
        tail = [event async for event in agentd.runs.stream(run_id, after=events[-3].id)]
        assert [e.id for e in tail] == [e.id for e in events[-2:]]

        detail = await agentd.runs.get(run_id)
        assert detail["status"] == "completed" and detail["metadata"] == {"k": "v"}
        listing = await agentd.runs.files(run_id)
        assert "hello.txt" in [entry["name"] for entry in listing["entries"]]
        content = await agentd.runs.read_file(run_id, "/hello.txt")
        assert content["content"] == "hi\n"
        thread = await agentd.threads.get(started["threadId"])
        assert len(thread["messages"]) == 4
        assert [t["id"] for t in await agentd.threads.list(agent="helper")] == [started["threadId"]]
        forked = await agentd.runs.fork(run_id, 1, "again")
        assert forked["parentRunId"] == run_id
        await agentd.runs.wait(forked["runId"], timeout=15)
        with pytest.raises(ConflictError):
            await agentd.runs.cancel(run_id)


async def test_wait_reports_each_status_change_and_times_out(daemon: Daemon) -> None:
    await daemon.upsert()
    gate = Gate()
    # A tool call, so that the run reaches a safe point (before the call) where the pause
    # holds it: a last answer without one would let the run finish before the resume.
    call = tool_call("no_such_tool", {}, id="c1")
    daemon.model.script(Turn([text("slow ", "answer"), call], hold=gate, hold_after=2))
    seen: list[str] = []
    async with AsyncClient(daemon.url) as agentd:
        run_id = (await agentd.runs.start("helper", "x"))["runId"]
        with anyio.fail_after(10):
            await gate.reached.wait()
        with pytest.raises(TimeoutError):
            await agentd.runs.wait(run_id, timeout=0.2)
        await agentd.runs.pause(run_id)
        gate.open()
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                final = await agentd.runs.wait(
                    run_id, timeout=15, on_update=lambda r: seen.append(r["status"])
                )
                assert final["status"] == "completed"

            tg.start_soon(waiter)
            with anyio.fail_after(10):
                while not seen:
                    await anyio.sleep(0.01)
            await agentd.runs.send_input(run_id, "and be quick")
            await agentd.runs.resume(run_id)
    # Paused while the model turn was under way: `pausing` until the turn has ended (the
    # first update may come after that).
    assert seen[0] in ("pausing", "paused") and seen[-1] == "completed"


async def test_list_all_follows_every_page(daemon: Daemon) -> None:
    await daemon.upsert()
    ids = [(await daemon.run())["runId"] for _ in range(5)]
    async with AsyncClient(daemon.url) as agentd:
        first = await agentd.runs.list(limit=2)
        assert len(first) == 2 and first.has_more and first.next_cursor
        every = [run["runId"] async for run in agentd.runs.list_all(page_size=2)]
        assert every == list(reversed(ids))
        completed = [r async for r in agentd.runs.list_all(status="completed", page_size=3)]
        assert len(completed) == 5
        assert [r async for r in agentd.runs.list_all(agent="nobody")] == []


async def test_tools_call(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url) as agentd:
        result = await agentd.tools.call("exec_command", {"cmd": "echo hi", "login": False})
        assert "hi" in result["output"] and result["isError"] is False
        bad = await agentd.tools.call("read_file", {"path": "missing.txt"})
        assert bad["isError"] is True
        with pytest.raises(NotFoundError):
            await agentd.tools.call("no_such_tool", {})


async def test_validation_error_carries_the_details(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url) as agentd:
        with pytest.raises(ValidationError) as refused:
            await agentd.agents.upsert({"slug": "Bad Slug!", "model": MODEL})
    assert refused.value.status == 400 and refused.value.details
    assert any("slug" in str(d.get("loc") or d) for d in refused.value.details)
    assert not is_retryable(refused.value)


async def test_authentication_error_on_a_missing_or_wrong_token(
    make_daemon: DaemonFactory,
) -> None:
    daemon = await make_daemon(token="s3cret-token")
    async with AsyncClient(daemon.url) as anonymous:
        with pytest.raises(AuthenticationError):
            await anonymous.agents.list()
    async with AsyncClient(daemon.url, "wrong") as wrong:
        with pytest.raises(AuthenticationError) as refused:
            await wrong.runs.list()
    assert refused.value.status == 401 and not is_retryable(refused.value)
    async with AsyncClient(daemon.url, "s3cret-token") as right:
        assert len(await right.agents.list()) == 0


async def test_token_and_url_come_from_the_environment(
    make_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = await make_daemon(token="env-token")
    monkeypatch.setenv("AGENTD_URL", daemon.url)
    monkeypatch.setenv("AGENTD_TOKEN", "env-token")
    monkeypatch.setenv("AGENTD_TIMEOUT", "7.5")
    monkeypatch.setenv("AGENTD_MAX_RETRIES", "4")
    async with AsyncClient() as agentd:
        assert agentd.config.timeout == 7.5 and agentd.config.max_retries == 4
        assert len(await agentd.agents.list()) == 0
    monkeypatch.setenv("AGENTD_MAX_RETRIES", "lots")
    with pytest.raises(ValueError, match="AGENTD_MAX_RETRIES"):
        AsyncClient()


async def test_payload_too_large(make_daemon: DaemonFactory) -> None:
    daemon = await make_daemon(max_body_bytes=2048)
    async with AsyncClient(daemon.url) as agentd:
        with pytest.raises(PayloadTooLargeError) as refused:
            await agentd.agents.upsert({"slug": "big", "model": MODEL, "systemPrompt": "x" * 4096})
    assert refused.value.status == 413 and not is_retryable(refused.value)


async def test_a_full_queue_is_a_rate_limit_error_with_retry_after(
    make_daemon: DaemonFactory,
) -> None:
    daemon = await make_daemon(max_concurrent_runs=1, max_queue=0)
    await daemon.upsert()
    gate = Gate()
    daemon.model.script(Turn([text("busy")], hold=gate, hold_after=1))
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    from runtime.providers.retry import RetryPolicy

    policy = RetryPolicy(sleep=record)
    async with AsyncClient(daemon.url, max_retries=2, retry_policy=policy) as agentd:
        first = await agentd.runs.start("helper", "one")
        with anyio.fail_after(10):
            await gate.reached.wait()
        with pytest.raises(RateLimitError) as refused:
            await agentd.runs.start("helper", "two")
        gate.open()
        await agentd.runs.wait(first["runId"], timeout=15)
    assert refused.value.retry_after == 1.0 and is_retryable(refused.value)
    # A start the daemon refused is safe to repeat: it was tried 3 times, waiting as told.
    assert slept == [1.0, 1.0]


async def test_an_unreachable_daemon_is_a_network_error_that_says_what_to_check() -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    from runtime.providers.retry import RetryPolicy

    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncClient(url, max_retries=3, retry_policy=RetryPolicy(sleep=record)) as agentd:
        with pytest.raises(NetworkError) as failed:
            await agentd.runs.start("helper", "hi")
    assert "agentd serve" in str(failed.value) and url in str(failed.value)
    assert is_retryable(failed.value) and failed.value.sent is False
    # Exponential backoff with jitter: each wait within [0.75, 1] of 0.5 s * 2**n.
    assert len(slept) == 3
    for n, delay in enumerate(slept):
        assert 0.75 * 0.5 * 2**n <= delay <= 0.5 * 2**n
