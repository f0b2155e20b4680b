"""A small TCP proxy on loopback, run in the test's own event loop, that can cut every connection it carries.

:meth:`TcpProxy.cut` aborts all current connections (both sides see a reset) and refuses new ones for a
while (the listening socket is closed), then accepts again on the same port: what a broker client sees when
the network between it and the broker fails and comes back. Broker tests (NATS, MQTT, Kafka) use it to show
that a consumer reconnects, re-subscribes and that every message still arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on *host*:*port* (tests skip when their broker does not)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


class TcpProxy:
    """``async with TcpProxy(4222) as proxy:`` forwards ``127.0.0.1:proxy.port`` to the target port."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_listening()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def cut(self, refuse_for: float = 1.0) -> None:
        """Reset every connection, refuse new ones for *refuse_for* seconds, then accept again."""
        self.cuts += 1
        await self._stop_listening()
        self._abort_all()
        await asyncio.sleep(refuse_for)
        await self._listen()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, up_w))
        tasks = [asyncio.create_task(self._pipe(client_r, up_w)), asyncio.create_task(self._pipe(up_r, client_w))]
        self._tasks.update(tasks)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for writer in (client_w, up_w):
            with contextlib.suppress(Exception):
                writer.transport.abort()
            self._writers.discard(writer)
        for task in tasks:
            task.cancel()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
