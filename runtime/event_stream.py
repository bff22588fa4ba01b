"""Reading a Server-Sent Events body (the daemon's event streams), per the WHATWG rules: the
client's `runs.stream` and the link's relay of a streamed request read them alike.

`sse_lines` splits the body into lines itself: aiohttp's `readline` (what iterating
`response.content` does) refuses a line longer than its buffer, and one event's `data:` line
(a large tool output, a file written) can be far longer. `parse_sse` turns lines into events;
an event is dispatched at the blank line that ends it, so one cut off by the end of the body
(a connection closed mid-event) is never yielded, half-read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class SSEEvent:
    """One Server-Sent Events frame."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The response body's lines (each with its "\\n", the last one perhaps without)."""
    pending = bytearray()
    async for chunk in response.content.iter_any():
        pending += chunk
        if b"\n" not in chunk:
            continue  # a line still coming: no split, so a long line costs linear time
        *complete, rest = pending.split(b"\n")
        pending = rest
        for line in complete:
            yield bytes(line) + b"\n"
    if pending:
        yield bytes(pending)


async def parse_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Yield events from an event-stream body given as raw lines."""
    event, last_id = "", None
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
