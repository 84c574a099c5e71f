"""The contract between django_pulse and the servers' internals, and what every server module shares.

The names the fast paths (and the shutdown hooks, and the handshake release) read on each server's objects are
declared here once, as ``Requirement``s; the server modules check them when a connection opens, and
``tests/test_server_contract.py`` checks them on the real objects of the installed versions (docs/servers.md
lists the versions tested). Also here: the report of the path each server takes (``FastPathReport``), and the
bytes every server writes the same way (``text_frame``, ``http_chunk``) with their per-message caches.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = [
    "DAPHNE_BODY",
    "DAPHNE_CONNECTION_REQUEST",
    "DAPHNE_FACTORY",
    "DAPHNE_HANDSHAKE",
    "DAPHNE_PROTOCOL",
    "DAPHNE_REQUEST",
    "DAPHNE_SERVER",
    "DISTRIBUTIONS",
    "GRANIAN_SIGNALS",
    "REQUIREMENTS",
    "SERVER_SEND",
    "TWISTED_HTTP_CHANNEL",
    "TWISTED_REACTOR",
    "TWISTED_TRANSPORT",
    "UVICORN_FLOW",
    "UVICORN_HANDSHAKE",
    "UVICORN_HTTPTOOLS_PROTOCOL",
    "UVICORN_HTTP_CYCLE",
    "UVICORN_PROTOCOL",
    "WEBSOCKETS_CONNECTION",
    "WEBSOCKETS_HANDSHAKE",
    "WEBSOCKETS_HEADERS",
    "WEBSOCKETS_REQUEST",
    "DirectWriter",
    "FastPathReport",
    "Requirement",
    "ResponseWriter",
    "ServerHooks",
    "ServerPath",
    "chunks",
    "frames",
    "http_chunk",
    "lacking",
    "logger",
    "mid_stream",
    "refusal",
    "server_send",
    "server_version",
    "set_server_send",
    "text_frame",
]

# One logger for every server module: the lines an operator looks for (docs/servers.md) come from one name.
logger = logging.getLogger("django_pulse.server._io")

DirectWriter = Callable[[dict[str, Any]], bool]


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


def lacking(*checks: tuple[Requirement, Any]) -> str:
    """What the objects lack of their ``Requirement``s, as a drift reason (``"X has no a, b; Y has no c"``);
    empty when they have it all. An object that is None is not checked (the requirement of what holds it names
    the attribute it was read from)."""
    found = ((requirement, requirement.missing(obj)) for requirement, obj in checks if obj is not None)
    return "; ".join(f"{requirement.holder} has no {', '.join(names)}" for requirement, names in found if names)


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
# Not the fast path: what the adapter sets up in front of the application (the server's send in the scope, the
# body limit before buffering, the header deadline; docs/servers.md, "In front of the application").
DAPHNE_SERVER = Requirement(
    "daphne",
    "daphne",
    "daphne's Server (it makes each connection's scope and send)",
    ("create_application", "handle_reply"),
)
DAPHNE_BODY = Requirement(
    "daphne",
    "Twisted",
    "daphne's WebRequest (Twisted's http.Request: the body as it arrives)",
    ("gotLength", "handleContentChunk"),
)
DAPHNE_FACTORY = Requirement(
    "daphne", "daphne", "daphne's HTTPFactory (one HTTPChannel per connection)", ("buildProtocol",)
)
UVICORN_HTTPTOOLS_PROTOCOL = Requirement(
    "uvicorn",
    "uvicorn",
    "uvicorn's HttpToolsProtocol (its connection_made; the deadline reads loop, cycle and transport)",
    ("connection_made",),
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
    DAPHNE_SERVER,
    DAPHNE_BODY,
    DAPHNE_FACTORY,
    UVICORN_HTTPTOOLS_PROTOCOL,
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
        shown = {name: getattr(self, name) for name in ("version", "path", "reason", "drift", "connections")}
        return {**shown, "directFrames": self.frames}


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

    def admit(self, server: str, problem: str, how: str, *, sse: bool = False) -> ServerPath | None:
        """A connection of ``server`` whose internals were checked: with a ``problem`` the ASGI path (drift) and
        None; else the fast path (``how`` it writes) and its entry, counting the connection."""
        if problem:
            self.decide(server, "asgi", problem, drift=True, sse=sse)
            return None
        entry = self.decide(server, "direct", how, sse=sse)
        entry.connections += 1
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

    def counted(self, message: dict[str, Any], stats: ServerPath) -> bytes | None:
        """``get``, counting a frame in ``stats`` (it is about to be written directly)."""
        frame = self.get(message)
        if frame is not None:
            stats.frames += 1
        return frame


frames = _FrameCache()


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

    def counted(self, body: bytes, stats: ServerPath) -> bytes:
        """``get``, counting a frame in ``stats`` (it is about to be written directly)."""
        stats.frames += 1
        return self.get(body)


chunks = _ChunkCache()


class ResponseWriter:
    """Writes body chunks of one streamed (chunked) HTTP/1.1 response to its socket, bypassing the server's
    ``send``. ``ready()``: True when a body written now goes straight out, in order with what ``send`` wrote
    before (the response started, is chunked, not finished, the connection open and the server not holding
    writes back); then ``write(body)`` writes it. When ``ready()`` is False the caller uses ``send``."""

    __slots__ = ("ready", "write")

    def __init__(self, ready: Callable[[], bool], write: Callable[[bytes], None]) -> None:
        self.ready = ready
        self.write = write


def mid_stream(started: bool, chunked: bool, finished: bool, disconnected: bool) -> bool:
    """The response's part of ``ResponseWriter.ready``, whatever the server calls its flags: the response has
    started, is chunked, is not finished, and the client has not gone."""
    return started and chunked and not finished and not disconnected


# -- in front of the application -------------------------------------------------------------------------------

# The scope extension carrying the server's own ``send`` (``scope["extensions"][SERVER_SEND]``), set by the
# adapter where the server makes the scope, before any ASGI middleware runs. Middleware that copies the scope
# (Channels' URLRouter, most wrappers: ``dict(scope, ...)``) shares its ``extensions`` dict, so the server's send
# is found behind any ``send`` a middleware passes on: the buffer probe, the slow-consumer cut and the fast paths
# read it; messages still go through the ``send`` the application was given.
SERVER_SEND = "django_pulse.server_send"


def set_server_send(scope: dict[str, Any], send: Any) -> None:
    """Put the server's own ``send`` in ``scope`` (where the server makes it)."""
    extensions = scope.get("extensions")
    if extensions is None:
        extensions = scope["extensions"] = {}
    extensions[SERVER_SEND] = send


