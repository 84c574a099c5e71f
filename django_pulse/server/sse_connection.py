"""The SSE transport: a Pulse connection whose frames go out as Server-Sent Events on an HTTP response.

``SSEConnection`` is a ``PulseConsumer``: authentication, the action handlers, rate limits, timers, presence
and clean-up are the WebSocket connection's own; only the transport differs, and the two meet through
``transport.py``'s interface only. Frames from the client arrive as commands (``command``: the frames POSTed to
``send/`` on any process, through the broker on the stream's topic ``s:<stream>``). Messages reach it through
the hub like any connection (an ``Outbox`` on the HTTP response); each message's SSE event is encoded once for
every SDK stream it goes to (``_EventCache``: the hub hands the same message dict to every sink), and under
daphne and uvicorn written to each stream's socket directly as one HTTP chunk, itself built once
(``_io.response_writer``), when the server allows it.

The HTTP endpoints that make these connections (tickets, streams, ``send/``) are ``sse.py``'s;
docs/transports.md is the user-facing description and docs/protocol.md ("The SSE transport") the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from .._conf import pulse_settings
from ..exceptions import PulseError
from ..protocol import CloseCode, dumps
from ..protocol import sse as sse_wire
from ._io import buffer_probe, install_daphne_shutdown, response_writer, server_send
from .consumer import PulseConsumer

if TYPE_CHECKING:
    from .runtime import Runtime
    from .transport import ConnectionCore, Transport

__all__ = ["ABRUPT", "CLIENT_CLOSE_CODES", "MAX_PENDING_FRAMES", "SSEConnection"]

logger = logging.getLogger("django_pulse.sse")

# The close code of a stream whose HTTP response ended without a close (the peer went away): as a WebSocket
# dropped without a close frame, its presence members leave after PRESENCE_GRACE.
ABRUPT = 1006
# Client close codes a ``send/`` POST may carry (a page leaving: 1000; the SDK dropping a silent stream: 4011,
# 4008); anything else is taken as 1000.
CLIENT_CLOSE_CODES = frozenset({1000, 4008, 4011})
# Frames waiting for one stream's handlers; more is a flood (closed with 4029 rate_limited).
MAX_PENDING_FRAMES = 1000

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


async def _completed() -> None:
    """What ``_send_event`` returns for a frame a stream does not carry (an awaitable that does nothing)."""


class _EventCache:
    """The SDK event of the message being fanned out, built once: the hub hands the same dict to every sink in
    turn, so one entry compared by identity is built on the first stream and hit by every other one."""

    __slots__ = ("body", "message")

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.body: dict[str, Any] = {}

    def get(self, message: dict[str, Any]) -> dict[str, Any]:
        if message is self.message:
            return self.body
        body = {"type": "http.response.body", "body": sse_wire.event(message["text"]), "more_body": True}
        self.message = message  # held, so its id cannot be reused by another dict while cached
        self.body = body
        return body


class _MessageCache:
    """For unidirectional streams: a message frame's channel, name, serial and data text, decoded once per
    message (None for other frames)."""

    __slots__ = ("message", "parsed")

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.parsed: tuple[str, str, int, str] | None = None

    def get(self, message: dict[str, Any]) -> tuple[str, str, int, str] | None:
        if message is self.message:
            return self.parsed
        parsed: tuple[str, str, int, str] | None = None
        text = message["text"]
        if text.startswith('{"action":"message"'):
            try:
                frame = json.loads(text)
                data = frame.get("data")
                parsed = (
                    str(frame["channel"]),
                    str(frame["name"]),
                    int(frame["serial"]),
                    data if isinstance(data, str) else dumps(data),
                )
            except (ValueError, KeyError, TypeError):
                parsed = None
        self.message = message
        self.parsed = parsed
        return parsed


_events = _EventCache()
_messages = _MessageCache()


class _CommandSink:
    """The hub sink of a stream's command topic (``s:<stream>``): frames POSTed to ``send/`` on any process."""

    __slots__ = ("conn",)

    def __init__(self, conn: SSEConnection) -> None:
        self.conn = conn

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        self.conn.command(message["text"])


