"""The SSE transport: Pulse over Server-Sent Events plus HTTP POST, for networks that break WebSockets.

docs/transports.md is the user-facing description and docs/protocol.md ("The SSE transport") the contract.
One ASGI HTTP application (``pulse_sse_app``, mounted by ``django_pulse.routing.sse_urlpatterns`` beside the
WebSocket route) serves, under ``PULSE["SSE_PATH"]`` (``pulse/sse/``):

- ``POST ticket/`` ``{"token", "recover"?}``: checks the token and answers a single-use ``ticket`` (valid
  ``SSE_TICKET_TTL`` s) and the new stream's ``stream`` id, a secret that binds later POSTs to the stream.
  The token never appears in a URL.
- ``GET ?ticket=T``: the SDK stream. The connection authenticates with the ticket's token exactly as a
  WebSocket's first ``auth`` frame does and then carries the same frames, one ``data:`` event each.
- ``POST send/`` ``{"stream", "frames": [frame text, ...], "close"?}``: client-to-server frames, handled by
  the stream's connection as if they had arrived on a WebSocket (same handlers, limits and error codes; the
  replies arrive on the stream). Any server process accepts it: the frames go through the broker to the
  process holding the stream (topic ``s:<stream>``); 404 when no process holds it.
- ``GET ?stream=<signed>&stream=...``: a unidirectional stream for a plain ``EventSource`` / htmx, listening
  to channels the server chose (``django_pulse.streams.sign_stream``), authenticated by the session cookie
  (or anonymous); one named event per message, ``Last-Event-ID`` resumes.

``SSEConnection`` is a ``PulseConsumer``: authentication, the action handlers, rate limits, timers, presence
and clean-up are the WebSocket connection's own; only the transport differs, and the two meet through
``transport.py``'s interface only. Messages reach it through the hub like any connection (an ``Outbox`` on the
HTTP response); each message's SSE event is encoded once for every SDK stream it goes to (``_EventCache``: the
hub hands the same message dict to every sink), and under daphne and uvicorn written to each stream's socket
directly as one HTTP chunk, itself built once (``_io.response_writer``), when the server allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .._conf import pulse_settings
from ..exceptions import PulseError
from ..protocol import Action, CloseCode, ErrorCode, Operation, Request, dumps, parse_frame
from ..protocol import sse as sse_wire
from ..protocol.tokens import Claims
from ._io import buffer_probe, install_daphne_shutdown, response_writer
from .app_access import aauthenticate_token
from .consumer import PulseConsumer
from .runtime import get_runtime

if TYPE_CHECKING:
    from .transport import ConnectionCore, Transport

__all__ = ["SSEConnection", "pulse_sse_app"]

logger = logging.getLogger("django_pulse.sse")

# The close code of a stream whose HTTP response ended without a close (the peer went away): as a WebSocket
# dropped without a close frame, its presence members leave after PRESENCE_GRACE.
ABRUPT = 1006
# Client close codes a ``send/`` POST may carry (a page leaving: 1000; the SDK dropping a silent stream: 4011,
# 4008); anything else is taken as 1000.
CLIENT_CLOSE_CODES = frozenset({1000, 4008, 4011})
# Frames waiting for one stream's handlers; more is a flood (closed with 4029 rate_limited).
MAX_PENDING_FRAMES = 1000
MAX_FRAMES_PER_POST = 100

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
    positions), ``keepalive``, ``close``; it calls ``attach``/``detach``, ``make_outbox``, ``start_session``,
    ``end``, ``absorb_cancellation``, and extends ``on_disconnect`` for its own clean-up."""

    transport = "sse"
    # Nothing comes back over SSE, so there is no silence check: a vanished peer shows as a failing write, a full
    # buffer (slow consumer) or the server's disconnect.
    silence_timeout = False

    def __init__(self, scope: dict[str, Any], send: Any, *, stream_id: str = "", unidirectional: bool = False) -> None:
        super().__init__()
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
        # daphne and uvicorn: events go to the socket directly when they can (_io.response_writer).
        self._writer = response_writer(send, get_runtime().fast_path) if self.limits.direct_write else None
        self.outbox = self.make_outbox(
            self._send_event,
            direct_write=False,
            # The backlog that daphne's transport holds for the response counts toward the slow-consumer limit.
            probe=buffer_probe(send),
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
                await get_runtime().hub.subscribe(self._command_topic, self._command_sink)
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
        try:
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
        except asyncio.CancelledError:
            if await self.absorb_cancellation():
                return
            raise
        finally:
            self.detach()

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
                await get_runtime().hub.unsubscribe(self._command_topic, self._command_sink)
        finally:
            await super().on_disconnect(code)


# -- HTTP plumbing ------------------------------------------------------------------------------------------


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _origin_allowed(origin: str) -> bool:
    """``PULSE["ALLOWED_ORIGINS"]`` as the WebSocket handshake applies it (None: the project's ALLOWED_HOSTS)."""
    from django.conf import settings
    from django.http.request import split_domain_port, validate_host

    allowed = pulse_settings.ALLOWED_ORIGINS
    if allowed is not None and "*" in allowed:
        return True
    parsed = urlsplit(origin)
    if not parsed.scheme or not parsed.hostname:
        return False
    if allowed is None:
        host, _ = split_domain_port(parsed.netloc)
        hosts = list(settings.ALLOWED_HOSTS) or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        return validate_host(host or parsed.hostname, hosts)
    return origin in allowed or any(
        validate_host(parsed.hostname, [pattern]) for pattern in allowed if "://" not in pattern
    )


def _cors_headers(scope: dict[str, Any]) -> list[tuple[bytes, bytes]] | None:
    """None when the request's ``Origin`` is not allowed; else the CORS headers to answer it with."""
    origin = _header(scope, b"origin")
    if origin is None:
        return []
    if not _origin_allowed(origin):
        return None
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


async def _respond(
    send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-store"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _error(
    send: Any, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _respond(send, status, {"error": {"code": code, "message": message}}, headers)


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes or the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


_TOKEN_STATUS = {
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_NOT_YET_VALID: 401,
    ErrorCode.APP_UNKNOWN: 403,
    ErrorCode.APP_DISABLED: 403,
    ErrorCode.UNAVAILABLE: 503,
}


async def _ticket(scope: dict[str, Any], receive: Any, send: Any, cors: list[tuple[bytes, bytes]]) -> None:
    raw = await _read_body(receive, 16384)
    if raw is None:
        await _error(send, 413, ErrorCode.MESSAGE_TOO_LARGE.value, "The body is too large.", cors)
        return
    try:
        body = json.loads(raw or b"{}")
        token = body["token"]
        recover = body.get("recover")
    except (ValueError, KeyError, TypeError):
        await _error(send, 400, ErrorCode.BAD_REQUEST.value, 'Send {"token": "...", "recover"?: "..."}.', cors)
        return
    if not isinstance(token, str) or not 1 <= len(token) <= 8192 or not (recover is None or isinstance(recover, str)):
        await _error(send, 400, ErrorCode.BAD_REQUEST.value, "token must be a string of 1-8192 characters.", cors)
        return
    try:
        claims = await aauthenticate_token(token)
    except PulseError as exc:
        await _error(send, _TOKEN_STATUS.get(exc.code, 400), exc.code.value, exc.message, cors)
        return
    ticket = secrets.token_urlsafe(24)
    stream = secrets.token_urlsafe(24)
    ttl = pulse_settings.SSE_TICKET_TTL
    value = dumps({"token": token, "recover": recover, "stream": stream})
    try:
        await get_runtime().broker.put_once("sse:" + ticket, value, ttl)
    except PulseError as exc:
        await _error(send, 503, exc.code.value, exc.message, cors)
        return
    except NotImplementedError as exc:
        await _error(send, 501, ErrorCode.INTERNAL_ERROR.value, str(exc), cors)
        return
    await _respond(
        send,
        200,
        {"ticket": ticket, "stream": stream, "expiresIn": ttl, "clientId": claims.client_id, "kbId": claims.kb_id},
        cors,
    )


async def _send_frames(scope: dict[str, Any], receive: Any, send: Any, cors: list[tuple[bytes, bytes]]) -> None:
    limit = pulse_settings.MAX_MESSAGE_SIZE * 4 + 4096
    raw = await _read_body(receive, limit)
    if raw is None:
        await _error(send, 413, ErrorCode.MESSAGE_TOO_LARGE.value, f"A send body is at most {limit} bytes.", cors)
        return
    try:
        body = json.loads(raw)
        stream = body["stream"]
        frames = body.get("frames", [])
        close = body.get("close")
    except (ValueError, KeyError, TypeError):
        await _error(send, 400, ErrorCode.BAD_REQUEST.value, 'Send {"stream": "...", "frames": ["..."]}.', cors)
        return
    if (
        not isinstance(stream, str)
        or not 1 <= len(stream) <= 64
        or not isinstance(frames, list)
        or len(frames) > MAX_FRAMES_PER_POST
        or not all(isinstance(f, str) for f in frames)
        or not (close is None or (isinstance(close, int) and not isinstance(close, bool)))
    ):
        await _error(
            send,
            400,
            ErrorCode.BAD_REQUEST.value,
            f"stream must be the stream id, frames a list of at most {MAX_FRAMES_PER_POST} frame strings.",
            cors,
        )
        return
    payload: dict[str, Any] = {"frames": frames}
    if close is not None:
        payload["close"] = close
    try:
        delivered = await get_runtime().broker.deliver(f"s:{stream}", dumps(payload))
    except PulseError as exc:
        await _error(send, 503, exc.code.value, exc.message, cors)
        return
    if not delivered:
        await _error(send, 404, "stream_unknown", "No server process holds this stream (it ended).", cors)
        return
    await _respond(send, 202, {}, cors)


async def _session_client_id(scope: dict[str, Any]) -> str | None:
    """The client id (user pk) of the Django session whose cookie came with the request; None if anonymous."""
    from django.conf import settings

    if "django.contrib.sessions" not in settings.INSTALLED_APPS:
        return None
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    cookie: SimpleCookie = SimpleCookie()
    with contextlib.suppress(Exception):
        cookie.load(raw)
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not morsel.value:
        return None
    from importlib import import_module

    from channels.auth import get_user

    store = import_module(settings.SESSION_ENGINE).SessionStore(morsel.value)
    user = await get_user({"session": store})
    if not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


async def _unidirectional(
    scope: dict[str, Any], receive: Any, send: Any, values: list[str], cors: list[tuple[bytes, bytes]]
) -> None:
    from ..streams import InvalidStream, verify_stream

    if len(values) > pulse_settings.MAX_SUBSCRIPTIONS:
        await _error(send, 400, ErrorCode.TOO_MANY_SUBSCRIPTIONS.value, "Too many streams.", cors)
        return
    client_id = await _session_client_id(scope)
    channels: list[str] = []
    kb_id = ""
    try:
        for value in values:
            grant = verify_stream(value, client_id=client_id)
            if kb_id and grant.kb_id != kb_id:
                raise InvalidStream("All streams of one connection must be of one app.")
            kb_id = grant.kb_id
            if grant.channel not in channels:
                channels.append(grant.channel)
    except PulseError as exc:
        await _error(send, 403, exc.code.value, exc.message, cors)
        return
    last_event_id = _header(scope, b"last-event-id")
    if last_event_id is None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        last_event_id = (query.get("lastEventId") or [None])[0]
    positions = sse_wire.decode_positions(last_event_id, len(channels))
    now = int(time.time())
    claims = Claims(
        client_id=client_id or "anonymous-" + secrets.token_urlsafe(8),
        kb_id=kb_id,
        issued_at=now,
        expires_at=now + int(pulse_settings.SSE_MAX_AGE),
        token_id="",
        capabilities={channel: ["subscribe", "history"] for channel in channels},
    )
    conn = SSEConnection(scope, send, unidirectional=True)
    conn.claims = claims
    conn.client_id = claims.client_id
    conn.kb_id = claims.kb_id
    # Authorize hooks run before the response starts: a refusal is a 403 the EventSource does not retry.
    try:
        for channel in channels:
            await conn.authorize(channel, Operation.SUBSCRIBE)
    except PulseError as exc:
        await _error(send, 403, exc.code.value, exc.message, cors)
        return
    # A signed-in visitor's streams count among the connections of their client id (MAX_CONNECTIONS_PER_CLIENT),
    # refused before the response starts; anonymous streams each have an id of their own.
    if client_id is not None and not await conn.take_slot():
        await _error(send, 429, ErrorCode.TOO_MANY_CONNECTIONS.value, conn.too_many_message(), cors)
        return
    conn.extra_headers = cors
    conn.stream_channels = channels
    conn.positions = dict.fromkeys(channels)
    await conn.open()
    if not await conn.start_session():
        conn.close(CloseCode.UNAVAILABLE)
        await conn.run(receive)
        return
    for channel, position in zip(channels, positions, strict=True):
        members: dict[str, Any] = {"action": "subscribe", "channel": channel, "ref": 1}
        if position is not None:
            members["resume"] = {"serial": position[0], "epoch": position[1]}
        await conn.handle_request(parse_frame(dumps(members), 1 << 20))
        if conn.closed:
            break
        if channel not in conn.subscriptions:
            # The subscribe failed (the broker is unreachable): end the response; the browser retries.
            conn.close(CloseCode.UNAVAILABLE)
            break
    await conn.run(receive)


async def _sdk_stream(
    scope: dict[str, Any], receive: Any, send: Any, ticket: str, cors: list[tuple[bytes, bytes]]
) -> None:
    try:
        raw = await get_runtime().broker.take_once("sse:" + ticket)
    except PulseError as exc:
        await _error(send, 503, exc.code.value, exc.message, cors)
        return
    if raw is None:
        await _error(send, 401, ErrorCode.TOKEN_INVALID.value, "The ticket is unknown, used or expired.", cors)
        return
    entry = json.loads(raw)
    conn = SSEConnection(scope, send, stream_id=entry["stream"])
    conn.extra_headers = cors
    if await conn.open():
        members = {"token": entry["token"]}
        if entry.get("recover"):
            members["recover"] = entry["recover"]
        await conn.handle_request(Request(Action.AUTH, None, members))
    await conn.run(receive)


async def pulse_sse_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI HTTP application of the SSE transport (docs/transports.md)."""
    if scope["type"] != "http":
        return
    cors = _cors_headers(scope)
    if cors is None:
        await _error(send, 403, ErrorCode.FORBIDDEN.value, "This Origin is not allowed (PULSE['ALLOWED_ORIGINS']).")
        return
    method = scope.get("method", "GET")
    base = "/" + pulse_settings.SSE_PATH
    path = scope.get("path", "")
    rest = path[len(base) :] if path.startswith(base) else path
    if method == "OPTIONS":
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *cors,
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (b"access-control-allow-headers", b"content-type, last-event-id"),
                    (b"access-control-max-age", b"600"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    if rest == "ticket/" and method == "POST":
        await _ticket(scope, receive, send, cors)
    elif rest == "send/" and method == "POST":
        await _send_frames(scope, receive, send, cors)
    elif rest == "" and method == "GET":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "ticket" in query:
            await _sdk_stream(scope, receive, send, query["ticket"][0], cors)
        elif "stream" in query:
            await _unidirectional(scope, receive, send, query["stream"], cors)
        else:
            await _error(
                send, 400, ErrorCode.BAD_REQUEST.value, "Give ?ticket= (SDK) or ?stream= (signed streams).", cors
            )
    else:
        await _error(send, 405 if rest in ("", "ticket/", "send/") else 404, "bad_request", "Not here.", cors)


if TYPE_CHECKING:  # both transports implement the interface (transport.py), and SSE uses only the core's
    _websocket: type[Transport] = PulseConsumer
    _sse: type[Transport] = SSEConnection
    _core: type[ConnectionCore] = SSEConnection
