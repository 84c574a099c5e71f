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
- ``response_writer``: the same for the body of a streamed HTTP/1.1 response (the SSE transport). Recognised
  from an HTTP ``send``: daphne's is ``functools.partial(Server.handle_reply, request)`` (``request`` a Twisted
  ``http.Request``); uvicorn's (httptools) the bound method ``RequestResponseCycle.send``. The chunk bytes
  are built once per body for every stream (``http_chunk``: what Twisted's ``Request.write`` and uvicorn
  write for one body chunk of a chunked response), then written to each socket while its response is
  streaming, chunked, and the server is not holding writes back; otherwise the caller falls back to ``send``.

``PULSE["DIRECT_WRITE"] = False`` turns the direct writer off.

The names read on each server's objects are declared once, as ``Requirement``s; the writers check them when a
connection opens, and ``tests/server/test_server_contract.py`` checks them on the real objects of the installed
versions (docs/servers.md lists the versions tested). The first connection of each server in a process decides
and logs the path it takes; a recognised server whose internals differ is logged at WARNING, with its version and
the fallback (ASGI). ``FastPathReport`` keeps, per server, the path taken and the frames written directly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import sys
import types
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = [
    "DAPHNE_CONNECTION_REQUEST",
    "DAPHNE_HANDSHAKE",
    "DAPHNE_PROTOCOL",
    "DAPHNE_REQUEST",
    "GRANIAN_SIGNALS",
    "REQUIREMENTS",
    "TWISTED_HTTP_CHANNEL",
    "TWISTED_REACTOR",
    "TWISTED_TRANSPORT",
    "UVICORN_FLOW",
    "UVICORN_HANDSHAKE",
    "UVICORN_HTTP_CYCLE",
    "UVICORN_PROTOCOL",
    "WEBSOCKETS_CONNECTION",
    "WEBSOCKETS_HANDSHAKE",
    "WEBSOCKETS_HEADERS",
    "WEBSOCKETS_REQUEST",
    "FastPathReport",
    "Requirement",
    "ResponseWriter",
    "buffer_probe",
    "close_going_away",
    "daphne_protocol",
    "direct_writer",
    "http_chunk",
    "install_daphne_shutdown",
    "install_granian_shutdown",
    "release_handshake",
    "response_writer",
    "server_version",
    "text_frame",
]

logger = logging.getLogger("django_pulse.server._server_io")

DirectWriter = Callable[[dict[str, Any]], bool]

UVICORN_SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"
UVICORN_WEBSOCKETS = "uvicorn.protocols.websockets."
UVICORN_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl"
UVICORN_HTTP = "uvicorn.protocols.http."


# -- the contract ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """Names the fast path reads on one object of a server (``holder``, in ``distribution``)."""

    server: str
    distribution: str
    holder: str
    names: tuple[str, ...]

    def missing(self, obj: Any) -> list[str]:
        """The names ``obj`` lacks (empty when it has them all)."""
        return [name for name in self.names if not hasattr(obj, name)]


