"""daphne (Twisted, autobahn): the WebSocket and SSE fast paths, the buffer probe, the 1001 close, the release
of the opening handshake's state, and the graceful shutdown hook. Recognised from the ASGI ``send``:
``functools.partial(Server.handle_reply, protocol)``, ``protocol`` being daphne's autobahn
``WebSocketServerProtocol`` (or, for HTTP, a Twisted ``http.Request``) on a Twisted transport."""

from __future__ import annotations

import asyncio
import functools
import sys
import types
from collections.abc import Callable, Coroutine
from typing import Any

from .contract import (
    DAPHNE_BODY,
    DAPHNE_CONNECTION_REQUEST,
    DAPHNE_FACTORY,
    DAPHNE_HANDSHAKE,
    DAPHNE_PROTOCOL,
    DAPHNE_REQUEST,
    DAPHNE_SERVER,
    TWISTED_HTTP_CHANNEL,
    TWISTED_REACTOR,
    TWISTED_TRANSPORT,
    DirectWriter,
    FastPathReport,
    Requirement,
    ResponseWriter,
    ServerHooks,
    ServerPath,
    chunks,
    frames,
    lacking,
    logger,
    mid_stream,
    refusal,
    server_version,
    set_server_send,
)

__all__ = [
    "DAPHNE_HOOKS",
    "buffer_probe",
    "buffered",
    "close_going_away",
    "daphne_protocol",
    "install_daphne_hooks",
    "install_daphne_shutdown",
    "release_handshake",
    "response_writer",
    "unrecognised",
    "writer",
]


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


def buffered(transport: Any) -> int:
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
    return buffered(getattr(protocol, "transport", None))


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


def writer(protocol: Any, report: FastPathReport) -> DirectWriter | None:
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
    else:
        checked = _on_tcp(transport, Connection, (DAPHNE_PROTOCOL, protocol), "frames", report, sse=False)
        if checked is None:
            return None
        problem = checked
    stats = report.admit("daphne", problem, "plain TCP")
    if stats is None:
        return None
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
    frame = frames.counted(message, stats)
    if frame is not None:
        _write(tcp, sock, frame)
    return frame is not None


def _write(tcp: Any, sock: Any, data: bytes) -> None:
    """Write ``data`` to the socket now when Twisted holds nothing for it; what the kernel does not take, and all
    of it behind bytes Twisted holds, goes through Twisted's buffer (in order)."""
    if tcp._tempDataLen or tcp.offset != len(tcp.dataBuffer):
        tcp.write(data)
        return
    try:
        sent = sock.send(data)
    except OSError:  # EAGAIN, EINTR, or a failing connection, which Twisted notices on its own write
        sent = 0
    if sent < len(data):
        tcp.write(data[sent:])


def _on_tcp(
    transport: Any, tcp_class: type, check: tuple[Requirement, Any], what: str, report: FastPathReport, *, sse: bool
) -> str | None:
    """What keeps a connection on ``transport`` off the fast path (empty: nothing), the protocol object's
    ``check`` included; None when it is TLS (decided here: the socket carries TLS records, so ``what`` go through
    Twisted's TLS)."""
    if isinstance(transport, tcp_class):
        return lacking(check, (TWISTED_TRANSPORT, transport))
    if type(transport).__name__ == "TLSMemoryBIOProtocol":
        report.decide(
            "daphne", "asgi", f"TLS: the socket carries TLS records, so {what} go through Twisted's TLS", sse=sse
        )
        return None
    return f"its transport {type(transport).__qualname__} is not a twisted.internet.tcp.Connection"


def unrecognised(send: Any) -> str | None:
    """Why a ``send`` of daphne's is not recognised (not ``Server.handle_reply``: drift); None when it is not
    daphne's."""
    if isinstance(send, functools.partial) and getattr(send.func, "__module__", "").startswith("daphne."):
        return f"its send is {send.func.__qualname__}, not Server.handle_reply"
    return None


def response_writer(request: Any, report: FastPathReport) -> ResponseWriter | None:
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
    else:
        checked = _on_tcp(transport, Connection, (DAPHNE_REQUEST, request), "bodies", report, sse=True)
        if checked is None:
            return None
        problem = checked
    stats = report.admit("daphne", problem, "plain TCP", sse=True)
    if stats is None:
        return None
    tcp: Any = transport  # Twisted's tcp.Connection (untyped)
    sock = tcp.socket

    def ready() -> bool:
        return bool(
            mid_stream(request.startedWriting, request.chunked, request.finished, request._disconnected)
            and request.channel is not None
            and tcp.connected
            and not tcp.disconnecting
            and not tcp._writeDisconnected
        )

    def write(body: bytes) -> None:
        request.sentLength += len(body)
        _write(tcp, sock, chunks.counted(body, stats))

    return ResponseWriter(ready, write)


# autobahn's attributes holding the opening handshake (the request's bytes, status line, headers and their parts,
# the key, the response text): set by processHandshake and succeedHandshake, read by nothing else.
_AUTOBAHN_HANDSHAKE_ATTRS = DAPHNE_HANDSHAKE.names[1:-1]


def release_handshake(protocol: Any) -> bool:
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


# -- daphne: what the adapter sets up in front of the application ---------------------------------------------

