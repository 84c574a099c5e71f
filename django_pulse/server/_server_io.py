"""What django_pulse knows of ASGI servers' internals, in one place; every use degrades to plain ASGI.

Recognised from the ASGI ``send`` a connection gets:

- **daphne**: ``functools.partial(Server.handle_reply, protocol)``, ``protocol`` being daphne's autobahn
  ``WebSocketServerProtocol`` on a Twisted transport;
- **uvicorn** with its default WebSocket implementation (``websockets-sansio``): the bound method
  ``WebSocketsSansIOProtocol.send``, whose protocol holds a sans-I/O ``websockets`` connection and an asyncio
  transport.

What is done with them:

- ``buffer_probe`` (daphne): the bytes Twisted holds unsent for the socket. daphne's sends complete at once, so
  this is the only place a slow reader's backlog shows; the outbox's slow-consumer limit counts it.
- ``close_going_away`` (daphne): a 1001 close on shutdown (daphne passes ``websocket.close`` codes to
  autobahn's ``sendClose``, which accepts only 1000 and 3000-4999 from applications).
- ``direct_writer``: the fan-out fast path (docs/architecture.md, "The direct-write fast path"). The frame
  bytes are built once per message for every socket (``text_frame``: exactly the bytes autobahn and
  ``websockets`` write for an uncompressed, unfragmented text message from a server, RFC 6455 5.2), then
  written to each socket while its connection is open and nothing else is pending for it; otherwise the
  caller falls back to ``send``.

``PULSE["DIRECT_WRITE"] = False`` turns the direct writer off.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = [
    "buffer_probe",
    "close_going_away",
    "daphne_protocol",
    "direct_writer",
    "install_daphne_shutdown",
    "text_frame",
]

logger = logging.getLogger("django_pulse.server._server_io")

DirectWriter = Callable[[dict[str, Any]], bool]

UVICORN_SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"


# -- frames ----------------------------------------------------------------------------------------------------


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame carrying ``payload`` (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class _FrameCache:
    """The frame of the message being fanned out: the hub hands the same dict to every sink in turn, so one
    entry, compared by identity, is built on the first socket and hit by every other one."""

    __slots__ = ("frame", "message")

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.frame = b""

    def get(self, message: dict[str, Any]) -> bytes | None:
        """The frame of a ``websocket.send`` text message; None for anything else."""
        if message is self.message:
            return self.frame
        text = message.get("text")
        if message.get("type") != "websocket.send" or type(text) is not str or message.get("bytes") is not None:
            return None
        try:
            payload = text.encode()
        except UnicodeEncodeError:
            return None
        self.message = message  # held, so its id cannot be reused by another dict while cached
        self.frame = text_frame(payload)
        return self.frame


_frames = _FrameCache()


# -- daphne ----------------------------------------------------------------------------------------------------


def daphne_protocol(send: Any) -> Any:
    """daphne's WebSocket protocol object behind an ASGI ``send``, or None for any other server."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    func = send.func
    if getattr(func, "__qualname__", "") != "Server.handle_reply" or not getattr(func, "__module__", "").startswith(
        "daphne."
    ):
        return None
    return send.args[0]


def _twisted_buffered(transport: Any) -> int:
    """Bytes a Twisted ``FileDescriptor`` transport holds unsent (0 when they cannot be read)."""
    try:
        return len(transport.dataBuffer) - int(transport.offset) + int(transport._tempDataLen)
    except (AttributeError, TypeError):
        return 0


def buffer_probe(send: Any) -> Callable[[], int] | None:
    """A function returning the bytes daphne holds unsent for this socket; None when ``send`` is not daphne's."""
    protocol = daphne_protocol(send)
    if protocol is None:
        return None

    def buffered() -> int:
        return _twisted_buffered(getattr(protocol, "transport", None))

    return buffered


def close_going_away(protocol: Any, code: int) -> bool:
    """Send close ``code`` (1001) through autobahn's ``sendCloseFrame``, which sends any code, as RFC 6455 lets a
    server that is going away do; True when it was sent."""
    send_close_frame = getattr(protocol, "sendCloseFrame", None)
    if send_close_frame is None:
        return False
    try:
        send_close_frame(code=int(code), isReply=False)
    except Exception:
        logger.debug("daphne refused a 1001 close frame", exc_info=True)
        return False
    return True


def _daphne_writer(protocol: Any) -> DirectWriter | None:
    """daphne over plain TCP. Through ASGI each socket costs daphne's ``handle_reply`` coroutine, a UTF-8
    encode, autobahn's framing (and two log arguments formatted even with logging off), and Twisted's deferred
    write: the bytes leave a loop round later, after two ``epoll_ctl``. Here: ``socket.send`` at once when
    Twisted holds nothing for the socket; what the kernel does not take (a partial send, ``EAGAIN``, an error)
    and every frame behind buffered bytes goes to ``transport.write``, i.e. Twisted's ordinary path."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol
        from twisted.internet.tcp import Connection
    except ImportError:
        return None
    transport = getattr(protocol, "transport", None)
    state_open = getattr(WebSocketProtocol, "STATE_OPEN", None)
    if not (
        isinstance(protocol, WebSocketProtocol)
        and isinstance(transport, Connection)
        and isinstance(state_open, int)
        and all(hasattr(protocol, name) for name in ("state", "send_queue", "_perMessageCompress"))
        and all(
            hasattr(transport, name)
            for name in (
                "socket",
                "dataBuffer",
                "offset",
                "_tempDataLen",
                "connected",
                "disconnecting",
                "_writeDisconnected",
            )
        )
    ):
        return None
    tcp: Any = transport  # Twisted's tcp.Connection (untyped)
    sock = tcp.socket
    frames = _frames

    def write(message: dict[str, Any]) -> bool:
        if (
            protocol.state != state_open
            or protocol.send_queue
            or protocol._perMessageCompress is not None
            or not tcp.connected
            or tcp.disconnecting
            or tcp._writeDisconnected
        ):
            return False
        frame = frames.get(message)
        if frame is None:
            return False
        if tcp._tempDataLen or tcp.offset != len(tcp.dataBuffer):
            tcp.write(frame)  # behind what Twisted holds: in order, through its buffer
            return True
        try:
            sent = sock.send(frame)
        except OSError:  # EAGAIN, EINTR, or a failing connection, which Twisted notices on its own write
            sent = 0
        if sent < len(frame):
            tcp.write(frame[sent:])
        return True

    return write


# -- uvicorn ---------------------------------------------------------------------------------------------------


def _uvicorn_protocol(send: Any) -> Any:
    """uvicorn's websockets-sansio protocol behind an ASGI ``send``, or None."""
    module = sys.modules.get(UVICORN_SANSIO)
    owner = getattr(send, "__self__", None)
    if module is None or owner is None or getattr(send, "__name__", "") != "send":
        return None
    cls = getattr(module, "WebSocketsSansIOProtocol", None)
    return owner if cls is not None and isinstance(owner, cls) else None


