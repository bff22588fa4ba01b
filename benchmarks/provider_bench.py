"""Making a model provider: its SDK client's TLS context, beside the SDK's own default.

    python -m benchmarks.provider_bench [--makes N]   (from the repository root)

A run whose provider is new (a model and environment the provider pool has not seen) makes
one in a worker thread, and waits for it before its first model request, while the event
loop serves every other run's stream. Each SDK client used to build its own TLS context,
loading the trusted certificates; agentd's providers now share one (runtime/providers/tls.py).
For Anthropic and OpenAI, rows made in turn, `--makes` times each after an untimed round, in
a worker thread beside a loop that ticks every millisecond:

- `SDK client, its own TLS context`: the SDK's client as the SDK builds it by default
  (`AsyncAnthropic(...)` / `AsyncOpenAI(...)`, no HTTP client given), as agentd made them
  before;
- `agentd provider (create_provider)`: the provider a run gets, SDK client included;
- `the TLS context alone`: `httpx2.create_ssl_context()`, what the first row builds each time
  and the second only once per process (the warm-up builds it).

Columns: median and p99 wall time of the make, its CPU time (the worker thread's), and the
event loop's longest stall during it (how late its 1 ms tick came, at the worst). Then the
memory 16 clients of each kind take (the provider pool keeps up to 16 idle providers).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

from benchmarks.growth_bench import rss_mb
from benchmarks.patch_bench import percentile
from runtime.providers.registry import create_provider, preload_adapters
from runtime.providers.tls import shared_tls_context

ENV = {"ANTHROPIC_API_KEY": "bench", "OPENAI_API_KEY": "bench"}
IDLE_PROVIDERS = 16


def sdk_default_client(api: str) -> Callable[[], object]:
    def make() -> object:
        if api == "anthropic":
            import anthropic

            return anthropic.AsyncAnthropic(api_key="bench", max_retries=0)
        import openai

        return openai.AsyncOpenAI(api_key="bench", max_retries=0)

    return make


def agentd_provider(api: str) -> Callable[[], object]:
    model = "claude-sonnet-4-6" if api == "anthropic" else "gpt-5"
    return lambda: create_provider(model, env=ENV)[0]


def tls_context_alone() -> object:
    import httpx2

    return httpx2.create_ssl_context()


class Sample:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.stall: list[float] = []


async def timed_make(make: Callable[[], object], sample: Sample | None) -> None:
    """`make()` in a worker thread while a task ticks every millisecond on the loop."""
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - due)

    def in_worker() -> float:
        started = time.thread_time()
        make()
        return time.thread_time() - started

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.005)  # the ticker running first
    started = time.perf_counter()
    cpu = await anyio.to_thread.run_sync(in_worker)
    wall = time.perf_counter() - started
    done = True
    await ticker
    if sample is not None:
        sample.wall.append(wall * 1000)
        sample.cpu.append(cpu * 1000)
        sample.stall.append(worst * 1000)


async def main_async(makes: int) -> None:
    failed = await anyio.to_thread.run_sync(preload_adapters)
    if failed:
        raise SystemExit(f"not installed: {', '.join(failed)}")
    await anyio.to_thread.run_sync(shared_tls_context)
    rows: list[tuple[str, str, Callable[[], object]]] = []
    for api in ("anthropic", "openai"):
        rows.append((api, "SDK client, its own TLS context", sdk_default_client(api)))
        rows.append((api, "agentd provider (create_provider)", agentd_provider(api)))
    rows.append(("", "the TLS context alone", tls_context_alone))
    samples = {(api, label): Sample() for api, label, _ in rows}
    for round_number in range(makes + 1):
        for api, label, make in rows:
            await timed_make(make, samples[(api, label)] if round_number else None)

    print(f"making a provider, {makes} times each in turn, in a worker thread beside the loop")
    print()
    header = (
        "| SDK       | what is made                      | median ms | p99 ms | CPU ms "
        "| loop's longest stall, median ms | p99 ms |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for api, label, _ in rows:
        sample = samples[(api, label)]
        print(
            f"| {api:<9} | {label:<33} | {statistics.median(sample.wall):9.2f} "
            f"| {percentile(sample.wall, 99):6.2f} | {statistics.median(sample.cpu):6.2f} "
            f"| {statistics.median(sample.stall):31.2f} | {percentile(sample.stall, 99):6.2f} |"
        )

    print()
    kept: list[Any] = []
    for api in ("anthropic", "openai"):
        for label, make in (
            ("SDK clients, each its own TLS context", sdk_default_client(api)),
            ("agentd providers, one TLS context", agentd_provider(api)),
        ):
            before = rss_mb()
            kept.extend(make() for _ in range(IDLE_PROVIDERS))
            print(f"{api}: {IDLE_PROVIDERS} {label}: +{rss_mb() - before:.1f} MiB resident")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--makes", type=int, default=30, help="timed makes of each row")
    args = parser.parse_args()
    asyncio.run(main_async(args.makes))


if __name__ == "__main__":
    main()
