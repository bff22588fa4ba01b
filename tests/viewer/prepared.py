"""A run the page follows from prepared events: the browser's requests for one made-up run
(its detail, its event stream, its files, its controls) are answered by Playwright, while
the real daemon serves the page and everything else. For what a daemon does not readily
produce: an event type it does not know yet (a newer daemon's), a terminal's output cut
at a chosen byte, a control that fails."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Page, Route

RUN_ID = "run_prepared"
THREAD_ID = "thr_prepared"


def numbered(events: Iterable[Mapping[str, Any]], run_id: str = RUN_ID) -> list[dict[str, Any]]:
    """The events as the daemon sends them: with ids from 1 and the envelope's other keys."""
    return [
        {"id": n, "runId": run_id, "threadId": THREAD_ID, "ts": f"2025-01-01T00:00:{n:02d}Z"}
        | dict(event)
        for n, event in enumerate(events, start=1)
    ]


def sse(events: Iterable[Mapping[str, Any]], *, unnamed: frozenset[str] = frozenset()) -> str:
    """SSE frames (`id:`, `event:` unless the type is in `unnamed`, `data:`), after a long
    `retry:` so a stream that ends before `complete` is not reopened within a test."""
    frames = ["retry: 600000\n\n"]
    for event in events:
        name = "" if event["type"] in unnamed else f"event: {event['type']}\n"
        frames.append(f"id: {event['id']}\n{name}data: {json.dumps(event)}\n\n")
    return "".join(frames)


class PreparedRun:
    """Answers the page's requests for `run_id` from `events`; `controls` maps a control
    (`input`, `pause`, …) to the (status, JSON body) it answers, 200 `{data: {status}}`
    otherwise. `requests` lists the paths asked for, with their query."""

    def __init__(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        status: str = "completed",
        agent: str = "helper",
        unnamed: Iterable[str] = (),
        files: list[dict[str, Any]] | None = None,
        run_id: str = RUN_ID,
    ) -> None:
        self.run_id = run_id
        self.events = numbered(events, run_id)
        self.status = status
        self.agent = agent
        self.unnamed = frozenset(unnamed)
        self.files = files or []
        self.controls: dict[str, tuple[int, Any]] = {}
        self.requests: list[str] = []

    async def install(self, page: Page) -> None:
        await page.route(re.compile(rf"/v1/runs/{self.run_id}(?:[/?]|$)"), self._handle)

    async def _handle(self, route: Route) -> None:
        request = route.request
        url = urlsplit(request.url)
        self.requests.append(url.path + ("?" + url.query if url.query else ""))
        tail = url.path.removeprefix(f"/v1/runs/{self.run_id}").strip("/")
        if tail == "":
            detail = {"runId": self.run_id, "agent": self.agent, "status": self.status}
            await route.fulfill(json={"data": detail})
        elif tail == "events":
            query = parse_qs(url.query)
            after = int(request.headers.get("last-event-id") or query.get("after", ["0"])[0])
            later = [e for e in self.events if e["id"] > after]
            await route.fulfill(
                status=200,
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
                body=sse(later, unnamed=self.unnamed),
            )
        elif tail == "files":
            await route.fulfill(json={"data": {"path": "/", "entries": self.files}})
        elif request.method == "POST" and tail in self.controls:
            status, body = self.controls[tail]
            await route.fulfill(status=status, json=body)
        elif request.method == "POST":
            await route.fulfill(json={"data": {"runId": self.run_id, "status": self.status}})
        else:
            await route.fulfill(
                status=404, json={"error": {"code": "not_found", "message": "not prepared"}}
            )

    async def open(self, page: Page, base_url: str) -> None:
        """Install the routes and open the run on the page."""
        await self.install(page)
        await page.goto(f"{base_url}/#run={self.run_id}")


def tool_output(call_id: str, *chunks: str) -> list[dict[str, Any]]:
    return [{"type": "tool_output", "callId": call_id, "chunk": chunk} for chunk in chunks]


def complete(status: str = "completed", **fields: Any) -> dict[str, Any]:
    usage = {"inputTokens": 0, "outputTokens": 0}
    base = {"type": "complete", "status": status, "output": "", "files": [], "devUrl": None}
    return base | {"usage": usage, "iterations": 1} | fields
