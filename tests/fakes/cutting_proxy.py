"""TCP proxies in front of a daemon that break one connection mid-stream, once: what a network
blip or a proxy timing out does to a run's event stream (`CuttingProxy`), and a half-open
connection, a dead NAT entry or a peer that vanished (`FreezingProxy`): the daemon's bytes
stop arriving but nothing is closed, so nothing errors and only a read timeout notices."""

from __future__ import annotations

import asyncio


class CuttingProxy:
    """Forwards TCP to 127.0.0.1:`target_port`. The first connection whose request contains
    every one of `request_marks` is cut once the daemon has sent `cut_after` on it (the
    run itself goes on); every other connection is forwarded untouched. `async with`
    yields the proxy's URL."""

    # What happens to that connection: cut, or (FreezingProxy) its daemon's bytes read and
    # dropped from then on, with both sockets left open.
    freeze = False

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
        self.broken = 0  # connections cut (or frozen): one at most
        self.server: asyncio.Server | None = None
        # open connections, cancelled on exit (a frozen one would never end by itself)
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def cuts(self) -> int:
        return self.broken

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self.connections.add(current)
        daemon_r, daemon_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        armed = asyncio.Event()
        frozen = False

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.broken == 0 and all(mark in data for mark in self.request_marks):
                    armed.set()
                daemon_w.write(data)
                await daemon_w.drain()

        async def downstream() -> None:
            nonlocal frozen
            while data := await daemon_r.read(65536):
                if frozen:
                    continue  # swallowed: the client hears nothing, not even a close
                client_w.write(data)
                await client_w.drain()
                if armed.is_set() and self.broken == 0 and self.cut_after in data:
                    self.broken += 1
                    if not self.freeze:
                        return
                    frozen = True

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, daemon_w):
                writer.close()
            self.connections.discard(current)


class FreezingProxy(CuttingProxy):
    """A CuttingProxy whose marked connection goes silent instead of being cut, after
    `cut_after`: the daemon's bytes are read and dropped, and the client's socket stays
    open."""

    freeze = True

    @property
    def freezes(self) -> int:
        return self.broken