DAPHNE_PROTOCOL = Requirement(
    "daphne",
    "autobahn",
    "daphne's WebSocketProtocol (autobahn's WebSocketServerProtocol)",
    ("state", "send_queue", "_perMessageCompress", "sendCloseFrame"),
)
TWISTED_TRANSPORT = Requirement(
    "daphne",
    "Twisted",
    "twisted.internet.tcp.Connection",
    ("socket", "dataBuffer", "offset", "_tempDataLen", "connected", "disconnecting", "_writeDisconnected", "write"),
)
UVICORN_PROTOCOL = Requirement(
    "uvicorn",
    "uvicorn",
    "uvicorn's WebSocketsSansIOProtocol",
    ("conn", "transport", "writable", "handshake_complete", "close_sent", "initial_response", "disconnected"),
)
WEBSOCKETS_CONNECTION = Requirement(
    "uvicorn",
    "websockets",
    "websockets' ServerProtocol (uvicorn's protocol.conn)",
    ("state", "extensions", "expect_continuation_frame", "writes"),
)
# The SSE fast path (response bodies); daphne's transport is TWISTED_TRANSPORT as above.
DAPHNE_REQUEST = Requirement(
    "daphne",
    "Twisted",
    "daphne's WebRequest (Twisted's http.Request)",
    ("startedWriting", "chunked", "finished", "_disconnected", "channel", "transport", "sentLength"),
)
UVICORN_HTTP_CYCLE = Requirement(
    "uvicorn",
    "uvicorn",
    "uvicorn's httptools RequestResponseCycle",
    ("transport", "flow", "disconnected", "response_started", "response_complete", "chunked_encoding"),
)
UVICORN_FLOW = Requirement("uvicorn", "uvicorn", "uvicorn's FlowControl (the cycle's flow)", ("write_paused",))
# Not the fast path: the daphne shutdown hook (a 1001 close to every client before the reactor stops).
TWISTED_REACTOR = Requirement(
    "daphne",
    "Twisted",
    "Twisted's asyncio reactor (daphne installs it)",
    ("running", "_asyncioEventloop", "addSystemEventTrigger"),
)
# Not the fast path: the opening handshake's state, which the servers keep for the whole connection but read only
# during the handshake; ``release_handshake`` drops it once the connection is open (docs/performance.md).
DAPHNE_HANDSHAKE = Requirement(
    "daphne",
    "autobahn",
    "daphne's WebSocketProtocol, its opening handshake (read by autobahn's processHandshake and succeedHandshake)",
    (
        "state",
        "http_request_data",
        "http_status_line",
        "http_headers",
        "http_request_uri",
        "http_request_path",
        "http_request_params",
        "http_request_host",
        "websocket_origin",
        "websocket_protocols",
        "websocket_extensions",
        "_wskey",
        "http_response_data",
        "request",
    ),
)
DAPHNE_CONNECTION_REQUEST = Requirement(
    "daphne",
    "autobahn",
    "autobahn's ConnectionRequest (daphne's protocol.request; daphne reads its path after the handshake)",
    ("headers", "params", "origin", "protocols", "extensions"),
)
TWISTED_HTTP_CHANNEL = Requirement(
    "daphne",
    "Twisted",
    "twisted.web.http.HTTPChannel (the upgraded connection's producer; its requests list holds daphne's WebRequest)",
    ("requests",),
)
UVICORN_HANDSHAKE = Requirement(
    "uvicorn",
    "uvicorn",
    "uvicorn's WebSocketsSansIOProtocol, its opening handshake (read by handle_connect and send before the accept)",
    ("handshake_complete", "initial_response", "close_sent", "request", "response"),
)
WEBSOCKETS_HANDSHAKE = Requirement(
    "uvicorn",
    "websockets",
    "websockets' ServerProtocol, its opening handshake (read by accept)",
    ("available_extensions",),
)
# The request also stays a local of the ServerProtocol's parser generator (ServerProtocol.parse) for the whole
# connection: its headers, which nothing reads after accept, are emptied with Headers.clear().
WEBSOCKETS_REQUEST = Requirement(
    "uvicorn", "websockets", "websockets' Request (the opening handshake's, uvicorn's protocol.request)", ("headers",)
)
WEBSOCKETS_HEADERS = Requirement("uvicorn", "websockets", "websockets' Headers (the request's headers)", ("clear",))
GRANIAN_SIGNALS = Requirement(
    "granian",
    "granian",
    "granian._signals (how a granian worker hears SIGTERM)",
    ("set_loop_signals",),
)
REQUIREMENTS = (
    DAPHNE_PROTOCOL,
    TWISTED_TRANSPORT,
    UVICORN_PROTOCOL,
    WEBSOCKETS_CONNECTION,
    DAPHNE_REQUEST,
    UVICORN_HTTP_CYCLE,
    UVICORN_FLOW,
    TWISTED_REACTOR,
    DAPHNE_HANDSHAKE,
    DAPHNE_CONNECTION_REQUEST,
    TWISTED_HTTP_CHANNEL,
    UVICORN_HANDSHAKE,
    WEBSOCKETS_HANDSHAKE,
    WEBSOCKETS_REQUEST,
    WEBSOCKETS_HEADERS,
    GRANIAN_SIGNALS,
)

# The distributions whose versions a server's log line and report name, the server's own first.
DISTRIBUTIONS = {
    "daphne": ("daphne", "Twisted", "autobahn"),
    "uvicorn": ("uvicorn", "websockets"),
    "granian": ("granian",),
}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def server_version(server: str) -> str:
    """The installed versions behind ``server``, e.g. ``daphne 4.2.3 (Twisted 26.10.0, autobahn 26.10.2)``."""
    first, *rest = DISTRIBUTIONS.get(server, (server,))
    text = f"{server} {_version(first)}"
    if rest:
        text += " (" + ", ".join(f"{name} {_version(name)}" for name in rest) + ")"
    return text


