"""Every list takes `limit` and `cursor`, and every list has a `…_all` iterator that follows
`next_cursor` to the end (agents, an agent's versions, threads; runs in
test_async_client.py)."""

from __future__ import annotations

import anyio

from runtime.client import AsyncClient, Client
from tests.api.conftest import Daemon

AGENT_COUNT = 55  # more than the daemon's default page of 50


async def test_every_agent_is_reachable_page_by_page(daemon: Daemon) -> None:
    slugs = {f"agent-{n:02d}" for n in range(AGENT_COUNT)}
    for slug in slugs:
        await daemon.upsert(slug)
    async with AsyncClient(daemon.url) as agentd:
        first = await agentd.agents.list()
        assert len(first) == 50 and first.has_more and first.next_cursor
        rest = await agentd.agents.list(cursor=first.next_cursor)
        assert not rest.has_more and len(rest) == AGENT_COUNT - 50
        assert {a["slug"] for a in first} | {a["slug"] for a in rest} == slugs
        small = await agentd.agents.list(limit=10)
        assert len(small) == 10 and small.has_more
        listed = [agent["slug"] async for agent in agentd.agents.list_all(page_size=20)]
    assert len(listed) == AGENT_COUNT and set(listed) == slugs

    def list_blocking() -> list[str]:
        with Client(daemon.url) as agentd:
            return [agent["slug"] for agent in agentd.agents.list_all(page_size=7)]

    assert sorted(await anyio.to_thread.run_sync(list_blocking)) == sorted(slugs)


async def test_versions_and_threads_take_limit_and_cursor(daemon: Daemon) -> None:
    for prompt in ("one", "two", "three"):
        await daemon.upsert(systemPrompt=prompt)
    for _ in range(3):
        await daemon.run()
    async with AsyncClient(daemon.url) as agentd:
        page = await agentd.agents.versions("helper", limit=2)
        assert len(page) == 2 and page.has_more and page.next_cursor
        following = await agentd.agents.versions("helper", limit=2, cursor=page.next_cursor)
        assert len(following) == 1 and not following.has_more
        versions = [v["version"] async for v in agentd.agents.versions_all("helper", page_size=1)]
        assert sorted(versions) == [1, 2, 3]

        threads = await agentd.threads.list(agent="helper", limit=2)
        assert len(threads) == 2 and threads.has_more and threads.next_cursor
        every = [t["id"] async for t in agentd.threads.list_all(agent="helper", page_size=2)]
        assert len(every) == len(set(every)) == 3

    def blocking() -> tuple[int, int, int]:
        with Client(daemon.url) as agentd:
            return (
                len(agentd.agents.versions("helper", limit=1)),
                len(list(agentd.agents.versions_all("helper", page_size=2))),
                len(list(agentd.threads.list_all(agent="helper", page_size=1))),
            )

    assert await anyio.to_thread.run_sync(blocking) == (1, 3, 3)