class SSEConnection(PulseConsumer):
    """One SSE stream speaking the Pulse protocol: a ``PulseConsumer`` whose transport is an HTTP response
    (server to client) and ``send/`` POSTs (client to server). It meets the connection through
    ``transport.Transport`` only: it provides ``send_frame`` (unidirectional streams turn subscribe replies into
    positions), ``keepalive``, ``close``; it calls ``attach``, ``serving`` (which detaches), ``make_outbox``,
    ``start_session``, ``end``, and extends ``on_disconnect`` for its own clean-up."""

    transport = "sse"
    # Nothing comes back over SSE, so there is no silence check: a vanished peer shows as a failing write, a full
    # buffer (slow consumer) or the server's disconnect.
    silence_timeout = False

    def __init__(
        self,
        scope: dict[str, Any],
        send: Any,
        *,
        runtime: Runtime | None = None,
        stream_id: str = "",
        unidirectional: bool = False,
    ) -> None:
        super().__init__(runtime=runtime)
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self.stream_id = stream_id
        self.unidirectional = unidirectional
        self.extra_headers: list[tuple[bytes, bytes]] = []
        # Unidirectional streams: the channels in URL order and their positions (serial, epoch) for ``id:``.
        self.stream_channels: list[str] = []
        self.positions: dict[str, sse_wire.Position | None] = {}
        self._commands: deque[str | int] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._command_sink = _CommandSink(self)
        self._command_topic = f"s:{stream_id}" if stream_id else ""
        self._response_ended = False
        # Set when the server closed the stream; _receiving/_woken: the task is waiting in receive() / that wait
        # was cancelled by _wake (not by the server or a shutdown).
        self._closing = asyncio.Event()
        self._receiving = False
        self._woken = False
        self._stream_task: asyncio.Task[Any] | None = None  # the task serving the stream (open() to run())
        # daphne and uvicorn: events go to the socket directly when they can (_io.response_writer). The server's
        # own send is found behind any ASGI middleware's (docs/servers.md, "In front of the application").
        server = server_send(scope, send)
        self._writer = response_writer(server, self.runtime.fast_path) if self.limits.direct_write else None
        self.outbox = self.make_outbox(
            self._send_event,
            direct_write=False,
            # The backlog that daphne's transport holds for the response counts toward the slow-consumer limit.
            probe=buffer_probe(server),
            direct=self._write_event if self._writer is not None else None,
        )

    # -- the HTTP response --------------------------------------------------------------------------------

    def _send_event(self, message: dict[str, Any]) -> Any:
        """The outbox's ``send``: WebSocket-shaped ASGI messages in, the SSE response out."""
        if self._response_ended:
            return _completed()
        kind = message["type"]
        if kind == "websocket.send":
            if not self.unidirectional:
                return self.base_send(_events.get(message))
            body = self._unidirectional_event(message)
            if body is None:
                return _completed()
            return self.base_send({"type": "http.response.body", "body": body, "more_body": True})
        if kind == "sse.raw":
            if self.unidirectional and "position" in message:
                body = self._position_event(message["position"])
                if body is None:
                    return _completed()
                return self.base_send({"type": "http.response.body", "body": body, "more_body": True})
            return self.base_send({"type": "http.response.body", "body": message["body"], "more_body": True})
        if kind == "websocket.accept":
            headers = _STREAM_HEADERS + self.extra_headers
            return self._start(headers)
        if kind == "websocket.close":
            self._response_ended = True
            code = int(message.get("code", 1000))
            if self.unidirectional:
                body = sse_wire.event(sse_wire.close_frame(code), name="close")
            else:
                body = sse_wire.event(sse_wire.close_frame(code))
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self._ended)
            return self.base_send({"type": "http.response.body", "body": body, "more_body": False})
        return _completed()

    def _write_event(self, message: dict[str, Any]) -> bool:
        """The outbox's fast path: a message frame's event written straight to the socket (True), or False to
        have ``_send_event`` send it through the server. The same event bytes as ``_send_event``'s, in one
        chunk built once per message for every SDK stream."""
        writer = self._writer
        if message["type"] != "websocket.send" or self._response_ended or writer is None or not writer.ready():
            return False
        if self.unidirectional:
            body = self._unidirectional_event(message)
            if body is None:
                return True  # not part of a unidirectional stream: nothing to write
        else:
            body = _events.get(message)["body"]
        writer.write(body)
        return True

    async def _start(self, headers: list[tuple[bytes, bytes]]) -> None:
        await self.base_send({"type": "http.response.start", "status": 200, "headers": headers})
        # The first bytes: daphne sends the headers with the first body write, and the browser's EventSource is
        # ``open`` once they arrive. ``retry`` sets the browser's own reconnect delay (unidirectional streams).
        first = b"retry: 2000\n:ok\n\n" if self.unidirectional else b":ok\n\n"
        await self.base_send({"type": "http.response.body", "body": first, "more_body": True})

    def _ended(self) -> None:
        # The response is complete: stop waiting for the client (run() returns and cleans up).
        self._wake()

    def push_raw(self, body: bytes) -> None:
        assert self.outbox is not None
        self.outbox.push({"type": "sse.raw", "body": body}, len(body))

    # -- unidirectional events ------------------------------------------------------------------------------

    def _id(self) -> str:
        return sse_wire.encode_positions([self.positions.get(c) for c in self.stream_channels])

    def _unidirectional_event(self, message: dict[str, Any]) -> bytes | None:
        parsed = _messages.get(message)
        if parsed is not None:
            channel, name, serial, data = parsed
            position = self.positions.get(channel)
            if position is not None:
                self.positions[channel] = (serial, position[1])
            return sse_wire.event(data, name=name, id=self._id())
        text = message["text"]
        if text.startswith('{"action":"excluded"'):
            # A message published excluding this stream: its place in the channel's sequence, no event.
            try:
                frame = json.loads(text)
                channel, serial = str(frame["channel"]), int(frame["serial"])
            except (ValueError, KeyError, TypeError):
                return None
            position = self.positions.get(channel)
            if position is not None:
                self.positions[channel] = (serial, position[1])
            return f"id: {self._id()}\n\n".encode()
        if text.startswith('{"action":"discontinuity"'):
            try:
                frame = json.loads(text)
            except ValueError:
                return None
            if frame.get("reason") == "history_lost":
                self.positions[str(frame.get("channel"))] = None
            return sse_wire.event(text, name="discontinuity", id=self._id())
        return None  # replies, pings, whispers and presence frames are not part of a unidirectional stream

    def _position_event(self, reply: dict[str, Any]) -> bytes | None:
        # A subscribe reply, in order with the messages: the channel's position from here on. A resume that could
        # not be honoured (outside the history window, another epoch) is a discontinuity for the listener.
        channel = str(reply["channel"])
        self.positions[channel] = (int(reply["serial"]), str(reply["epoch"]))
        if reply.get("resumed") is False:
            frame = dumps({"action": "discontinuity", "channel": channel, "reason": "resume_failed"})
            return sse_wire.event(frame, name="discontinuity", id=self._id())
        return f"id: {self._id()}\n\n".encode()  # sets the browser's last event id; dispatches no event

    def send_frame(self, text: str) -> None:
        if self.unidirectional and text.startswith('{"action":"ok"'):
            try:
                reply = json.loads(text)
            except ValueError:
                return
            if "serial" in reply and "epoch" in reply and "channel" in reply:
                assert self.outbox is not None
                self.outbox.push({"type": "sse.raw", "position": reply}, 0)
            return
        super().send_frame(text)

    # -- client to server -----------------------------------------------------------------------------------

    def command(self, payload: str) -> None:
        """Frames POSTed to ``send/`` (from this or another process): handled in order, one at a time."""
        try:
            body = json.loads(payload)
            frames = body["frames"]
            close = body.get("close")
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring a malformed SSE command")
            return
        if self.closed:
            if close is not None:
                self._closing.set()  # a close POST during the linger after the client went away
            return
        self._commands.extend(f for f in frames if isinstance(f, str))
        if close is not None:
            self._commands.append(int(close) if close in CLIENT_CLOSE_CODES else 1000)
        if len(self._commands) > MAX_PENDING_FRAMES:
            self._commands.clear()
            self.close(CloseCode.RATE_LIMITED)
            return
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._commands:
                item = self._commands.popleft()
                if isinstance(item, int):
                    self.close(item)
                    continue
                await self.websocket_receive({"type": "websocket.receive", "text": item})
        finally:
            self._worker = None

    # -- timers -------------------------------------------------------------------------------------------

    def keepalive(self) -> None:
        # The SDK stream gets the protocol's ping (its watchdog needs traffic); a unidirectional one a comment.
        if self.unidirectional:
            self.push_raw(sse_wire.comment("ping"))
        else:
            super().keepalive()

    def close(self, code: int) -> None:
        super().close(code)
        self._wake()

    # -- life cycle -----------------------------------------------------------------------------------------

    async def open(self) -> bool:
        """Start the response and, for an SDK stream, listen to the command topic; False if that failed."""
        from .shutdown import logged_shutdown

        install_daphne_shutdown(logged_shutdown)
        self.attach()
        self._stream_task = asyncio.current_task()
        assert self.outbox is not None
        self.outbox.push({"type": "websocket.accept"}, 0)
        if self._command_topic:
            try:
                await self.runtime.hub.subscribe(self._command_topic, self._command_sink)
            except PulseError as exc:
                self.send_frame(dumps({"action": "error", "code": exc.code.value, "message": exc.message}))
                self.close(CloseCode.UNAVAILABLE)
                return False
        return True

    async def run(self, receive: Any) -> None:
        """Serve the stream until the client goes away or the server closes it; then clean up.

        The task waits in ``receive()`` for the client's disconnect, with no helper task: when the server
        closes the stream, ``_wake`` cancels that wait (and only that wait) and the loop ends.
        """
        async with self.serving():
            while not self._closing.is_set():
                self._receiving = True
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not self._woken:
                        raise
                    self._woken = False
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    continue
                finally:
                    self._receiving = False
                if message["type"] == "http.disconnect":
                    break
            if not self.closed:
                # The client went away. A page that is closing POSTs a close (1000) at the same moment: give
                # it a moment to arrive, so its presence members leave at once instead of after the grace.
                self._closing.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), pulse_settings.SSE_CLOSE_LINGER)
            elif self.outbox is not None and not self._response_ended:
                await self.outbox.flush(1.0)
            await self.end(ABRUPT)  # ABRUPT unless this side closed (then its code) or the page POSTed a close

    def _wake(self) -> None:
        """Stop the task's wait for the client (the server closed the stream)."""
        self._closing.set()
        task = self._stream_task
        if self._receiving and not self._woken and task is not None and not task.done():
            self._woken = True
            task.cancel()

    async def on_disconnect(self, code: int) -> None:
        # The connection ended (once): no more client frames for it, then presence as for any connection.
        try:
            if self._worker is not None:
                self._worker.cancel()
            self._commands.clear()
            if self._command_topic:
                await self.runtime.hub.unsubscribe(self._command_topic, self._command_sink)
        finally:
            await super().on_disconnect(code)


if TYPE_CHECKING:  # both transports implement the interface (transport.py), and SSE uses only the core's
    _websocket: type[Transport] = PulseConsumer
    _sse: type[Transport] = SSEConnection
    _core: type[ConnectionCore] = SSEConnection