class ServerPath:
    """The path one server's connections of one transport take in this process: ``direct`` (the fast path) or
    ``asgi``."""

    __slots__ = ("connections", "drift", "frames", "path", "reason", "server", "version")

    def __init__(self, server: str, path: str, reason: str, drift: bool) -> None:
        self.server = server
        self.version = server_version(server)
        self.path = path
        self.reason = reason
        self.drift = drift
        self.connections = 0  # connections given the direct writer
        self.frames = 0  # frames it wrote (the rest of their frames went through the ASGI send)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": self.path,
            "reason": self.reason,
            "drift": self.drift,
            "connections": self.connections,
            "directFrames": self.frames,
        }


class FastPathReport:
    """Per server and transport, the path this process's connections take; the first connection of each decides
    it and logs it once: INFO for the fast path or a known ASGI-only setup, WARNING when a recognised server's
    internals differ from the ``Requirement``s (drift). WebSocket entries are keyed by the server's name
    (``daphne``), SSE ones by the name and ``-sse`` (``daphne-sse``)."""

    def __init__(self) -> None:
        self.servers: dict[str, ServerPath] = {}

    def decide(self, server: str, path: str, reason: str, *, drift: bool = False, sse: bool = False) -> ServerPath:
        """The entry of ``server`` (its SSE responses when ``sse``), made (and logged) by its first connection;
        later ones only count."""
        key = server + "-sse" if sse else server
        entry = self.servers.get(key)
        if entry is not None:
            return entry
        entry = self.servers[key] = ServerPath(server, path, reason, drift)
        what = "SSE events" if sse else "fanned-out frames"
        prefix = "SSE " if sse else ""
        if drift:
            logger.warning(
                "%s: %sfast path off, %s go through the ASGI send instead (slower, same %s): %s. "
                "These internals are not the ones django_pulse knows; docs/servers.md lists the versions tested.",
                entry.version,
                prefix,
                what,
                "events" if sse else "frames",
                reason,
            )
        elif path == "direct":
            logger.info("%s: %sfast path on: %s are written to the sockets directly", entry.version, prefix, what)
        else:
            logger.info("%s: %sASGI path: %s", entry.version, prefix, reason)
        return entry

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {server: entry.as_dict() for server, entry in self.servers.items()}


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
    # The function bound to the protocol as a method: 64 bytes per connection, against ~190 for a partial (its
    # argument tuple and keyword dict) and ~550 for a closure (docs/performance.md); called the same way.
    probe: Callable[[], int] = types.MethodType(_protocol_buffered, protocol)
    return probe


def _protocol_buffered(protocol: Any) -> int:
    return _twisted_buffered(getattr(protocol, "transport", None))


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


def _daphne_writer(protocol: Any, report: FastPathReport) -> DirectWriter | None:
    """daphne over plain TCP. Through ASGI each socket costs daphne's ``handle_reply`` coroutine, a UTF-8
    encode, autobahn's framing (and two log arguments formatted even with logging off), and Twisted's deferred
    write: the bytes leave a loop round later, after two ``epoll_ctl``. Here: ``socket.send`` at once when
    Twisted holds nothing for the socket; what the kernel does not take (a partial send, ``EAGAIN``, an error)
    and every frame behind buffered bytes goes to ``transport.write``, i.e. Twisted's ordinary path."""
    try:
        from autobahn.websocket.protocol import WebSocketProtocol
        from twisted.internet.tcp import Connection
    except ImportError as exc:
        report.decide("daphne", "asgi", f"cannot import {exc.name}", drift=True)
        return None
    transport = getattr(protocol, "transport", None)
    state_open = getattr(WebSocketProtocol, "STATE_OPEN", None)
    problem = ""
    if not isinstance(protocol, WebSocketProtocol):
        problem = f"its protocol {type(protocol).__qualname__} is not an autobahn WebSocketProtocol"
    elif not isinstance(state_open, int):
        problem = "autobahn's WebSocketProtocol has no STATE_OPEN"
    elif not isinstance(transport, Connection):
        if type(transport).__name__ == "TLSMemoryBIOProtocol":
            report.decide("daphne", "asgi", "TLS: the socket carries TLS records, so frames go through Twisted's TLS")
            return None
        problem = f"its transport {type(transport).__qualname__} is not a twisted.internet.tcp.Connection"
    else:
        missing = [
            (DAPHNE_PROTOCOL, DAPHNE_PROTOCOL.missing(protocol)),
            (TWISTED_TRANSPORT, TWISTED_TRANSPORT.missing(transport)),
        ]
        problem = "; ".join(f"{req.holder} has no {', '.join(names)}" for req, names in missing if names)
    if problem:
        report.decide("daphne", "asgi", problem, drift=True)
        return None
    stats = report.decide("daphne", "direct", "plain TCP")
    stats.connections += 1
    tcp: Any = transport  # Twisted's tcp.Connection (untyped)
    # A partial of a module function, not a closure: ~160 bytes per connection instead of ~550 (its cells).
    return functools.partial(_daphne_write, protocol, tcp, tcp.socket, state_open, stats)


