"""What compaction costs, and what it saves over a long run.

    python -m benchmarks.compaction_bench [--turns N] [--window TOKENS]

1. The cost of one compaction besides the model call (the summary model answers at once):
   deciding, stubbing, building the transcript and the view, for conversations of 100 to
   2,000 messages; next to the floor of serialising the conversation once, which any request
   costs anyway. Median and p99 of repeated runs, and their ratio to the floor.
2. Tokens sent per turn over a long run (each turn reads a 5,000-character file), with and
   without compaction: the per-turn request size at turns 10/50/100/N, the total over the run,
   and how many turns fit the window without compaction at all. The provider reports usage
   from each request's real size (4 characters a token), as the fake model server does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from runtime.compaction import Compactor, ContextMeter, model_view, request_chars
from runtime.messages import Message, TextPart, ToolCallPart, ToolResultPart
from runtime.providers.base import AssistantTurn, ModelSettings, StreamItem, Usage

FILE = ("file line: " + "abcdefghij" * 7 + "\n") * 60  # ~5,000 characters


class InstantSummary:
    """Answers every request at once with a short summary."""

    async def stream(
        self,
        system: str | None,
        messages: list[Message],
        tools: list[dict[str, Any]],
        settings: ModelSettings,
    ) -> AsyncIterator[StreamItem]:
        yield AssistantTurn(
            content=[TextPart(text="Summary: read the files, all fine, continue.")],
            stop_reason="end_turn",
            usage=Usage(),
        )


def conversation(turns: int) -> list[Message]:
    messages = [Message.user("Read every file.")]
    for i in range(turns):
        messages.append(
            Message(
                role="assistant",
                content=[
                    TextPart(text=f"Reading file {i}."),
                    ToolCallPart(id=f"c{i}", name="read_file", arguments={"path": f"f{i}"}),
                ],
            )
        )
        messages.append(
            Message(role="tool", content=[ToolResultPart(call_id=f"c{i}", output=FILE)])
        )
    return messages


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def compaction_cost(repeats: int) -> None:
    print("1. one compaction, model call aside (window: a third of the conversation)")
    print(f"{'messages':>9} {'compact p50':>12} {'p99':>9} {'floor p50':>10} {'ratio':>6}")
    for turns in (50, 250, 1000):
        log = conversation(turns)
        chars = request_chars(None, [], log)
        window = max(8_000, chars // 4 // 3)
        compactor = Compactor(InstantSummary(), None, [], ModelSettings(model="m"), window)
        cost, floor = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            record = await compactor.compact(ContextMeter(), log)
            model_view([*log, record])
            cost.append(time.perf_counter() - started)
            started = time.perf_counter()
            request_chars(None, [], log)
            floor.append(time.perf_counter() - started)
        p50, f50 = statistics.median(cost), statistics.median(floor)
        print(
            f"{len(log):>9} {p50 * 1e3:>10.2f}ms {percentile(cost, 0.99) * 1e3:>7.2f}ms "
            f"{f50 * 1e3:>8.2f}ms {p50 / f50:>5.1f}x"
        )


async def tokens_per_turn(turns: int, window: int) -> None:
    print(f"\n2. tokens sent per turn over a {turns}-turn run (window {window:,} tokens)")
    compactor = Compactor(InstantSummary(), None, [], ModelSettings(model="m"), window)
    meter = ContextMeter()
    log = [Message.user("Read every file.")]
    sent_with: list[int] = []
    sent_without: list[int] = []
    compactions = 0
    full = [Message.user("Read every file.")]
    for i in range(turns):
        if compactor.needs_compaction(meter, log):
            log.append(await compactor.compact(meter, log))
            compactions += 1
        view_chars = request_chars(None, [], model_view(log))
        meter.observe(view_chars, view_chars // 4)
        sent_with.append(view_chars // 4)
        sent_without.append(request_chars(None, [], full) // 4)
        step = conversation(1)[1:]
        step[0].content[1] = ToolCallPart(id=f"c{i}", name="read_file")
        step[1].content[0] = ToolResultPart(call_id=f"c{i}", output=FILE)
        log.extend(step)
        full.extend(step)
    print(f"{'turn':>6} {'with compaction':>16} {'without':>10}")
    for turn in sorted({10, 50, 100, turns}):
        if turn <= turns:
            print(f"{turn:>6} {sent_with[turn - 1]:>16,} {sent_without[turn - 1]:>10,}")
    total_with, total_without = sum(sent_with), sum(sent_without)
    fits = sum(1 for tokens in sent_without if tokens <= window)
    print(
        f"{'total':>6} {total_with:>16,} {total_without:>10,}  ({total_without / total_with:.1f}x "
        f"fewer tokens sent; {compactions} compactions; max request {max(sent_with):,} tokens)"
    )
    print(f"without compaction the run fits the window for its first {fits} turns only")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--window", type=int, default=32_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    await compaction_cost(args.repeats)
    await tokens_per_turn(args.turns, args.window)


if __name__ == "__main__":
    anyio.run(main)
