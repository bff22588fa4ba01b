"""SIGKILL of a real `agentd serve` at a seeded random point of a run, then a restart on the
same state dir, and every check of what must have survived. Used by
tests/api/test_sigkill.py (a few seeds) and benchmarks/faults_bench.py (many).

The run: an agent with exec_command, write_file and apply_patch whose model (the fake model
server, Anthropic's wire format) streams text and makes tool calls over four steps, then
answers. The kill point: after the client has read `kill_after` events of the run's SSE
stream (drawn from 1 … the events of an uninterrupted run on the same daemon), plus a random
delay of up to 30 ms so the kill also lands between events (mid-write, mid-command). Both are
drawn from `random.Random(seed)`, so a seed names one kill point.

After the restart it checks:
- the run is `interrupted` (or `completed`, if it got that far), and says so in its events;
- its usage and iterations (record and `complete`) add up its stored `usage` events;
- every event the client read (before the kill, and what was still in the socket after it) is
  in the store with the same id, type and payload, and the stored ids are 1, 2, 3, … gapless;
- the thread's persisted events are gapless, end with `run_completed` of the run's status,
  pair every tool call with its result, and its rollout file holds exactly the stored events;
- the workspace holds no half-applied edit (notes.txt is absent or one of its whole states);
- a continuation run on the thread completes, and the model received a valid conversation
  (the original prompt first, every tool_use answered by a tool_result in the next message).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from tests.api.conftest import Frame, read_frames
from tests.api.daemon_process import agentd
from tests.fakes.model_server import FakeModelServer, RecordedRequest, Turn, text, tool_call

MODEL = "claude-sonnet-4-6"
CONTINUE = "CONTINUE where you stopped"
PATCH = """*** Begin Patch
*** Update File: notes.txt
 alpha