def _daphne_write(
    protocol: Any, tcp: Any, sock: Any, state_open: Any, stats: ServerPath, message: dict[str, Any]
) -> bool:
    if (
        protocol.state != state_open
        or protocol.send_queue
        or protocol._perMessageCompress is not None
        or not tcp.connected
        or tcp.disconnecting
        or tcp._writeDisconnected
    ):
        return False
    frame = _frames.get(message)
    if frame is None:
        return False
    stats.frames += 1
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


# -- uvicorn ---------------------------------------------------------------------------------------------------


def _uvicorn_protocol(send: Any) -> Any:
    """uvicorn's websockets-sansio protocol behind an ASGI ``send``, or None."""
    module = sys.modules.get(UVICORN_SANSIO)
    owner = getattr(send, "__self__", None)
    if module is None or owner is None or getattr(send, "__name__", "") != "send":
        return None
    cls = getattr(module, "WebSocketsSansIOProtocol", None)
    return owner if cls is not None and isinstance(owner, cls) else None


def _uvicorn_writer(protocol: Any, report: FastPathReport) -> DirectWriter | None:
    """uvicorn (websockets-sansio). Through ASGI each socket costs uvicorn's ``send`` coroutine, a UTF-8 encode
    and the ``websockets`` connection's framing (a ``Frame``, ``serialize``, ``data_to_send``, a join). Here:
    ``transport.write`` of the shared frame, while the connection is open with no extension (permessage-deflate
    compresses per socket: those connections keep the ASGI path), no fragmented message in progress, nothing
    pending in the connection, and the transport under its high-water mark (uvicorn's ``writable``; above it,
    ``send`` waits, and so the outbox queues)."""
    try:
        from websockets.protocol import State
    except ImportError:
        report.decide("uvicorn", "asgi", "cannot import websockets.protocol.State", drift=True)
        return None
    conn = getattr(protocol, "conn", None)
    missing = [(UVICORN_PROTOCOL, UVICORN_PROTOCOL.missing(protocol))]
    if conn is not None:
        missing.append((WEBSOCKETS_CONNECTION, WEBSOCKETS_CONNECTION.missing(conn)))
    problem = "; ".join(f"{req.holder} has no {', '.join(names)}" for req, names in missing if names)
    if problem:
        report.decide("uvicorn", "asgi", problem, drift=True)
        return None
    stats = report.decide("uvicorn", "direct", "websockets-sansio")
    stats.connections += 1
    # A partial of a module function, not a closure: ~170 bytes per connection instead of ~550 (its cells).
    return functools.partial(
        _uvicorn_write, protocol, protocol.conn, protocol.transport, protocol.writable, State.OPEN, stats
    )


def _uvicorn_write(
    protocol: Any, conn: Any, transport: Any, writable: Any, state_open: Any, stats: ServerPath, message: dict[str, Any]
) -> bool:
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
    frame = _frames.get(message)
    if frame is None:
        return False
    stats.frames += 1
    transport.write(frame)
    return True


