"""A TCP proxy in front of a daemon that goes silent on one connection mid-stream: it stops
forwarding the daemon's bytes but keeps both sockets open, as a half-open connection (a
dead NAT entry, a peer that vanished) does. Nothing errors; only a read timeout notices."""

from __future__ import annotations

import asyncio


class FreezingProxy:
    """Forwards TCP to 127.0.0.1:`target_port`. The first connection whose request contains
    every one of `request_marks` is frozen once the daemon has sent `freeze_after` on it:
    from then on the daemon's bytes are read and dropped, and the client's socket stays
    open. Every other connection is forwarded untouched. `async with` yields the URL."""

    def __init__(
        self,
        target_port: int,
        *,
        request_marks: tuple[bytes, ...] = (b"GET /v1/runs/", b"/events"),
        freeze_after: bytes = b"event: tool_call",
    ) -> None:
        self.target_port = target_port
        self.request_marks = request_marks
        self.freeze_after = freeze_after
        self.freezes = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        await self.server.wait_closed()

    async def serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self.connections.add(current)
        daemon_r, daemon_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        armed = asyncio.Event()
        frozen = False

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.freezes == 0 and all(mark in data for mark in self.request_marks):
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
                if armed.is_set() and self.freezes == 0 and self.freeze_after in data:
                    self.freezes += 1
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
