"""Success responses: `{"data": …}` and, for lists, `{"data": […], "meta": {…}}`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import anyio
from aiohttp import web
from pydantic import BaseModel

from tools.utf8 import printable_json


def to_wire(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


def _dumps(body: Any) -> str:
    # printable: a file name that is not UTF-8 (in a listing, say) cannot be sent as UTF-8
    return printable_json(json.dumps(body, ensure_ascii=False, default=str))


def json_data(
    value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=_dumps({"data": to_wire(value)}),
        content_type="application/json",
        headers=headers,
    )


async def json_data_off_loop(
    build: Callable[[], Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`json_data(build())` for bodies that grow with the work (a thread's or a run's whole
    conversation): `build` and the encoding run in a worker thread, since pydantic's dump and
    `json.dumps` would hold the event loop, and every stream with it, for as long as the body
    is big. `build` must only read what no other task changes meanwhile."""
    text = await anyio.to_thread.run_sync(lambda: _dumps({"data": to_wire(build())}))
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)


def json_list(
    items: Iterable[Any], *, has_more: bool = False, next_cursor: str | None = None
) -> web.Response:
    body = {
        "data": [to_wire(item) for item in items],
        "meta": {"hasMore": has_more, "nextCursor": next_cursor},
    }
    return web.Response(text=_dumps(body), content_type="application/json")