def _other_path(send: Any, report: FastPathReport) -> None:
    """Record the ASGI path of a server the fast path knows but does not serve: uvicorn's other WebSocket
    implementations (or an unknown one: drift) and granian."""
    owner = getattr(send, "__self__", None)
    if owner is None:
        return
    module = type(owner).__module__
    if module.startswith(UVICORN_WEBSOCKETS):
        if module.endswith((".websockets_impl", ".wsproto_impl")):
            report.decide(
                "uvicorn",
                "asgi",
                f"--ws {module.rsplit('.', 1)[1].removesuffix('_impl')} (the fast path needs --ws websockets-sansio, "
                "uvicorn's default since 0.50)",
            )
        else:  # the sansio protocol with another send, or an implementation this module does not know
            what = f"{module}.{type(owner).__qualname__}.{getattr(send, '__name__', '?')}"
            report.decide(
                "uvicorn", "asgi", f"its send is {what}, not {UVICORN_SANSIO}.WebSocketsSansIOProtocol.send", drift=True
            )
    elif module.startswith("granian"):
        report.decide("granian", "asgi", "granian frames in native code; its send takes the text as it is")


# -- streamed HTTP responses (SSE) ---------------------------------------------------------------------------


def http_chunk(body: bytes) -> bytes:
    """One chunk of a chunked HTTP/1.1 body (RFC 9112 7.1): the size in lowercase hex, CRLF, the body, CRLF; what
    Twisted's ``Request.write`` (``toChunk``) and uvicorn's ``send`` write for a non-empty body."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class _ChunkCache:
    """The chunk of the body being fanned out: SSE hands the same body bytes (one event, encoded once per
    message) to every stream's writer in turn, so one entry compared by identity serves them all."""

    __slots__ = ("body", "chunk")

    def __init__(self) -> None:
        self.body = b""
        self.chunk = b""

    def get(self, body: bytes) -> bytes:
        if body is not self.body:
            self.chunk = http_chunk(body)
            self.body = body  # held, so its id cannot be reused by other bytes while cached
        return self.chunk


_chunks = _ChunkCache()


class ResponseWriter:
    """Writes body chunks of one streamed (chunked) HTTP/1.1 response to its socket, bypassing the server's
    ``send``. ``ready()``: True when a body written now goes straight out, in order with what ``send`` wrote
    before (the response started, is chunked, not finished, the connection open and the server not holding
    writes back); then ``write(body)`` writes it. When ``ready()`` is False the caller uses ``send``."""

    __slots__ = ("ready", "write")

    def __init__(self, ready: Callable[[], bool], write: Callable[[bytes], None]) -> None:
        self.ready = ready
        self.write = write


def _daphne_response_writer(request: Any, report: FastPathReport) -> ResponseWriter | None:
    """daphne over plain TCP. Through ASGI each body costs daphne's ``handle_reply`` coroutine, Twisted's
    ``Request.write`` (its chunk framing, a ``writeSequence`` on the channel) and a deferred write a loop round
    later. Here: the chunk built once per body; ``socket.send`` at once when Twisted holds nothing for the socket,
    else (and for what the kernel does not take) ``transport.write``, Twisted's ordinary path. ``sentLength``
    (daphne's access log size) is kept as ``Request.write`` keeps it."""
    try:
        from twisted.internet.tcp import Connection
        from twisted.web.http import Request
    except ImportError as exc:
        report.decide("daphne", "asgi", f"cannot import {exc.name}", drift=True, sse=True)
        return None
    transport = getattr(request, "transport", None)
    problem = ""
    if not isinstance(request, Request):
        problem = f"its request {type(request).__qualname__} is not a twisted.web.http.Request"
    elif not isinstance(transport, Connection):
        if type(transport).__name__ == "TLSMemoryBIOProtocol":
            report.decide(
                "daphne", "asgi", "TLS: the socket carries TLS records, so bodies go through Twisted's TLS", sse=True
            )
            return None
        problem = f"its transport {type(transport).__qualname__} is not a twisted.internet.tcp.Connection"
    else:
        missing = [
            (DAPHNE_REQUEST, DAPHNE_REQUEST.missing(request)),
            (TWISTED_TRANSPORT, TWISTED_TRANSPORT.missing(transport)),
        ]
        problem = "; ".join(f"{req.holder} has no {', '.join(names)}" for req, names in missing if names)
    if problem:
        report.decide("daphne", "asgi", problem, drift=True, sse=True)
        return None
    stats = report.decide("daphne", "direct", "plain TCP", sse=True)
    stats.connections += 1
    tcp: Any = transport  # Twisted's tcp.Connection (untyped)
    sock = tcp.socket
    chunks = _chunks

    def ready() -> bool:
        return bool(
            request.startedWriting
            and request.chunked
            and not request.finished
            and not request._disconnected
            and request.channel is not None
            and tcp.connected
            and not tcp.disconnecting
            and not tcp._writeDisconnected
        )

    def write(body: bytes) -> None:
        chunk = chunks.get(body)
        request.sentLength += len(body)
        stats.frames += 1
        if tcp._tempDataLen or tcp.offset != len(tcp.dataBuffer):
            tcp.write(chunk)  # behind what Twisted holds: in order, through its buffer
            return
        try:
            sent = sock.send(chunk)
        except OSError:  # EAGAIN, EINTR, or a failing connection, which Twisted notices on its own write
            sent = 0
        if sent < len(chunk):
            tcp.write(chunk[sent:])

    return ResponseWriter(ready, write)