# The hooks' settings, one per process (a fact about the daphne classes patched, like the reactor mark above).
DAPHNE_HOOKS = ServerHooks()


def install_daphne_hooks(max_body_size: int | None, header_timeout: float | None) -> None:
    """Under daphne (its modules loaded: the application is being loaded by daphne), once per process:

    - every connection's scope carries daphne's own ``send`` (``set_server_send``), so that ASGI middleware
      between daphne and Pulse cannot hide it from the buffer probe and the fast paths;
    - a request body over ``max_body_size`` is refused with 413 before daphne buffers it: by its
      ``Content-Length`` as soon as the headers are in, and a body without one (chunked) the moment it passes the
      limit; the connection is then closed, so nothing more of it is read (daphne otherwise reads the whole body,
      to memory or a temporary file, before the application runs);
    - a connection whose first request's headers are not complete ``header_timeout`` seconds after it opened
      (a slowloris, or a WebSocket handshake left half-open) is closed: Twisted's own timeout is an idle one,
      reset by every byte, and daphne's ``--websocket_connect_timeout`` starts only once the handshake is in.

    ``None`` turns the limit or the deadline off. Later calls update both values."""
    DAPHNE_HOOKS.max_body_size = max_body_size
    DAPHNE_HOOKS.header_timeout = header_timeout
    if "daphne.server" not in sys.modules or DAPHNE_HOOKS.installed:
        return
    try:
        from daphne.http_protocol import HTTPFactory, WebRequest
        from daphne.server import Server
    except ImportError:
        return
    DAPHNE_HOOKS.installed = True
    problem = lacking((DAPHNE_SERVER, Server), (DAPHNE_BODY, WebRequest), (DAPHNE_FACTORY, HTTPFactory))
    if problem:
        logger.warning(
            "%s: body limit before buffering, header deadline and the server's send in the scope off: %s. "
            "These internals are not the ones django_pulse knows; docs/servers.md lists the versions tested.",
            server_version("daphne"),
            problem,
        )
        return
    create_application = Server.create_application

    def create_application_with_send(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        set_server_send(scope, functools.partial(self.handle_reply, protocol))
        return create_application(self, protocol, scope)

    Server.create_application = create_application_with_send
    got_length = WebRequest.gotLength
    handle_content_chunk = WebRequest.handleContentChunk

    def got_length_refusing(self: Any, length: int | None) -> None:
        self.channel._pulse_headers_in = True  # read by the header deadline
        limit = DAPHNE_HOOKS.max_body_size
        if limit is not None and length is not None and length > limit:
            self._pulse_received = 0
            _refuse_body(self)
            return
        self._pulse_received = 0
        got_length(self, length)

    def handle_content_chunk_counting(self: Any, data: bytes) -> None:
        if getattr(self, "_pulse_refused", False):
            return
        limit = DAPHNE_HOOKS.max_body_size
        self._pulse_received = getattr(self, "_pulse_received", 0) + len(data)
        if limit is not None and self._pulse_received > limit:
            _refuse_body(self)
            return
        handle_content_chunk(self, data)

    WebRequest.gotLength = got_length_refusing
    WebRequest.handleContentChunk = handle_content_chunk_counting
    build_protocol = HTTPFactory.buildProtocol

    def build_protocol_with_deadline(self: Any, addr: Any) -> Any:
        channel = build_protocol(self, addr)
        timeout = DAPHNE_HOOKS.header_timeout
        if timeout is not None and channel is not None:
            from twisted.internet import reactor as twisted_reactor

            reactor: Any = twisted_reactor  # the installed reactor (untyped)
            reactor.callLater(timeout, _headers_deadline, channel)
        return channel

    HTTPFactory.buildProtocol = build_protocol_with_deadline


def _headers_deadline(protocol: Any) -> None:
    """Close a connection whose first request's headers are not in yet."""
    # Twisted's HTTPFactory builds a _GenericHTTPChannelProtocol (it picks HTTP/1.1 or HTTP/2) around the channel.
    from twisted.web.http import HTTPChannel

    channel = getattr(protocol, "_channel", protocol)
    transport = getattr(channel, "transport", None)
    if (
        not isinstance(channel, HTTPChannel)  # HTTP/2, or a Twisted that wraps it otherwise: left alone
        or getattr(channel, "_pulse_headers_in", False)
        or transport is None
        or not getattr(transport, "connected", 0)
    ):
        return
    logger.debug("daphne: closing a connection whose request headers did not arrive in time")
    transport.abortConnection()


class _Discarded:
    """The body of a refused request: what arrives of it before the connection closes is dropped."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


def _refuse_body(request: Any) -> None:
    """Answer 413 on the request's connection and close it; the body read so far is dropped."""
    request._pulse_refused = True
    content = getattr(request, "content", None)
    request.content = _Discarded()
    if content is not None and hasattr(content, "close"):
        content.close()
    from twisted.web.http import HTTPChannel

    channel = request.channel
    transport = getattr(channel, "transport", None)
    if not isinstance(channel, HTTPChannel) or transport is None:  # HTTP/2: its stream is reset instead
        if hasattr(channel, "loseConnection"):
            channel.loseConnection()
        return
    transport.write(refusal())
    transport.loseConnection()  # stops reading: the rest of the body is never received