-beta
+gamma
*** End Patch
"""
NOTES_STATES = (None, "alpha\nbeta\n", "alpha\ngamma\n")

STEPS = (
    Turn(
        [
            text("Looking ", "around ", "first."),
            tool_call(
                "exec_command",
                {"cmd": "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.02; done", "login": False},
                chunks=4,
            ),
        ]
    ),
    Turn(
        [
            text("Writing ", "notes."),
            tool_call("write_file", {"path": "notes.txt", "content": "alpha\nbeta\n"}),
        ]
    ),
    Turn(
        [
            text("Patching ", "them."),
            tool_call("apply_patch", {"input": PATCH}),
            tool_call("exec_command", {"cmd": "cat notes.txt", "login": False}),
        ]
    ),
    Turn(
        [
            text("Counting."),
            tool_call("exec_command", {"cmd": "seq 1 300", "login": False}),
        ]
    ),
)
FINAL = Turn([text("All ", "done ", "now.")])
RESUMED = Turn([text("Picked ", "up ", "and finished.")])


def _user_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content if b.get("type") == "text")


def respond(request: RecordedRequest) -> Turn:
    """The model: the continuation prompt gets an answer; otherwise the step is the number
    of assistant turns already in the conversation."""
    messages = request.body["messages"]
    if CONTINUE in _user_text(messages[-1]):
        return RESUMED
    step = sum(1 for m in messages if m["role"] == "assistant")
    return STEPS[step] if step < len(STEPS) else FINAL


@dataclass
class KillReport:
    seed: int
    kill_after: int  # events read before the kill
    delay_ms: float
    reference_events: int  # events of an uninterrupted run
    received: int  # events the client read, the kill's socket drained
    stored: int  # the run's events after the restart (recovery's included)
    thread_events: int
    status: str
    restart_s: float  # SIGKILL → the restarted daemon listening (recovery done)

    def line(self) -> str:
        return (
            f"seed {self.seed}: killed after event {self.kill_after}/{self.reference_events} "
            f"+{self.delay_ms:.1f} ms; read {self.received}, stored {self.stored}, "
            f"thread events {self.thread_events}, run {self.status}, "
            f"restart {self.restart_s:.2f} s"
        )


async def _post_json(http: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with http.post(url, json=body) as resp:
        data = await resp.json()
        assert resp.status in (200, 201), data
        return data["data"]


async def _read_all(resp: aiohttp.ClientResponse, into: list[Frame]) -> None:
    """Frames until the stream ends, or breaks off (the daemon was killed)."""
    try:
        async for frame in read_frames(resp):
            if frame.event is not None:
                into.append(frame)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        pass


async def _stored_events(http: aiohttp.ClientSession, url: str, run_id: str) -> list[Frame]:
    frames: list[Frame] = []
    async with http.get(f"{url}/v1/runs/{run_id}/events?after=0") as resp:
        assert resp.status == 200, await resp.text()
        with anyio.fail_after(30):
            await _read_all(resp, frames)
    return frames


async def _thread_events(
    http: aiohttp.ClientSession, url: str, thread_id: str
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        async with http.get(f"{url}/v1/threads/{thread_id}/events?after={after}&limit=1000") as r:
            body = await r.json()
            assert r.status == 200, body
        events += body["data"]
        if not body["data"] or not body.get("meta", {}).get("hasMore"):
            return events
        after = events[-1]["sequence"]


def check_thread(events: list[dict[str, Any]], rollout: Path, status: str) -> None:
    """Gapless, ends with the run's status, every call paired, the rollout equal."""
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_completed", events[-1]
    assert events[-1]["payload"]["status"] == status, events[-1]
    open_calls: list[str] = []
    for event in events:
        if event["type"] == "assistant_message":
            assert not open_calls, f"calls without results before {event}"
            open_calls = [
                part["id"]
                for part in event["payload"]["content"]
                if part.get("type") == "tool_call"
            ]
        elif event["type"] == "tool_result":
            assert event["payload"]["callId"] == open_calls.pop(0), event
        elif event["type"] in ("user_message", "run_completed"):
            assert not open_calls, f"calls without results before {event}"
    on_disk = [json.loads(line) for line in rollout.read_text().splitlines() if line.strip()]
    assert on_disk == events, "the rollout file and the store disagree"


def check_conversation(request: RecordedRequest) -> None:
    """What Anthropic's API insists on: every tool_use is answered by a tool_result in the
    very next (user) message, and the conversation starts with the original prompt."""
    messages = request.body["messages"]
    assert messages[0]["role"] == "user" and "go" in _user_text(messages[0]), messages[0]
    for number, message in enumerate(messages):
        if message["role"] != "assistant" or isinstance(message["content"], str):
            continue
        uses = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
        if not uses:
            continue
        answer = messages[number + 1]
        results = [b["tool_use_id"] for b in answer["content"] if b.get("type") == "tool_result"]
        assert results == uses, (uses, answer)


