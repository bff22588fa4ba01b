"""A TCP proxy in front of a daemon that cuts one connection mid-stream, once: what a
network blip or a proxy timing out does to a run's event stream."""

from __future__ import annotations

import asyncio


class CuttingProxy:
    """Forwards TCP to 127.0.0.1:`target_port`. The first connection whose request contains
    every one of `request_marks` is cut once the daemon has sent `cut_after` on it (the
    run itself goes on); every other connection is forwarded untouched. `async with`
    yields the proxy's URL."""

    def __init__(
        self,
        target_port: int,
        *,
        request_marks: tuple[bytes, ...] = (b"GET /v1/runs/", b"/events"),
        cut_after: bytes = b"event: tool_call",
    ) -> None:
        self.target_port = target_port
        self.request_marks = request_marks
        self.cut_after = cut_after
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        daemon_r, daemon_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        armed = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.cuts == 0 and all(mark in data for mark in self.request_marks):
                    armed.set()
                daemon_w.write(data)
                await daemon_w.drain()

        async def downstream() -> None:
            while data := await daemon_r.read(65536):
                client_w.write(data)
                await client_w.drain()
                if armed.is_set() and self.cuts == 0 and self.cut_after in data:
                    self.cuts += 1
                    return

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in (client_w, daemon_w):
            writer.close()