def _uvicorn_writer(protocol: Any) -> DirectWriter | None:
    """uvicorn (websockets-sansio). Through ASGI each socket costs uvicorn's ``send`` coroutine, a UTF-8 encode
    and the ``websockets`` connection's framing (a ``Frame``, ``serialize``, ``data_to_send``, a join). Here:
    ``transport.write`` of the shared frame, while the connection is open with no extension (permessage-deflate
    compresses per socket: those connections keep the ASGI path), no fragmented message in progress, nothing
    pending in the connection, and the transport under its high-water mark (uvicorn's ``writable``; above it,
    ``send`` waits, and so the outbox queues)."""
    try:
        from websockets.protocol import State
    except ImportError:
        return None
    conn = getattr(protocol, "conn", None)
    transport = getattr(protocol, "transport", None)
    writable = getattr(protocol, "writable", None)
    if not (
        conn is not None
        and transport is not None
        and writable is not None
        and all(
            hasattr(protocol, name) for name in ("handshake_complete", "close_sent", "initial_response", "disconnected")
        )
        and all(hasattr(conn, name) for name in ("state", "extensions", "expect_continuation_frame", "writes"))
    ):
        return None
    frames = _frames
    state_open = State.OPEN

    def write(message: dict[str, Any]) -> bool:
        if (
            not protocol.handshake_complete
            or protocol.close_sent
            or protocol.disconnected
            or protocol.initial_response is not None
            or not writable.is_set()
            or conn.state is not state_open
            or conn.extensions
            or conn.expect_continuation_frame
            or conn.writes
        ):
            return False
        frame = frames.get(message)
        if frame is None:
            return False
        transport.write(frame)
        return True

    return write


# -- choosing ----------------------------------------------------------------------------------------------------

_announced: set[str] = set()


def _announce(server: str, on: bool, protocol: Any) -> None:
    """Log once per process and server whether its connections get the direct writer."""
    if server in _announced:
        return
    _announced.add(server)
    if on:
        logger.debug("%s fast path on: fanned-out frames are written to the sockets directly", server)
    else:
        logger.info(
            "%s fast path off: %s over %s is not what django_pulse.server._server_io expects; "
            "frames go through the ASGI send",
            server,
            type(protocol).__name__,
            type(getattr(protocol, "transport", None)).__name__,
        )


def direct_writer(send: Any) -> DirectWriter | None:
    """For a recognised server's ``send``: a function that writes a ``websocket.send`` text message itself and
    returns True, or returns False (nothing written) when the caller must use ``send`` for this message; None
    for other servers, TLS under daphne, or versions whose internals differ from what this module expects."""
    protocol = daphne_protocol(send)
    if protocol is not None:
        writer = _daphne_writer(protocol)
        _announce("daphne", writer is not None, protocol)
        return writer
    protocol = _uvicorn_protocol(send)
    if protocol is not None:
        writer = _uvicorn_writer(protocol)
        _announce("uvicorn", writer is not None, protocol)
        return writer
    return None


# -- daphne: graceful shutdown -------------------------------------------------------------------------------

# Marks the reactor once its trigger is installed (a process-wide fact about daphne's reactor, not Pulse state).
_HOOKED_ATTR = "_django_pulse_shutdown_hooked"


def install_daphne_shutdown(on_shutdown: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Under daphne, run ``on_shutdown()`` in the reactor's "before shutdown" phase (SIGTERM, SIGINT), once.

    daphne 4.2 on SIGTERM runs its own trigger that cancels every application, but that trigger raises
    ``KeyError`` as soon as any HTTP connection it served is still open or was upgraded within the last second
    (its bookkeeping entry has no ``application_instance``); Twisted then stops without waiting, and clients see
    the TCP connection drop (1006). Even when it works, the close frames an application sends while being
    cancelled are still in Twisted's buffer when the reactor disconnects everything. This trigger is independent
    of daphne's and makes the reactor wait until the close frames are out. A no-op under other servers.
    """
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer
    from twisted.internet import reactor as twisted_reactor

    reactor: Any = twisted_reactor  # the installed reactor (daphne installs the asyncio one)
    if getattr(reactor, _HOOKED_ATTR, False):
        return
    if not getattr(reactor, "running", False) or not hasattr(reactor, "_asyncioEventloop"):
        return
    setattr(reactor, _HOOKED_ATTR, True)

    def before_shutdown() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(on_shutdown()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