def server_send(scope: Any, send: Any) -> Any:
    """The server's own ``send`` behind ``send`` (the one the connection's application was given, maybe a
    middleware's): the scope's ``SERVER_SEND`` extension when the adapter set it, else ``send`` itself. Taken
    once: the extension is removed, so the scope does not keep it for the connection's life."""
    extensions = scope.get("extensions") if isinstance(scope, dict) else None
    if not isinstance(extensions, dict):
        return send
    found = extensions.pop(SERVER_SEND, None)
    if not extensions:
        # Only ours was there (daphne makes no extensions): the scope is as the server made it, and the dict,
        # which the server's own scope still holds, shrinks back to an empty one's 64 bytes (from ~190).
        extensions.clear()
        del scope["extensions"]
    return send if found is None else found


class ServerHooks:
    """What one server's hooks in front of the application enforce (``install_*_hooks``), and whether they are
    installed in this process."""

    __slots__ = ("header_timeout", "installed", "max_body_size")

    def __init__(self) -> None:
        self.installed = False
        self.max_body_size: int | None = None
        self.header_timeout: float | None = None


def refusal() -> bytes:
    """The whole 413 response the adapter writes itself for a body refused before it is read (the body
    ``BodySizeLimit`` answers with), closing the connection."""
    from ..body_limit import REFUSAL_BODY

    return (
        b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(REFUSAL_BODY), REFUSAL_BODY)
    )
