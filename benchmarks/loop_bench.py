"""The agent loop's own overhead per model turn, with a provider that answers instantly.

    python -m benchmarks.loop_bench [--turns N]      (from the repository root)

Scenarios (each prints µs per model turn and events per turn):

- `no tools, memory log`: one-turn runs (text answer) through `AgentLoop.run`, events kept in
  memory only: the loop's bookkeeping, event emission and provider iteration.
- `trivial tool, memory log`: one run of N turns, each calling an in-process tool that
  returns at once: adds tool dispatch, argument validation and result events.
- the same two with the event log on a real SQLite store (what a daemon does).
- `RunManager start→wait`: one-turn runs through the manager (store records, thread and
  message persistence, scheduling, complete event), what one `POST /v1/run` costs besides
  the model and the HTTP layer.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from runtime.agents import AgentSpec
from runtime.events import EventLog
from runtime.loop import AgentLoop
from runtime.messages import Message, TextPart, ToolCallPart
from runtime.providers.base import (
    AssistantTurn,
    ModelSettings,
    StreamItem,
    TextDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from runtime.runs import RunManager
from runtime.store import Store
from tools.base import Tool, ToolArgs, Toolbox, ToolContext, ToolResult

SETTINGS = ModelSettings(model="instant")


class InstantProvider:
    """Streams one text delta and a final turn; calls `tool` for `tool_turns` turns first."""

    name = "instant"

    def __init__(self, tool_turns: int = 0, tool: str = "noop") -> None:
        self.tool_turns = tool_turns
        self.tool = tool
        self.calls = 0

    def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]:
        self.calls += 1
        return self._play(self.calls)

    async def _play(self, n: int) -> AsyncIterator[StreamItem]:
        usage = Usage(input_tokens=100, output_tokens=10)
        if n <= self.tool_turns:
            call = ToolCallPart(id=f"call_{n}", name=self.tool, arguments={"value": n})
            yield TextDelta(text="calling")
            yield ToolCallStart(index=0, id=call.id, name=call.name)
            yield ToolCallEnd(index=0, call=call)
            content: list[Any] = [TextPart(text="calling"), call]
            yield AssistantTurn(content=content, stop_reason="tool_use", usage=usage)
        else:
            yield TextDelta(text="done")
            yield AssistantTurn(content=[TextPart(text="done")], usage=usage)

    async def aclose(self) -> None:
        return None


class NoopArgs(ToolArgs):
    value: int


class Noop(Tool):
    name = "noop"
    description = "Return at once."
    Args = NoopArgs
    read_only = True

    async def run(self, args: NoopArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(output=str(args.value))


async def bench_loop(
    workspace: Path, store: Store | None, runs: int, tool_turns: int
) -> tuple[float, int, int]:
    """Returns (seconds, model turns, events)."""
    turns = events = 0
    async with Toolbox(workspace, enabled=[], extra_tools=[Noop()]) as box:
        specs = box.specs()  # generated once, as the RunManager does
        started = time.perf_counter()
        for i in range(runs):
            log = EventLog(f"bench_{tool_turns}_{i}_{id(store)}", None, store)
            provider = InstantProvider(tool_turns)
            loop = AgentLoop(
                provider,
                box,
                log,
                system="s",
                settings=SETTINGS,
                max_iterations=tool_turns + 5,
                tool_specs=specs,
            )
            outcome = await loop.run([Message.user("go")])
            await log.close()
            assert outcome.status == "completed", outcome
            turns += outcome.iterations
            events += log.last_id
        elapsed = time.perf_counter() - started
    return elapsed, turns, events


async def bench_manager(workspace: Path, store: Store, runs: int) -> tuple[float, int, int]:
    await store.upsert_agent(AgentSpec(slug="bench", model="instant", tools=[]))

    def factory(model: Any, *, env: Any = None) -> tuple[InstantProvider, str]:
        return InstantProvider(), "instant"

    turns = events = 0
    async with RunManager(store, workspace, provider_factory=factory, env={}) as manager:
        started = time.perf_counter()
        for _ in range(runs):
            run = await manager.start("bench", prompt="go")
            record = await manager.wait(run.run_id)
            turns += record.iterations
            events += run.events.last_id
        elapsed = time.perf_counter() - started
    return elapsed, turns, events


async def main(turns: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        store = await Store.open(Path(tmp) / "state")
        rows: list[tuple[str, float, int, int]] = []
        try:
            await bench_loop(workspace, None, 20, 5)  # warm up imports and caches
            rows.append(
                ("1-turn runs, no tools, memory log", *await bench_loop(workspace, None, turns, 0))
            )
            rows.append(
                ("N-turn run, trivial tool, memory", *await bench_loop(workspace, None, 1, turns))
            )
            rows.append(
                ("1-turn runs, no tools, SQLite", *await bench_loop(workspace, store, turns, 0))
            )
            rows.append(
                ("N-turn run, trivial tool, SQLite", *await bench_loop(workspace, store, 1, turns))
            )
            manager_runs = max(turns // 5, 20)
            rows.append(
                (
                    "RunManager start→wait (1 turn)",
                    *await bench_manager(workspace, store, manager_runs),
                )
            )
        finally:
            await store.close()
    print(f"{'scenario':<34} {'turns':>6} {'total s':>9} {'µs/turn':>9} {'events/turn':>12}")
    for name, seconds, n_turns, n_events in rows:
        print(
            f"{name:<34} {n_turns:>6} {seconds:>9.3f} {seconds / n_turns * 1e6:>9.0f} "
            f"{n_events / n_turns:>12.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500)
    anyio.run(main, parser.parse_args().turns)