def _uvicorn_cycle(send: Any) -> Any:
    """uvicorn's httptools request-response cycle behind an HTTP ``send``, or None."""
    module = sys.modules.get(UVICORN_HTTPTOOLS)
    owner = getattr(send, "__self__", None)
    if module is None or owner is None or getattr(send, "__name__", "") != "send":
        return None
    cls = getattr(module, "RequestResponseCycle", None)
    return owner if cls is not None and isinstance(owner, cls) else None


def _uvicorn_response_writer(cycle: Any, report: FastPathReport) -> ResponseWriter | None:
    """uvicorn (httptools). Through ASGI each body costs uvicorn's ``send`` coroutine and a join of the chunk's
    three parts. Here: ``transport.write`` of the chunk built once per body, while the response is streaming
    and chunked and uvicorn's flow control is not paused (above the transport's high-water mark ``send`` waits,
    and so the outbox queues)."""
    flow = getattr(cycle, "flow", None)
    missing = [(UVICORN_HTTP_CYCLE, UVICORN_HTTP_CYCLE.missing(cycle))]
    if flow is not None:
        missing.append((UVICORN_FLOW, UVICORN_FLOW.missing(flow)))
    problem = "; ".join(f"{req.holder} has no {', '.join(names)}" for req, names in missing if names)
    if problem:
        report.decide("uvicorn", "asgi", problem, drift=True, sse=True)
        return None
    transport = cycle.transport
    flow = cycle.flow
    stats = report.decide("uvicorn", "direct", "httptools", sse=True)
    stats.connections += 1
    chunks = _chunks

    def ready() -> bool:
        return bool(
            cycle.response_started
            and cycle.chunked_encoding
            and not cycle.response_complete
            and not cycle.disconnected
            and not flow.write_paused
        )

    def write(body: bytes) -> None:
        stats.frames += 1
        transport.write(chunks.get(body))

    return ResponseWriter(ready, write)


def response_writer(send: Any, report: FastPathReport) -> ResponseWriter | None:
    """For a recognised server's HTTP ``send``: a ``ResponseWriter`` for the response it belongs to; None for
    other servers, TLS under daphne, uvicorn with ``--http h11``, or versions whose internals differ from what
    this module expects (logged once, as for WebSockets, under the server's ``-sse`` entry of ``report``)."""
    request = daphne_protocol(send)
    if request is not None:
        return _daphne_response_writer(request, report)
    cycle = _uvicorn_cycle(send)
    if cycle is not None:
        return _uvicorn_response_writer(cycle, report)
    if isinstance(send, functools.partial) and getattr(send.func, "__module__", "").startswith("daphne."):
        what = f"its send is {send.func.__qualname__}, not Server.handle_reply"
        report.decide("daphne", "asgi", what, drift=True, sse=True)
        return None
    owner = getattr(send, "__self__", None)
    module = type(owner).__module__ if owner is not None else ""
    if module.startswith(UVICORN_HTTP):
        if module.endswith(".h11_impl"):
            report.decide("uvicorn", "asgi", "--http h11 (the fast path needs --http httptools)", sse=True)
        else:
            what = f"{module}.{type(owner).__qualname__}.{getattr(send, '__name__', '?')}"
            reason = f"its send is {what}, not {UVICORN_HTTPTOOLS}.RequestResponseCycle.send"
            report.decide("uvicorn", "asgi", reason, drift=True, sse=True)
    elif module.startswith("granian"):
        report.decide("granian", "asgi", "granian writes responses in native code", sse=True)
    return None


