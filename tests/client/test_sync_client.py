"""The blocking `Client` against a real daemon (called from a worker thread, the daemon
serving on the test's event loop)."""

from __future__ import annotations

import anyio
import pytest

from runtime.client import Client, ConflictError, NotFoundError
from tests.api.conftest import Daemon
from tests.fakes.model_server import Turn, text, tool_call


async def test_the_blocking_client_drives_a_run(daemon: Daemon) -> None:
    daemon.model.script(
        Turn([tool_call("exec_command", {"cmd": "echo from-the-tool", "login": False})]),
        Turn([text("done")]),
    )

    def drive(url: str) -> None:
        with Client(url) as agentd:
            agentd.agents.upsert(
                {"slug": "helper", "model": daemon_model, "tools": ["exec_command"]}
            )
            assert agentd.agents.get("helper")["version"] == 1
            started = agentd.runs.start("helper", "run the tool")
            updates: list[str] = []
            final = agentd.runs.wait(
                started["runId"], timeout=15, on_update=lambda r: updates.append(r["status"])
            )
            assert final["status"] == "completed" and updates[-1] == "completed"
            events = list(agentd.runs.stream(started["runId"]))
            assert events[-1].type == "complete"
            outputs = "".join(e.payload["chunk"] for e in events if e.type == "tool_output")
            assert "from-the-tool" in outputs
            assert [r["runId"] for r in agentd.runs.list_all(page_size=1)] == [started["runId"]]
            assert len(agentd.threads.list()) == 1
            assert agentd.tools.call("read_file", {"path": "nope"})["isError"] is True
            with pytest.raises(NotFoundError):
                agentd.runs.get("run_missing")
            with pytest.raises(ConflictError):
                agentd.runs.pause(started["runId"])
            # Leaving a stream early neither hangs nor leaks the connection.
            for event in agentd.runs.stream(started["runId"]):
                assert event.id == 1
                break
            assert agentd.runs.get(started["runId"])["status"] == "completed"

    from tests.api.conftest import MODEL as daemon_model

    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(drive, daemon.url)
