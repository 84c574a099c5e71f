"""A small asyncio Pulse client on the ``websockets`` library, for Python programs, tests and benchmarks.

    from django_pulse.clients import Realtime

    rt = await Realtime.connect(token["endpoint"], token["token"])
    await rt.subscribe("posts")
    async for frame in rt:                   # message, whisper, presence, discontinuity and async error frames
        print(frame["name"], frame["data"])
    await rt.publish("posts", "hello", {"text": "hi"})
    await rt.publish("posts", "hello", {"text": "hi"}, to_others=True)   # not delivered back to rt
    await rt.whisper("posts", "typing", {"on": True})                    # not stored, no serial, not to rt
    await rt.close()

It speaks docs/protocol.md: authenticates with the first frame, answers pings, matches replies to requests
by ``ref`` and raises ``PulseReplyError`` (a ``PulseClientError``) for error replies. It does not reconnect by
itself: when the
connection ends, iteration stops and ``close_code`` tells why (``CloseCode(code).retry``).

Recovery (docs/history.md): the client remembers the last serial and the epoch of each subscribed channel. A
new connection made with ``recover=`` the old one (or its ``recovery()`` dict, e.g. kept on disk) continues
the old connection id and re-subscribes every channel with ``resume``: missed messages arrive first, in order,
once; ``resumed[channel]`` is False where that was not possible (reload that channel's state)::

    rt2 = await Realtime.connect(endpoint, token, recover=rt)
    if not all(rt2.resumed.values()): ...

On the server's ``discontinuity`` notice that messages may have been missed while the channel's history may
still hold them (``broker_unavailable`` after a Redis outage or failover), the client re-subscribes the channel
with ``resume`` by itself: the missed messages follow, in order, once, after a ``{"action": "resumed",
"channel", "serial", "reason"}`` event (``serial``: the last one seen before the gap). Only when that resume is
refused does the app get the ``discontinuity`` frame (reload that channel's state), as for ``history_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .exceptions import PulseClientError, PulseReplyError

__all__ = ["PulseClientError", "PulseReplyError", "Realtime"]

_END = object()
# Error codes a resume is retried after (the server is not back on the broker yet), as pulse.js retries them.
_TRANSIENT = frozenset({"rate_limited", "unavailable", "internal_error"})
# How long a re-subscription after a discontinuity notice keeps retrying transient refusals.
_RESYNC_PATIENCE = 30.0


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
        # channel -> [last serial seen, epoch or None when unknown (the counter was reset)]
        self.positions: dict[str, list[Any]] = {}
        # ref -> channel of subscribe requests in flight (their reply sets the channel's position)
        self._subscribing: dict[int, str] = {}
        # channel -> whether its resume on this connection succeeded (``recover=``)
        self.resumed: dict[str, bool] = {}
        # channel -> the notice's reason while it re-subscribes with resume after a discontinuity notice
        self._resyncing: dict[str, str] = {}
        # channels whose resuming subscribe is in flight (its reply tells the app the outcome)
        self._resuming: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(
        cls,
        endpoint: str,
        token: str,
        *,
        origin: str | None = None,
        open_timeout: float = 10,
        recover: Realtime | Mapping[str, Any] | None = None,
    ) -> Realtime:
        """Open the WebSocket at ``endpoint``, authenticate with ``token`` and wait for ``connected``.

        With ``recover`` (an earlier ``Realtime`` of the same client, or its ``recovery()``), continue that
        connection and resume its channels (see the module docstring). Raises ``PulseClientError`` with the
        server's code when authentication fails.
        """
        state = recover.recovery() if isinstance(recover, Realtime) else recover
        auth: dict[str, Any] = {"action": "auth", "token": token}
        if state and state.get("connectionKey"):
            auth["recover"] = state["connectionKey"]
        ws = await ws_connect(
            endpoint,
            origin=origin,  # type: ignore[arg-type]
            open_timeout=open_timeout,
            max_size=None,
            ping_interval=None,
        )
        client = cls(ws)
        try:
            await ws.send(json.dumps(auth))
            frame = json.loads(await asyncio.wait_for(ws.recv(), open_timeout))
        except BaseException:
            await ws.close()
            raise
        if frame.get("action") != "connected":
            await ws.close()
            raise PulseReplyError(str(frame.get("code", "protocol_error")), str(frame.get("message", frame)))
        client.connected = frame
        client._reader = asyncio.get_running_loop().create_task(client._read())
        for channel, position in (state or {}).get("channels", {}).items():
            serial, epoch = position.get("serial"), position.get("epoch")
            if isinstance(serial, int) and epoch:
                reply = await client.subscribe(channel, resume=(serial, epoch))
                client.resumed[channel] = bool(reply.get("resumed"))
            else:
                await client.subscribe(channel)
                client.resumed[channel] = False
        return client

    def recovery(self) -> dict[str, Any]:
        """What a later connection needs to continue this one (JSON-serialisable): the connection key and each
        subscribed channel's last serial and epoch."""
        return {
            "connectionKey": self.connected.get("connectionKey"),
            "channels": {
                channel: {"serial": serial, "epoch": epoch} for channel, (serial, epoch) in self.positions.items()
            },
        }

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
                if action in ("message", "excluded"):
                    position = self.positions.get(frame.get("channel"))
                    if position is not None:
                        serial = frame.get("serial")
                        if (
                            frame.get("channel") in self._resyncing
                            and isinstance(serial, int)
                            and serial != position[0] + 1
                        ):
                            continue  # past a gap while re-subscribing: the resume replays it
                        position[0] = frame.get("serial", position[0])
                    if action == "excluded":
                        continue  # a message published without this connection: its place only, no event
                elif action == "discontinuity" and self._resync(frame):
                    continue  # the app hears how the resume went
                if action in ("ok", "error") and ref is not None:
                    channel = self._subscribing.pop(ref, None)
                    if channel is not None and action == "ok":
                        # Set here, before any replayed message that follows the reply is read.
                        self.positions[channel] = [frame.get("serial", 0), frame.get("epoch")]
                        if channel in self._resuming:
                            self._resumed(channel, frame)
                    elif channel is not None:
                        self._resuming.discard(channel)
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

    def _resync(self, frame: dict[str, Any]) -> bool:
        """A ``discontinuity`` notice: start re-subscribing its channel with ``resume`` when its history may hold
        what was missed. True when the app is told later (``resumed``, or the notice if the resume is refused)."""
        channel, reason = frame.get("channel"), str(frame.get("reason", "unknown"))
        position = self.positions.get(channel) if isinstance(channel, str) else None
        if position is None or not isinstance(channel, str):
            return False
        if reason == "history_lost":
            position[1] = None  # the counter started again: this channel cannot be resumed
            if channel in self._resyncing:
                self._resyncing[channel] = reason  # the re-subscription subscribes afresh and tells this
                return True
            return False
        if reason == "resume_failed" or not isinstance(position[0], int) or not position[1]:
            return False
        if channel not in self._resyncing:  # one re-subscription covers a notice arriving during it
            self._resyncing[channel] = reason
            task = asyncio.get_running_loop().create_task(self._resubscribe(channel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    def _resumed(self, channel: str, reply: dict[str, Any]) -> None:
        """The reply to a re-subscription's resume, read before the replayed messages that follow it."""
        self._resuming.discard(channel)
        reason = self._resyncing.pop(channel, "unknown")
        if reply.get("resumed"):
            event = {"action": "resumed", "channel": channel, "serial": reply.get("serial"), "reason": reason}
        else:
            event = {"action": "discontinuity", "channel": channel, "reason": reason}
        self._events.put_nowait(event)

    async def _resubscribe(self, channel: str) -> None:
        """Unsubscribe (the server replays nothing to a subscribed channel) and subscribe with ``resume``."""
        deadline = asyncio.get_running_loop().time() + _RESYNC_PATIENCE
        try:
            await self.request("unsubscribe", channel=channel)
            delay = 0.1
            while True:
                position = self.positions.get(channel)
                if position is None or channel not in self._resyncing:
                    return  # the app unsubscribed meanwhile
                self._resuming.add(channel)
                try:
                    await self.subscribe(channel, resume=(position[0], position[1]) if position[1] else None)
                    return
                except PulseReplyError as exc:
                    if exc.code not in _TRANSIENT or asyncio.get_running_loop().time() + delay > deadline:
                        raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        except PulseClientError:
            # Refused for good: the channel is not subscribed any more; the app hears the notice.
            told = self._resyncing.pop(channel, None)
            if told is not None:
                self._events.put_nowait({"action": "discontinuity", "channel": channel, "reason": told})
        except (ConnectionError, ConnectionClosed):
            pass  # the connection ended: iteration stops, and a new connection with recover= resumes

    async def request(self, action: str, **members: Any) -> dict[str, Any]:
        """Send a request and return its ``ok`` reply; raises ``PulseClientError`` for an ``error`` reply."""
        self._next_ref += 1
        ref = self._next_ref
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        if action == "subscribe":
            self._subscribing[ref] = members["channel"]
        await self.ws.send(json.dumps({"action": action, "ref": ref, **members}))
        reply = await future
        if reply["action"] == "error":
            raise PulseReplyError(reply["code"], reply["message"])
        return reply

    async def subscribe(
        self, channel: str, *, rewind: int | None = None, resume: tuple[int, str] | None = None
    ) -> dict[str, Any]:
        """Subscribe; returns the ``ok`` reply: every message with a serial above its ``serial`` follows.

        ``rewind=N`` first delivers the newest N retained messages; ``resume=(serial, epoch)`` the messages after
        ``serial`` (the reply's ``resumed`` says whether that was possible).
        """
        members: dict[str, Any] = {"channel": channel}
        if rewind is not None:
            members["rewind"] = rewind
        if resume is not None:
            members["resume"] = {"serial": resume[0], "epoch": resume[1]}
        return await self.request("subscribe", **members)

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        self.positions.pop(channel, None)
        self._resyncing.pop(channel, None)
        return await self.request("unsubscribe", channel=channel)

    async def history(
        self, channel: str, *, limit: int | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest retained messages of ``channel`` (needs the ``history`` capability), oldest first."""
        members: dict[str, Any] = {"channel": channel}
        if limit is not None:
            members["limit"] = limit
        if before is not None:
            members["before"] = before
        messages: list[dict[str, Any]] = (await self.request("history", **members))["messages"]
        return messages

    async def publish(
        self, channel: str, name: str, data: Any = None, *, id: str | None = None, to_others: bool = False
    ) -> dict[str, Any]:
        """Publish as this client (needs the ``publish`` capability); returns ``{"id", "serial", ...}``.

        ``to_others=True``: every other subscriber gets it, this connection does not (it gets the message's
        ``excluded`` stand-in, which moves the channel's position without an event)."""
        members: dict[str, Any] = {"channel": channel, "name": name, "data": data}
        if id is not None:
            members["id"] = id
        if to_others:
            members["exclude"] = self.connection_id
        return await self.request("publish", **members)

    async def whisper(self, channel: str, name: str, data: Any = None) -> dict[str, Any]:
        """Send a client event to the channel's other subscribers (needs the ``whisper`` capability): not stored,
        no serial, not sent back to this connection. They receive ``{"action": "whisper", "name", "data",
        "clientId", "connectionId", "channel"}``."""
        return await self.request("whisper", channel=channel, name=name, data=data)

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
        for task in list(self._tasks):
            task.cancel()
        await self.ws.close(code)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