# -- choosing ----------------------------------------------------------------------------------------------------


def direct_writer(send: Any, report: FastPathReport) -> DirectWriter | None:
    """For a recognised server's ``send``: a function that writes a ``websocket.send`` text message itself and
    returns True, or returns False (nothing written) when the caller must use ``send`` for this message; None
    for other servers, TLS under daphne, or versions whose internals differ from what this module expects.
    What was decided goes to ``report`` (the runtime's: ``get_runtime().fast_path``)."""
    protocol = daphne_protocol(send)
    if protocol is not None:
        return _daphne_writer(protocol, report)
    protocol = _uvicorn_protocol(send)
    if protocol is not None:
        return _uvicorn_writer(protocol, report)
    if isinstance(send, functools.partial) and getattr(send.func, "__module__", "").startswith("daphne."):
        report.decide("daphne", "asgi", f"its send is {send.func.__qualname__}, not Server.handle_reply", drift=True)
        return None
    _other_path(send, report)
    return None


# -- the opening handshake's state ----------------------------------------------------------------------------

# autobahn's attributes holding the opening handshake (the request's bytes, status line, headers and their parts,
# the key, the response text): set by processHandshake and succeedHandshake, read by nothing else.
_AUTOBAHN_HANDSHAKE_ATTRS = DAPHNE_HANDSHAKE.names[1:-1]


def release_handshake(send: Any) -> bool:
    """Once a connection is open, drop what its server keeps of the opening handshake for the whole connection
    but reads only during it: under uvicorn the request and the response (``websockets``' ``Request`` and
    ``Response`` with their headers) and the deflate offer factory; under daphne autobahn's copies of the request
    (its bytes, headers, path, host, origin, key) and of the response text. ~1.5-3 KB per connection
    (docs/performance.md, "Memory per connection"). True when released; False (nothing touched) for other
    servers, a connection not open yet, or versions whose internals differ from the ``Requirement``s."""
    protocol = _uvicorn_protocol(send)
    if protocol is not None:
        return _release_uvicorn_handshake(protocol)
    protocol = daphne_protocol(send)
    if protocol is not None:
        return _release_daphne_handshake(protocol)
    return False


def _release_uvicorn_handshake(protocol: Any) -> bool:
    conn = getattr(protocol, "conn", None)
    if conn is None or UVICORN_HANDSHAKE.missing(protocol) or WEBSOCKETS_HANDSHAKE.missing(conn):
        return False
    # Accepted (not refused, not a denial response being streamed): send() reads the response only before the
    # handshake completes and handle_connect only on the request's arrival (tests/server/test_server_contract.py).
    if protocol.handshake_complete is not True or protocol.initial_response is not None or protocol.close_sent:
        return False
    headers = getattr(protocol.request, "headers", None)
    if headers is not None and not WEBSOCKETS_HEADERS.missing(headers):
        headers.clear()  # the parser generator keeps the request itself (tests/server/test_server_contract.py)
    protocol.request = None
    protocol.response = None
    conn.available_extensions = None  # read by accept() only (the extensions in use are conn.extensions)
    return True


def _release_daphne_handshake(protocol: Any) -> bool:
    try:
        from autobahn.websocket.protocol import WebSocketProtocol
    except ImportError:
        return False
    request = getattr(protocol, "request", None)
    if (
        not isinstance(protocol, WebSocketProtocol)
        or request is None
        or DAPHNE_HANDSHAKE.missing(protocol)
        or DAPHNE_CONNECTION_REQUEST.missing(request)
        or protocol.state != getattr(WebSocketProtocol, "STATE_OPEN", None)
    ):
        return False
    for name in _AUTOBAHN_HANDSHAKE_ATTRS:
        setattr(protocol, name, None)
    # daphne keeps the request for its path (access log lines); the rest is autobahn's handshake, shared with the
    # attributes above.
    request.headers = {}
    request.params = {}
    request.origin = None
    request.protocols = []
    request.extensions = []
    _release_upgraded_request(getattr(protocol, "transport", None))
    return True


