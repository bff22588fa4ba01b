"""A daemon's first run: how long it takes, and how long it holds the event loop up.

    python -m benchmarks.first_run_bench [--starts N] [--against REV]   (from the repository root)

The hardening rule is that nothing heavy runs on the event loop while runs go on: every
stream, request and health check of the daemon waits as long as the loop is held. A daemon's
first run is where one-time work gathers (the model SDK's lazy imports and validators, the
workspace watch's scanners, the provider's TLS context), so this measures that run. For each
SDK's default model (`startup_bench.FIRST_RUN_MODELS`), a fresh `agentd serve` (the model its
default too) gets an agent with one tool and a run whose model calls the tool once and then
answers (the fake model server of tests/fakes/model_server.py), posted the moment /readyz
answers ("fresh": its warm-up under way) or once the daemon is at rest (its warm-up over: no
CPU time for half a second). While the run goes on, a second client asks /readyz every 5 ms;
its slowest answer is the event loop's longest stall during the run.

Rows, started in turn round after round after an untimed round (with `--against REV`, that
revision's tree too, in the same rounds): the run's time from its agent's creation to its
end, and the longest /readyz answer during it (median, and the worst of the starts).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.api_bench import ROOT, Server, start_agentd
from benchmarks.startup_bench import FIRST_RUN_MODELS, at_rest, earlier_tree, print_table
from tests.fakes.model_server import FakeModelServer, Turn, text, tool_call

PROBE_EVERY_S = 0.005


async def slowest_readyz(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> float:
    """The slowest /readyz answer, in ms, until `stop` is set."""
    slowest = 0.0
    while not stop.is_set():
        began = time.perf_counter()
        async with session.get(url + "/readyz") as resp:
            await resp.read()
        slowest = max(slowest, time.perf_counter() - began)
        await asyncio.sleep(PROBE_EVERY_S)
    return slowest * 1000


async def first_run(
    session: aiohttp.ClientSession,
    probe: aiohttp.ClientSession,
    server: Server,
    model_server: FakeModelServer,
    model: str,
) -> tuple[float, float]:
    """(ms from the agent's creation to the run's end, the slowest /readyz answer meanwhile)."""
    model_server.script(
        Turn([tool_call("list_dir", {"path": "."}, id="call_1")]), Turn([text("done")])
    )
    stop = asyncio.Event()
    probing = asyncio.create_task(slowest_readyz(probe, server.url, stop))
    began = time.perf_counter()
    agent = {"slug": "first", "model": model, "tools": ["list_dir"]}
    async with session.post(server.url + "/v1/agents", json=agent, headers=server.headers) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /v1/agents answered {resp.status}: {await resp.text()}")
    run = {"agent": "first", "prompt": "go", "stream": False}
    async with session.post(server.url + "/v1/run", json=run, headers=server.headers) as resp:
        body = await resp.json()
        if resp.status != 200 or body["data"]["status"] != "completed":
            raise RuntimeError(f"POST /v1/run answered {resp.status}: {body}")
    took = (time.perf_counter() - began) * 1000
    stop.set()
    return took, await probing


async def main_async(starts: int, against: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="first-run-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with earlier_tree(against, tmp) as earlier:
            trees = [("agentd", ROOT)] + (
                [(f"agentd at {earlier[0]}", earlier[1])] if earlier else []
            )
            subjects = [
                (f"{name}{', at rest' if rested else ''}: first run, {sdk}", root, model, rested)
                for sdk, model in FIRST_RUN_MODELS.items()
                for rested in (False, True)
                for name, root in trees
            ]
            took: dict[str, list[float]] = {subject[0]: [] for subject in subjects}
            stalls: dict[str, list[float]] = {subject[0]: [] for subject in subjects}
            async with (
                aiohttp.ClientSession() as session,
                aiohttp.ClientSession() as probe,
                FakeModelServer(default_turn=Turn([text("done")])) as model_server,
            ):
                for attempt in range(starts + 1):  # the first round fills the bytecode caches
                    for row, root, model, rested in subjects:
                        env = {**model_server.env(), "AGENTD_DEFAULT_MODEL": model}
                        server = await start_agentd(session, tmp, env=env, root=root)
                        try:
                            if rested:
                                await at_rest(server)
                            run_ms, stall_ms = await first_run(
                                session, probe, server, model_server, model
                            )
                        finally:
                            server.stop()
                        if attempt:
                            took[row].append(run_ms)
                            stalls[row].append(stall_ms)
    print(
        f"a first run (one tool call), {starts} starts each in turn; the event loop's longest "
        f"stall is the slowest /readyz answer during the run, asked every "
        f"{PROBE_EVERY_S * 1000:.0f} ms\n"
    )
    header = ("run", "agent created → run ended", "longest stall: median", "worst")
    rows = [
        (
            row,
            f"{statistics.median(took[row]):.0f} ms",
            f"{statistics.median(stalls[row]):.0f} ms",
            f"{max(stalls[row]):.0f} ms",
        )
        for row, *_ in subjects
    ]
    print_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=8, help="timed starts of each row")
    parser.add_argument("--against", metavar="REV", help="an earlier revision, started too")
    args = parser.parse_args()
    asyncio.run(main_async(args.starts, args.against))


if __name__ == "__main__":
    main()
