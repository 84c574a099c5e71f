"""What django_pulse knows of daphne's internals, in one place: every use degrades to plain ASGI when they change.

daphne's ASGI ``send`` for a WebSocket is ``functools.partial(Server.handle_reply, protocol)``; ``protocol``
is daphne's autobahn ``WebSocketServerProtocol`` on a Twisted transport. Three things are done with it:

- ``buffer_probe``: the bytes Twisted holds unsent for the socket (daphne's sends complete at once, so this is
  the only place a slow reader's backlog shows; the outbox's slow-consumer limit counts it);
- ``close_going_away``: a 1001 close on shutdown (daphne passes ``websocket.close`` codes to autobahn's
  ``sendClose``, which accepts only 1000 and 3000-4999 from applications);
- ``direct_writer``: the fan-out fast path (docs/architecture.md). Through ASGI, every delivery of a frame
  runs daphne's ``handle_reply`` coroutine, encodes the text to UTF-8, builds the WebSocket frame in autobahn's
  ``sendMessage`` (and formats two log arguments in ``sendData`` even with logging off), and hands it to
  Twisted, which buffers it until the reactor reports the socket writable (two ``epoll_ctl`` calls and a
  loop round per delivery). The direct writer builds the frame bytes once per message for all sockets and,
  when nothing is queued for the socket, ``send()``s them at once; whatever the kernel does not take (a
  partial write, ``EAGAIN``, an error) goes to Twisted's ``transport.write`` and follows its ordinary path
  (buffering, or noticing the lost connection). The bytes on the wire are exactly those autobahn writes for
  an uncompressed, unfragmented text message from a server (RFC 6455 5.2: no mask).

The setting ``DAPHNE_DIRECT_WRITE`` (default True) turns the direct writer off.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["buffer_probe", "close_going_away", "daphne_protocol", "direct_writer", "text_frame"]

logger = logging.getLogger("django_pulse.daphne_io")

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
    """A function returning the bytes daphne holds unsent for this socket, or None when ``send`` is not daphne's."""
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


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame carrying ``payload`` (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class _FrameCache:
    """The frame of the message being fanned out: the hub hands the same dict to every sink in turn, so
    one entry, compared by identity, is built once per message and hit by every other socket."""

    __slots__ = ("frame", "message")

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.frame = b""

    def get(self, message: dict[str, Any]) -> bytes | None:
        if message is self.message:
            return self.frame
        text = message.get("text")
        if type(text) is not str or message.get("bytes") is not None:
            return None
        try:
            payload = text.encode()
        except UnicodeEncodeError:
            return None
        self.message = message
        self.frame = text_frame(payload)
        return self.frame


_frames = _FrameCache()


def _writer_supported(protocol: Any) -> bool:
    """The protocol and its transport look as the direct writer expects (autobahn over Twisted TCP)."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol
        from twisted.internet.tcp import Connection
    except ImportError:
        return False
    transport = getattr(protocol, "transport", None)
    return (
        isinstance(protocol, WebSocketProtocol)
        and isinstance(transport, Connection)
        and isinstance(getattr(WebSocketProtocol, "STATE_OPEN", None), int)
        and all(hasattr(protocol, name) for name in ("state", "send_queue", "_perMessageCompress"))
        and all(hasattr(transport, name) for name in ("socket", "dataBuffer", "offset", "_tempDataLen", "connected",
                                                      "disconnecting", "_writeDisconnected"))
    )


_announced = False


def _announce(supported: bool, protocol: Any) -> None:
    """Log once per process whether daphne's connections get the direct writer."""
    global _announced
    if _announced:
        return
    _announced = True
    if supported:
        logger.debug("daphne fast path on: fanned-out frames are written to the sockets directly")
    else:
        logger.info("daphne fast path off: %s over %s is not what django_pulse.daphne_io expects; frames go "
                    "through daphne's ASGI send", type(protocol).__name__,
                    type(getattr(protocol, "transport", None)).__name__)


def direct_writer(send: Any) -> Callable[[dict[str, Any]], bool] | None:
    """For daphne's ``send`` over plain TCP: a function that writes a ``websocket.send`` text message itself and
    returns True, or returns False (nothing written) when the caller must use ``send``; None for other servers,
    TLS, or daphne/autobahn/Twisted versions whose internals differ from what this module expects."""
    protocol = daphne_protocol(send)
    if protocol is None:
        return None
    supported = _writer_supported(protocol)
    _announce(supported, protocol)
    if not supported:
        return None
    transport = protocol.transport
    sock = transport.socket
    frames = _frames
    state_open = type(protocol).STATE_OPEN

    def write(message: dict[str, Any]) -> bool:
        if (
            protocol.state != state_open
            or protocol.send_queue
            or protocol._perMessageCompress is not None
            or not transport.connected
            or transport.disconnecting
            or transport._writeDisconnected
            or message.get("type") != "websocket.send"
        ):
            return False
        frame = frames.get(message)
        if frame is None:
            return False
        if transport._tempDataLen or transport.offset != len(transport.dataBuffer):
            transport.write(frame)  # behind what Twisted holds: in order, through its buffer
            return True
        try:
            sent = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The connection is failing: let Twisted find out on its own write and close it as it does.
            sent = 0
        if sent < len(frame):
            transport.write(frame[sent:])
        return True

    return write