def _release_upgraded_request(transport: Any) -> None:
    """daphne's HTTP request that asked for the upgrade (``WebRequest``: its headers, body buffer, addresses)
    stays in the ``requests`` list of Twisted's ``HTTPChannel``, which stays registered as the TCP transport's
    producer for the whole connection. Once daphne handed the socket over (the request's ``transport`` is None),
    that channel gets no more data (the transport's protocol is the WebSocket one), so the list is read by nothing
    but the channel's ``connectionLost``, which Twisted no longer calls: drop the handed-over requests."""
    try:
        from daphne.http_protocol import WebRequest
        from twisted.web.http import HTTPChannel
    except ImportError:
        return
    channel = getattr(transport, "producer", None)
    if not isinstance(channel, HTTPChannel) or TWISTED_HTTP_CHANNEL.missing(channel):
        return
    requests = channel.requests
    if (
        isinstance(requests, list)
        and requests
        and all(isinstance(r, WebRequest) and getattr(r, "transport", True) is None for r in requests)
        and getattr(transport, "protocol", None) is not channel
    ):
        requests.clear()


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
    if not getattr(reactor, "running", False):
        return
    setattr(reactor, _HOOKED_ATTR, True)
    missing = TWISTED_REACTOR.missing(reactor)
    if missing:
        logger.warning(
            "%s: graceful shutdown off (on SIGTERM clients see the connection drop, not a 1001 close): %s has no %s. "
            "These internals are not the ones django_pulse knows; docs/servers.md lists the versions tested.",
            server_version("daphne"),
            TWISTED_REACTOR.holder,
            ", ".join(missing),
        )
        return

    def before_shutdown() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(on_shutdown()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)


# -- granian: graceful shutdown ------------------------------------------------------------------------------

# Marks granian._signals once its set_loop_signals is wrapped (a process-wide fact about granian, not Pulse state).
_GRANIAN_HOOKED_ATTR = "_django_pulse_shutdown_hooked"

# The longest a granian worker waits for ``on_shutdown`` before it stops serving anyway.
GRANIAN_SHUTDOWN_TIMEOUT = 10.0


def install_granian_shutdown(on_shutdown: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Under granian, run ``on_shutdown()`` when a worker is told to stop (SIGTERM, SIGINT), BEFORE it stops serving.

    A granian worker (2.x) hears SIGTERM through an event-loop signal handler (``granian._signals.
    set_loop_signals``) that tells its Rust server to stop at once: the open WebSocket connections are dropped
    (clients see 1006, no close frame) and the application gets ``websocket.disconnect`` before the ASGI lifespan
    shutdown runs — too late to close them with 1001 or to hand their presence over, so their members left and
    re-entered. The worker imports ``set_loop_signals`` when it starts, after loading the application (which
    calls this): wrapping it replaces the loop's handlers with one that awaits ``on_shutdown()`` (at most
    ``GRANIAN_SHUTDOWN_TIMEOUT`` s) and then passes the signal on to granian. Call from the worker process before
    its loop runs (``routing.register_when_served``); a no-op elsewhere, logged when granian lacks the function.
    """
    if "granian" not in sys.modules:
        return
    try:
        import granian._signals
    except ImportError:
        module: Any = None
    else:
        module = granian._signals
    if module is None or GRANIAN_SIGNALS.missing(module):
        logger.warning(
            "%s: graceful shutdown off (on SIGTERM clients see the connection drop, not a 1001 close): no "
            "granian._signals.set_loop_signals. docs/servers.md lists the versions tested.",
            server_version("granian"),
        )
        return
    if getattr(module, _GRANIAN_HOOKED_ATTR, False):
        return
    original = module.set_loop_signals

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        granian_event = original(loop)
        stopping: list[asyncio.Task[None]] = []  # the one shutdown task, kept referenced while it runs

        async def stop_then_pass_on() -> None:
            try:
                await asyncio.wait_for(on_shutdown(), GRANIAN_SHUTDOWN_TIMEOUT)
            except Exception:
                logger.warning("pulse: graceful shutdown under granian failed", exc_info=True)
            finally:
                granian_event.set()

        def on_signal() -> None:
            if stopping:
                granian_event.set()  # a second signal: stop now
                return
            stopping.append(loop.create_task(stop_then_pass_on(), name="pulse-granian-shutdown"))

        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError, ValueError):
                return granian_event  # granian fell back to signal.signal (not on a Unix loop): its own handling
        return granian_event

    module.set_loop_signals = set_loop_signals
    setattr(module, _GRANIAN_HOOKED_ATTR, True)
