"""uvicorn: the WebSocket fast path (its default ``websockets-sansio`` implementation: the bound method
``WebSocketsSansIOProtocol.send``, whose protocol holds a sans-I/O ``websockets`` connection and an asyncio
transport), the SSE fast path (httptools: ``RequestResponseCycle.send``) and the release of the opening
handshake's state."""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

from .contract import (
    UVICORN_FLOW,
    UVICORN_HANDSHAKE,
    UVICORN_HTTP_CYCLE,
    UVICORN_HTTPTOOLS_PROTOCOL,
    UVICORN_PROTOCOL,
    WEBSOCKETS_CONNECTION,
    WEBSOCKETS_HANDSHAKE,
    WEBSOCKETS_HEADERS,
    DirectWriter,
    FastPathReport,
    ResponseWriter,
    ServerHooks,
    ServerPath,
    chunks,
    frames,
    lacking,
    logger,
    mid_stream,
    server_version,
    set_server_send,
)

__all__ = [
    "UVICORN_HOOKS",
    "UVICORN_HTTP",
    "UVICORN_HTTPTOOLS",
    "UVICORN_SANSIO",
    "UVICORN_WEBSOCKETS",
    "http_cycle",
    "install_uvicorn_hooks",
    "release_handshake",
    "response_writer",
    "websocket_protocol",
    "writer",
]

UVICORN_SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"
UVICORN_WEBSOCKETS = "uvicorn.protocols.websockets."
UVICORN_HTTPTOOLS = "uvicorn.protocols.http.httptools_impl"
UVICORN_HTTP = "uvicorn.protocols.http."


def _send_of(send: Any, module_name: str, class_name: str) -> Any:
    """The object whose bound method ``send`` is ``send``, when it is an instance of uvicorn's ``class_name`` (in
    ``module_name``, if uvicorn loaded it); else None."""
    module = sys.modules.get(module_name)
    owner = getattr(send, "__self__", None)
    if module is None or owner is None or getattr(send, "__name__", "") != "send":
        return None
    cls = getattr(module, class_name, None)
    return owner if cls is not None and isinstance(owner, cls) else None


def websocket_protocol(send: Any) -> Any:
    """uvicorn's websockets-sansio protocol behind an ASGI ``send``, or None."""
    return _send_of(send, UVICORN_SANSIO, "WebSocketsSansIOProtocol")


def writer(protocol: Any, report: FastPathReport) -> DirectWriter | None:
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
    problem = lacking((UVICORN_PROTOCOL, protocol), (WEBSOCKETS_CONNECTION, getattr(protocol, "conn", None)))
    stats = report.admit("uvicorn", problem, "websockets-sansio")
    if stats is None:
        return None
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
    frame = frames.counted(message, stats)
    if frame is not None:
        transport.write(frame)
    return frame is not None


def http_cycle(send: Any) -> Any:
    """uvicorn's httptools request-response cycle behind an HTTP ``send``, or None."""
    return _send_of(send, UVICORN_HTTPTOOLS, "RequestResponseCycle")


def response_writer(cycle: Any, report: FastPathReport) -> ResponseWriter | None:
    """uvicorn (httptools). Through ASGI each body costs uvicorn's ``send`` coroutine and a join of the chunk's
    three parts. Here: ``transport.write`` of the chunk built once per body, while the response is streaming
    and chunked and uvicorn's flow control is not paused (above the transport's high-water mark ``send`` waits,
    and so the outbox queues)."""
    problem = lacking((UVICORN_HTTP_CYCLE, cycle), (UVICORN_FLOW, getattr(cycle, "flow", None)))
    stats = report.admit("uvicorn", problem, "httptools", sse=True)
    if stats is None:
        return None
    transport = cycle.transport
    flow = cycle.flow

    def ready() -> bool:
        return bool(
            mid_stream(cycle.response_started, cycle.chunked_encoding, cycle.response_complete, cycle.disconnected)
            and not flow.write_paused
        )

    def write(body: bytes) -> None:
        transport.write(chunks.counted(body, stats))

    return ResponseWriter(ready, write)


