"""A small asyncio Pulse client on the ``websockets`` library, for Python programs, tests and benchmarks.

    from django_pulse.client import Realtime

    rt = await Realtime.connect(token["endpoint"], token["token"])
    await rt.subscribe("posts")
    async for frame in rt:                   # message, presence, discontinuity and async error frames
        print(frame["name"], frame["data"])
    await rt.publish("posts", "hello", {"text": "hi"})
    await rt.close()

It speaks docs/protocol.md: authenticates with the first frame, answers pings, matches replies to requests
by ``ref`` and raises ``PulseClientError`` for error replies. It does not reconnect by itself: when the
connection ends, iteration stops and ``close_code`` tells why (``CloseCode(code).retry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

__all__ = ["PulseClientError", "Realtime"]

_END = object()


class PulseClientError(Exception):
    """An ``error`` reply (or a failed ``auth``): ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message


class Realtime:
    """One authenticated Pulse connection. Create it with ``await Realtime.connect(endpoint, token)``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.connected: dict[str, Any] = {}
        self.close_code: int | None = None
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_ref = 0
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, endpoint: str, token: str, *, origin: str | None = None,
                      open_timeout: float = 10) -> Realtime:
        """Open the WebSocket at ``endpoint``, authenticate with ``token`` and wait for ``connected``.

        Raises ``PulseClientError`` with the server's code when authentication fails.
        """
        ws = await ws_connect(endpoint, origin=origin, open_timeout=open_timeout,  # type: ignore[arg-type]
                              max_size=None, ping_interval=None)
        client = cls(ws)
        try:
            await ws.send(json.dumps({"action": "auth", "token": token}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), open_timeout))
        except BaseException:
            await ws.close()
            raise
        if frame.get("action") != "connected":
            await ws.close()
            raise PulseClientError(str(frame.get("code", "protocol_error")), str(frame.get("message", frame)))
        client.connected = frame
        client._reader = asyncio.get_running_loop().create_task(client._read())
        return client

    @property
    def connection_id(self) -> str:
        return str(self.connected["connectionId"])

    @property
    def client_id(self) -> str:
        return str(self.connected["clientId"])

    @property
    def limits(self) -> dict[str, int]:
        return dict(self.connected["limits"])

    async def _read(self) -> None:
        limits = self.connected.get("limits", {})
        # Drop a silent server after heartbeatInterval + heartbeatGrace (docs/protocol.md, Heartbeat).
        silence = (limits.get("heartbeatInterval", 15000) + limits.get("heartbeatGrace", 10000)) / 1000
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(self.ws.recv(), silence)
                except TimeoutError:
                    await self.ws.close(4011, "heartbeat timeout")
                    break
                frame = json.loads(raw)
                action = frame.get("action")
                if action == "ping":
                    await self.ws.send('{"action":"pong"}')
                    continue
                ref = frame.get("ref")
                if action in ("ok", "error") and ref is not None:
                    future = self._replies.pop(ref, None)
                    if future is not None and not future.done():
                        future.set_result(frame)
                    continue
                self._events.put_nowait(frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"the connection closed ({self.close_code})"))
            self._replies.clear()
            self._events.put_nowait(_END)

    async def request(self, action: str, **members: Any) -> dict[str, Any]:
        """Send a request and return its ``ok`` reply; raises ``PulseClientError`` for an ``error`` reply."""
        self._next_ref += 1
        ref = self._next_ref
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        await self.ws.send(json.dumps({"action": action, "ref": ref, **members}))
        reply = await future
        if reply["action"] == "error":
            raise PulseClientError(reply["code"], reply["message"])
        return reply

    async def subscribe(self, channel: str) -> dict[str, Any]:
        """Subscribe; returns the ``ok`` reply (``serial``: the channel's last serial at subscribe time)."""
        return await self.request("subscribe", channel=channel)

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        return await self.request("unsubscribe", channel=channel)

    async def publish(self, channel: str, name: str, data: Any = None, *, id: str | None = None) -> dict[str, Any]:
        """Publish as this client (needs the ``publish`` capability); returns ``{"id", "serial", ...}``."""
        members: dict[str, Any] = {"channel": channel, "name": name, "data": data}
        if id is not None:
            members["id"] = id
        return await self.request("publish", **members)

    async def refresh(self, token: str) -> dict[str, Any]:
        """Replace the token without reconnecting (same client and app)."""
        return await self.request("auth", token=token)

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event frame (message, presence, discontinuity, error without ref).

        Raises ``ConnectionError`` when the connection has ended, ``TimeoutError`` after ``timeout`` s.
        """
        item = await asyncio.wait_for(self._events.get(), timeout)
        if item is _END:
            self._events.put_nowait(_END)
            raise ConnectionError(f"the connection closed ({self.close_code})")
        result: dict[str, Any] = item
        return result

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.next_event()
            except ConnectionError:
                return

    async def wait_closed(self) -> int | None:
        """Wait until the connection ends; returns the close code."""
        if self._reader is not None:
            await asyncio.shield(self._reader)
        return self.close_code

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
