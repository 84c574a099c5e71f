"""A minimal raw WebSocket client for live-server tests: it controls its socket (receive buffer, pausing reads)
and sees frames exactly as the server wrote them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from typing import Any

from tests.support.servers import LiveServer


class RawWebSocket:
    """A minimal WebSocket client (handshake, masked text frames, unmasked server frames): cheap enough to open
    thousands of connections on a 2-core machine without the client eating the server's CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int | None = None) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the kernel does not grow it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /pulse/ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @classmethod
    async def subscriber(
        cls, server: LiveServer, client_id: str, channel: str, *, rcvbuf: int | None = None
    ) -> RawWebSocket:
        """Opened, authenticated as ``client_id`` (a token minted by ``server``) and subscribed to ``channel``."""
        ws = await cls.open(server.port, rcvbuf=rcvbuf)
        token = await asyncio.to_thread(server.token, client_id)
        ws.send_json({"action": "auth", "token": token["token"]})
        assert (await asyncio.wait_for(ws.recv_json(), 5))["action"] == "connected"
        ws.send_json({"action": "subscribe", "channel": channel, "ref": 0})
        reply = await asyncio.wait_for(ws.recv_json(), 5)
        assert (reply["action"], reply["ref"]) == ("ok", 0), reply
        return ws

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        length = bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + size.to_bytes(2, "big")
        header = bytes([0x80 | opcode]) + length
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send(0x1, json.dumps(frame).encode())

    async def recv(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(await self.reader.readexactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await self.reader.readexactly(8), "big")
        return first & 0x0F, await self.reader.readexactly(size)

    async def recv_json(self) -> dict[str, Any]:
        while True:
            opcode, payload = await self.recv()
            assert opcode == 0x1, (opcode, payload)
            frame: dict[str, Any] = json.loads(payload)
            if frame["action"] != "ping":
                return frame

    async def close(self) -> None:
        """A clean close: send a close frame, wait for the server's."""
        try:
            self.send(0x8, (1000).to_bytes(2, "big"))
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while (await asyncio.wait_for(self.recv(), 10))[0] != 0x8:
                    pass
        finally:
            self.writer.close()  # also when the server never answers: no socket left for the GC to warn about

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.writer.transport.abort()
