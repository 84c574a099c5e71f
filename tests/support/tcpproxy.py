"""A loopback TCP proxy that a test can cut, to drop a client's connection the way a network does.

    with CuttableProxy(server.port) as proxy:     # listens on 127.0.0.1:proxy.port, forwards to server.port
        ...                                        # the client connects to proxy.port
        proxy.cut()                                # open connections are reset; new ones refused
        ...
        proxy.restore()                            # connections go through again
        proxy.lose_next_reply(b"EVALSHA")          # the next request holding these bytes reaches the server;
                                                   # its reply does not (the client's connection is reset)
        proxy.hold_next(b"SUBSCRIBE", 1.0)         # the next request holding these bytes reaches the server
                                                   # 1 s late (a Redis client that comes back slowly)

It runs its own asyncio loop in a thread, so synchronous tests (Playwright's sync API) can use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

from tests.support.servers import free_port

__all__ = ["CuttableProxy"]


class CuttableProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.accepted = 0  # connections forwarded so far
        self._cut = False
        self._lose_marker: bytes | None = None
        self.lost = 0  # replies lost on purpose so far (lose_next_reply)
        self._hold: tuple[bytes, float] | None = None
        self.held = 0  # requests held back on purpose so far (hold_next)
        self._transports: set[asyncio.BaseTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> CuttableProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        ).result(5)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self._abort_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def cut(self) -> None:
        """Reset every open connection (the peers see the TCP connection end) and refuse new ones."""

        def do() -> None:
            self._cut = True
            self._abort_all()

        self._call(do)

    def restore(self) -> None:
        """Forward new connections again."""

        def do() -> None:
            self._cut = False

        self._call(do)

    def lose_next_reply(self, marker: bytes) -> None:
        """Forward the next request that contains ``marker``, then reset its connection when the server's reply
        arrives instead of passing the reply on: the server acted, the client never hears it (a timeout or a
        connection lost after the command ran)."""

        def do() -> None:
            self._lose_marker = marker

        self._call(do)

    def hold_next(self, marker: bytes, seconds: float) -> None:
        """Forward the next request that contains ``marker`` ``seconds`` late (its connection's later bytes wait
        behind it)."""

        def do() -> None:
            self._hold = (marker, seconds)

        self._call(do)

    def _call(self, fn: object) -> None:
        async def run() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def _abort_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if self._cut:  # cut while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)
        armed: list[bool] = []  # this connection sent the request whose reply is to be lost
        try:
            await asyncio.gather(self._up(reader, up_writer, armed), self._down(up_reader, writer, armed))
        finally:
            for transport in pair:
                self._transports.discard(transport)
                transport.abort()

    async def _up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, armed: list[bool]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self._lose_marker is not None and self._lose_marker in data:
                    self._lose_marker = None
                    armed.append(True)
                if self._hold is not None and self._hold[0] in data:
                    seconds, self._hold = self._hold[1], None
                    self.held += 1
                    await asyncio.sleep(seconds)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, armed: list[bool]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if armed:
                    self.lost += 1
                    break
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