def release_handshake(protocol: Any) -> bool:
    conn = getattr(protocol, "conn", None)
    if conn is None or UVICORN_HANDSHAKE.missing(protocol) or WEBSOCKETS_HANDSHAKE.missing(conn):
        return False
    # Accepted (not refused, not a denial response being streamed): send() reads the response only before the
    # handshake completes and handle_connect only on the request's arrival (tests/test_server_contract.py).
    if protocol.handshake_complete is not True or protocol.initial_response is not None or protocol.close_sent:
        return False
    headers = getattr(protocol.request, "headers", None)
    if headers is not None and not WEBSOCKETS_HEADERS.missing(headers):
        headers.clear()  # the parser generator keeps the request itself (tests/test_server_contract.py)
    protocol.request = None
    protocol.response = None
    conn.available_extensions = None  # read by accept() only (the extensions in use are conn.extensions)
    return True


# -- uvicorn: what the adapter sets up in front of the application --------------------------------------------

UVICORN_HOOKS = ServerHooks()


def install_uvicorn_hooks(header_timeout: float | None) -> None:
    """Under uvicorn (its httptools and websockets-sansio modules loaded), once per process: every connection's
    scope carries uvicorn's own ``send`` (``set_server_send``: the cycle's, the WebSocket protocol's), so ASGI
    middleware cannot hide it from the fast paths; and (httptools) a connection whose first request's headers
    are not in ``header_timeout`` seconds after it opened is closed (uvicorn has no such deadline: its
    keep-alive timeout starts after a response). Bodies need no hook: uvicorn stops reading the socket while
    the application does not ask for the body, so ``BodySizeLimit``'s 413 comes before it is read."""
    UVICORN_HOOKS.header_timeout = header_timeout
    if UVICORN_HOOKS.installed:
        return
    if "uvicorn" not in sys.modules:  # not loaded by uvicorn
        return
    UVICORN_HOOKS.installed = True
    # Imported here: uvicorn may load the application before its protocol modules.
    http, sansio = _module(UVICORN_HTTPTOOLS), _module(UVICORN_SANSIO)
    for module, name in ((http, "RequestResponseCycle"), (sansio, "WebSocketsSansIOProtocol")):
        cls = getattr(module, name, None)
        if cls is not None and hasattr(cls, "run_asgi"):
            cls.run_asgi = _with_server_send(cls.run_asgi)
    protocol = getattr(http, "HttpToolsProtocol", None)
    if protocol is None:
        return
    missing = UVICORN_HTTPTOOLS_PROTOCOL.missing(protocol)
    if missing:
        logger.warning(
            "%s: no header deadline: %s has no %s. docs/servers.md lists the versions tested.",
            server_version("uvicorn"),
            UVICORN_HTTPTOOLS_PROTOCOL.holder,
            ", ".join(missing),
        )
        return
    connection_made = protocol.connection_made

    def connection_made_with_deadline(self: Any, transport: Any) -> None:
        connection_made(self, transport)
        timeout = UVICORN_HOOKS.header_timeout
        if timeout is not None:
            self.loop.call_later(timeout, _headers_deadline, self)

    protocol.connection_made = connection_made_with_deadline


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:  # httptools (or websockets) not installed: uvicorn uses h11 (or wsproto), no hooks
        return None


def _with_server_send(run_asgi: Any) -> Any:
    @functools.wraps(run_asgi)
    def run_asgi_with_send(self: Any, *args: Any) -> Any:
        scope = getattr(self, "scope", None)
        if isinstance(scope, dict):
            set_server_send(scope, self.send)
        return run_asgi(self, *args)

    return run_asgi_with_send


def _headers_deadline(protocol: Any) -> None:
    """Close a connection still waiting for its first request's headers (no cycle made, not upgraded)."""
    transport = getattr(protocol, "transport", None)
    if (
        transport is None
        or getattr(protocol, "cycle", True) is not None
        or transport.is_closing()
        or transport.get_protocol() is not protocol
    ):
        return
    transport.close()