async def kill_at_random_point(seed: int, tmp_path: Path) -> KillReport:
    """One seeded kill and restart; raises AssertionError naming what did not survive."""
    rng = random.Random(seed)
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    agent = {
        "slug": "k",
        "model": MODEL,
        "tools": ["exec_command", "write_file", "apply_patch"],
    }
    async with (
        FakeModelServer(responder=respond) as model,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http,
    ):
        env = {**model.env(), "AGENTD_WORKSPACE": str(workspace)}
        received: list[Frame] = []
        async with agentd(tmp_path, workspace, env) as proc:
            await _post_json(http, proc.url + "/v1/agents", agent)
            # An uninterrupted run first, on its own thread: how many events a run has.
            reference: list[Frame] = []
            async with http.post(proc.url + "/v1/run", json={"agent": "k", "prompt": "go"}) as r:
                assert r.status == 200, await r.text()
                with anyio.fail_after(60):
                    await _read_all(r, reference)
            assert reference[-1].event == "complete", [f.event for f in reference]
            assert reference[-1].data["status"] == "completed", reference[-1].data
            (workspace / "notes.txt").unlink()
            kill_after = rng.randint(1, len(reference))
            delay = rng.uniform(0, 0.03)
            async with http.post(proc.url + "/v1/run", json={"agent": "k", "prompt": "go"}) as r:
                assert r.status == 200, await r.text()
                with anyio.fail_after(60):
                    async for frame in read_frames(r):
                        if frame.event is not None:
                            received.append(frame)
                        if len(received) == kill_after:
                            break
                await anyio.sleep(delay)  # the kill point itself, not a wait for something
                proc.process.kill()
                killed_at = time.perf_counter()
                with anyio.fail_after(30):
                    await proc.process.wait()
                    await _read_all(r, received)  # what the socket still held
        run_id = received[0].data["runId"]
        thread_id = received[0].data["threadId"]
        async with agentd(tmp_path, workspace, env) as proc:
            restart_s = time.perf_counter() - killed_at
            async with http.get(f"{proc.url}/v1/runs/{run_id}") as r:
                run = (await r.json())["data"]
            status = run["status"]
            stored = await _stored_events(http, proc.url, run_id)
            assert [f.id for f in stored] == list(range(1, len(stored) + 1)), "gaps in ids"
            for frame in received:
                assert frame.id is not None and frame.id <= len(stored), f"lost: {frame}"
                kept = stored[frame.id - 1]
                assert (kept.event, kept.data) == (frame.event, frame.data), (frame, kept)
            # Completed if it got that far (the client may not have read `complete` yet).
            if any(f.event == "complete" for f in received):
                assert status == "completed", run
            if status != "completed":
                assert status == "interrupted", run
                assert stored[-2].event == "error", stored[-2]
                assert stored[-2].data["code"] == "interrupted", stored[-2]
            assert stored[-1].event == "complete", stored[-1]
            assert stored[-1].data["status"] == status, (stored[-1], run)
            # What the run's model requests cost survives too: its totals (record, complete
            # event) are the sum of its stored `usage` events, one per model turn.
            spent = [f.data for f in stored if f.event == "usage"]
            totals = {k: sum(u[k] for u in spent) for k in ("inputTokens", "outputTokens")}
            for reported in (run, stored[-1].data):
                assert {k: reported["usage"][k] for k in totals} == totals, (reported, spent)
                assert reported["iterations"] == sum(not u.get("compaction") for u in spent)
            rollout = workspace / ".agentd" / "threads" / f"{thread_id}.jsonl"
            events = await _thread_events(http, proc.url, thread_id)
            check_thread(events, rollout, status)
            notes = workspace / "notes.txt"
            assert (notes.read_text() if notes.exists() else None) in NOTES_STATES

            await _post_json(http, proc.url + "/v1/agents", agent)  # already there: 200
            asked = len(model.requests)
            body = {"agent": "k", "prompt": CONTINUE, "threadId": thread_id, "stream": False}
            with anyio.fail_after(60):
                continued = await _post_json(http, proc.url + "/v1/run", body)
            assert continued["status"] == "completed", continued
            assert len(model.requests) > asked
            check_conversation(model.requests[-1])
            after = await _thread_events(http, proc.url, thread_id)
            assert after[: len(events)] == events
            check_thread(after, rollout, "completed")
    return KillReport(
        seed=seed,
        kill_after=kill_after,
        delay_ms=delay * 1000,
        reference_events=len(reference),
        received=len(received),
        stored=len(stored),
        thread_events=len(events),
        status=status,
        restart_s=restart_s,
    )


def seeds_from_env(default: list[int]) -> list[int]:
    """`AGENTD_KILL_SEEDS=7,8` reruns exactly those kill points."""
    raw = os.environ.get("AGENTD_KILL_SEEDS", "")
    return [int(s) for s in raw.split(",") if s.strip()] or default
