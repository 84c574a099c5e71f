"""The fast path's contract with the servers' internals (docs/servers.md): every name django_pulse.server._io
reads exists, with the expected shape, on the REAL objects of the installed daphne, Twisted, autobahn, uvicorn and
websockets; real server processes take the fast path (and granian the ASGI path); a server whose internals differ
is logged once at WARNING and still delivers through ASGI.

Run them against the oldest and newest versions tested with ``nox -s servers`` (.ci/constraints/servers-*.txt).
A failure here names the server, its version and the missing name: update django_pulse/server/_io/, or the
version table.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import inspect
import itertools
import json
import logging
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from typing import Any

import pytest

from django_pulse.server import _io as server_io
from django_pulse.server._io import close_going_away, contract, daphne_protocol, direct_writer, response_writer
from django_pulse.server._io.contract import (
    DAPHNE_PROTOCOL,
    DAPHNE_REQUEST,
    GRANIAN_SIGNALS,
    TWISTED_REACTOR,
    TWISTED_TRANSPORT,
    UVICORN_FLOW,
    UVICORN_HTTP_CYCLE,
    UVICORN_PROTOCOL,
    WEBSOCKETS_CONNECTION,
    FastPathReport,
    Requirement,
    server_version,
)
from tests.support.rawws import RawWebSocket
from tests.support.servers import LiveServer, free_port, live_server

pytestmark = pytest.mark.server_internals


def assert_has(requirement: Requirement, obj: Any) -> None:
    missing = requirement.missing(obj)
    assert not missing, (
        f"{server_version(requirement.server)}: {requirement.holder} has no {', '.join(missing)}; under this "
        f"{requirement.distribution} ({metadata.version(requirement.distribution)}) the fast path falls back to "
        "ASGI. Update django_pulse/server/_io/ and docs/servers.md."
    )


def version_of(distribution: str) -> str:
    return f"{distribution} {metadata.version(distribution)}"


# -- daphne, autobahn, Twisted: the real classes, in this process ------------------------------------------------


async def test_daphne_passes_its_handle_reply_bound_to_the_protocol_as_send() -> None:
    """How server_io recognises daphne: the ``send`` of an application daphne creates is
    ``functools.partial(Server.handle_reply, protocol)``."""
    from daphne.server import Server

    sends: list[Any] = []

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        sends.append(send)

    # Never run: create_application is all this test calls (daphne refuses a server without endpoints).
    server = Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False)
    protocol = object()
    server.connections = {protocol: {}}
    assert server.create_application(protocol, {"type": "websocket"}) is not None
    await server.connections[protocol]["application_instance"]
    send = sends[0]
    assert isinstance(send, functools.partial), f"{version_of('daphne')}: send is {send!r}, not a functools.partial"
    assert daphne_protocol(send) is protocol, (
        f"{version_of('daphne')}: send is partial({getattr(send.func, '__qualname__', send.func)!r}, ...), "
        "not partial(Server.handle_reply, protocol): server_io no longer recognises daphne"
    )


def test_daphne_has_what_the_adapter_sets_up_in_front_of_the_application() -> None:
    """The hooks of ``install_daphne_hooks`` (the server's send in the scope, the body refused before it is
    buffered, the header deadline): the methods they wrap, called as they are wrapped, and the channel behind
    Twisted's protocol wrapper that the deadline reads."""
    from daphne.http_protocol import HTTPFactory, WebRequest
    from daphne.server import Server
    from twisted.web.http import HTTPChannel

    for requirement, obj in ((contract.DAPHNE_SERVER, Server), (contract.DAPHNE_BODY, WebRequest)):
        assert_has(requirement, obj)
    assert_has(contract.DAPHNE_FACTORY, HTTPFactory)
    assert list(inspect.signature(Server.create_application).parameters) == ["self", "protocol", "scope"]
    assert list(inspect.signature(WebRequest.gotLength).parameters) == ["self", "length"]
    assert list(inspect.signature(WebRequest.handleContentChunk).parameters) == ["self", "data"]
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False)
    protocol = HTTPFactory(server).buildProtocol(None)
    assert isinstance(getattr(protocol, "_channel", protocol), HTTPChannel), (
        f"{version_of('Twisted')}: HTTPFactory builds {type(protocol).__qualname__} without an HTTPChannel as its "
        "_channel: the header deadline leaves daphne's connections alone"
    )


def test_uvicorn_has_what_the_adapter_sets_up_in_front_of_the_application() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    assert_has(contract.UVICORN_HTTPTOOLS_PROTOCOL, HttpToolsProtocol)
    for cls in (RequestResponseCycle, WebSocketsSansIOProtocol):
        source = inspect.getsource(cls.run_asgi)
        assert "self.scope" in source and "self.send" in source, f"{version_of('uvicorn')}: {cls.__qualname__}"
    for name in ("loop", "cycle", "transport"):
        assert f"self.{name} =" in inspect.getsource(HttpToolsProtocol), f"{version_of('uvicorn')}: no {name}"


def test_daphne_protocol_is_autobahns() -> None:
    from autobahn.websocket.protocol import WebSocketProtocol
    from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol

    assert issubclass(DaphneWebSocketProtocol, WebSocketProtocol), (
        f"{version_of('daphne')}: daphne.ws_protocol.WebSocketProtocol is no longer an autobahn WebSocketProtocol "
        f"({version_of('autobahn')})"
    )
    assert isinstance(getattr(WebSocketProtocol, "STATE_OPEN", None), int), (
        f"{version_of('autobahn')}: WebSocketProtocol has no integer STATE_OPEN"
    )


@contextlib.contextmanager
def autobahn_connection() -> Any:
    """A real autobahn server protocol after a real opening handshake, on Twisted's in-memory transport."""
    import daphne.server  # noqa: F401  (installs the asyncio reactor first, as daphne does)
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    factory = WebSocketServerFactory("ws://127.0.0.1:9000")
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    transport.clear()
    try:
        yield protocol, transport
    finally:
        protocol.connectionLost(Failure(ConnectionDone()))


def test_autobahn_protocol_has_what_the_fast_path_reads() -> None:
    from autobahn.websocket.protocol import WebSocketProtocol

    with autobahn_connection() as (protocol, _):
        assert_has(DAPHNE_PROTOCOL, protocol)
        assert protocol.state == WebSocketProtocol.STATE_OPEN, f"{version_of('autobahn')}: state {protocol.state}"
        assert len(protocol.send_queue) == 0 and protocol._perMessageCompress is None, version_of("autobahn")


def test_autobahn_sends_a_1001_close_frame_when_asked_directly() -> None:
    """``close_going_away``: autobahn's ``sendCloseFrame(code=, isReply=)`` writes the close frame daphne's
    ``websocket.close`` refuses to (1001, going away)."""
    with autobahn_connection() as (protocol, transport):
        assert close_going_away(protocol, 1001), version_of("autobahn")
        assert transport.value() == b"\x88\x02\x03\xe9", f"{version_of('autobahn')}: wrote {transport.value()!r}"


def test_twisted_transport_has_what_the_fast_path_reads() -> None:
    """A real ``tcp.Connection`` on a socket pair: the names exist, and the buffer probe counts what ``write``
    holds back (Twisted buffers every write until the reactor flushes it)."""
    import daphne.server  # noqa: F401
    from twisted.internet import reactor, tcp

    left, right = socket.socketpair()
    left.setblocking(False)
    try:
        conn = tcp.Connection(left, None, reactor)
        conn.connected = 1  # as tcp.Server does once accepted
        assert_has(TWISTED_TRANSPORT, conn)
        assert server_io.daphne.buffered(conn) == 0, version_of("Twisted")
        conn.write(b"abc")
        assert server_io.daphne.buffered(conn) == 3, (
            f"{version_of('Twisted')}: dataBuffer/offset/_tempDataLen no longer count what write() holds"
        )
        conn.stopWriting()
    finally:
        left.close()
        right.close()


def test_twisted_reactor_has_what_the_daphne_shutdown_hook_reads() -> None:
    """The hook that closes every connection with 1001 before daphne's reactor stops: the asyncio reactor daphne
    installs, its system event triggers, and ``Deferred.fromFuture``."""
    import daphne.server  # noqa: F401
    from twisted.internet import defer, reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    assert isinstance(reactor, AsyncioSelectorReactor), f"{server_version('daphne')}: reactor {type(reactor)}"
    assert_has(TWISTED_REACTOR, reactor)
    assert callable(getattr(defer.Deferred, "fromFuture", None)), f"{version_of('Twisted')}: Deferred.fromFuture"


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _granian_hook_logs_drift() -> bool:
    """install_granian_shutdown without granian._signals: a WARNING naming the version, nothing installed."""
    import logging

    from django_pulse.server._io import install_granian_shutdown

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("django_pulse.server._io")
    log.addHandler(handler)
    try:

        async def nothing() -> None:
            return None

        install_granian_shutdown(nothing)
    finally:
        log.removeHandler(handler)
    return any(r.levelno == logging.WARNING and "graceful shutdown off" in r.getMessage() for r in records)


def test_granian_workers_take_their_signal_handling_from_set_loop_signals() -> None:
    """The granian shutdown hook wraps ``granian._signals.set_loop_signals``, which each ASGI worker imports when
    it starts (function-local, so the wrapped one is found) and whose event it sets to stop serving."""
    import inspect

    if not _has_module("granian._signals"):
        # granian 1.x (the oldest supported) has no such module: the hook must say so once and change nothing.
        assert _granian_hook_logs_drift(), server_version("granian")
        return
    from granian import _signals
    from granian.server import mp

    assert_has(GRANIAN_SIGNALS, _signals)
    source = inspect.getsource(mp)
    assert source.count("from granian._signals import set_loop_signals") >= 2, server_version("granian")
    assert "shutdown_event = set_loop_signals(loop)" in source, server_version("granian")


# -- uvicorn and websockets: a real uvicorn in this process --------------------------------------------------------

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@contextlib.asynccontextmanager
async def uvicorn_serving(app: ASGIApp, **options: Any) -> AsyncIterator[int]:
    """uvicorn serving ``app`` on a free port in this event loop, with its default WebSocket and HTTP
    implementations unless ``options`` (``uvicorn.Config``'s) say otherwise."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False, **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def on_uvicorn_connection(check: Callable[[Any], Awaitable[str]]) -> str:
    """Open a WebSocket to a real uvicorn; ``check(send)`` runs inside the app, with the connection accepted,
    and returns a text sent to the client as a check that the connection still works."""
    from websockets.asyncio.client import connect

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": await check(send)})
        await receive()

    async with uvicorn_serving(app) as port, connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        return str(await asyncio.wait_for(ws.recv(), 10))


async def test_uvicorn_send_is_the_sansio_protocols_bound_send() -> None:
    async def check(send: Any) -> str:
        owner = getattr(send, "__self__", None)
        assert server_io.uvicorn.websocket_protocol(send) is not None, (
            f"{server_version('uvicorn')}: its send is {send!r} on {type(owner).__module__}.{type(owner).__qualname__}"
            f", not {server_io.uvicorn.UVICORN_SANSIO}.WebSocketsSansIOProtocol.send: server_io no longer recognises it"
        )
        return "ok"

    assert await on_uvicorn_connection(check) == "ok"


async def test_uvicorn_protocol_has_what_the_fast_path_reads() -> None:
    async def check(send: Any) -> str:
        protocol = send.__self__
        assert_has(UVICORN_PROTOCOL, protocol)
        assert isinstance(protocol.writable, asyncio.Event), f"{server_version('uvicorn')}: writable"
        assert isinstance(protocol.transport, asyncio.Transport), f"{server_version('uvicorn')}: transport"
        assert protocol.handshake_complete and not protocol.close_sent and not protocol.disconnected
        assert protocol.initial_response is None
        return "ok"

    assert await on_uvicorn_connection(check) == "ok"


async def test_websockets_connection_has_what_the_fast_path_reads() -> None:
    from websockets.protocol import State

    async def check(send: Any) -> str:
        conn = send.__self__.conn
        assert_has(WEBSOCKETS_CONNECTION, conn)
        assert conn.state is State.OPEN, f"{version_of('websockets')}: state {conn.state!r} after the accept"
        assert not conn.extensions and not conn.expect_continuation_frame and conn.writes == [], (
            f"{version_of('websockets')}: extensions/expect_continuation_frame/writes"
        )
        return "ok"

    assert await on_uvicorn_connection(check) == "ok"


async def test_the_direct_writer_writes_the_frame_on_a_real_uvicorn_connection() -> None:
    report = FastPathReport()

    async def check(send: Any) -> str:
        writer = direct_writer(send, report)
        assert writer is not None, report.as_dict()
        assert writer({"type": "websocket.send", "text": "written directly ✓"})
        return "then through send"

    from websockets.asyncio.client import connect

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": await check(send)})
        await receive()

    async with uvicorn_serving(app) as port, connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)] == ["written directly ✓", "then through send"]
    assert report.as_dict()["uvicorn"]["directFrames"] == 1


# -- drift: a recognised server whose internals differ ---------------------------------------------------------

FUTURE_NAME = "renamed_by_a_future_uvicorn"


def uvicorn_drifted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, requirement: str
) -> FastPathReport:
    """uvicorn as a future one might be: its ``requirement`` (a name in server_io.uvicorn) also asks for a name
    the installed uvicorn lacks. Returns the runtime's fresh fast-path report; the contract's log is captured."""
    from django_pulse.server.runtime import get_runtime

    report = FastPathReport()
    monkeypatch.setattr(get_runtime(), "fast_path", report)
    real: Requirement = getattr(server_io.uvicorn, requirement)
    future = Requirement(real.server, real.distribution, real.holder, (*real.names, FUTURE_NAME))
    monkeypatch.setattr(server_io.uvicorn, requirement, future)
    caplog.set_level(logging.INFO, logger=contract.logger.name)
    return report


def the_one_warning(caplog: pytest.LogCaptureFixture) -> str:
    """The text of the contract's one WARNING (the test fails on none or several)."""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == contract.logger.name]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    return warnings[0].getMessage()


def drifted_to_asgi(requirement: Requirement) -> dict[str, Any]:
    """A report's entry (version left out) for a server that drifted on ``requirement``: all through ASGI."""
    reason = f"{requirement.holder} has no {FUTURE_NAME}"
    return {"version": None, "path": "asgi", "reason": reason, "drift": True, "connections": 0, "directFrames": 0}


@pytest.mark.django_db(transaction=True)
async def test_drift_is_a_warning_once_and_delivery_goes_through_asgi(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pulse app under a real uvicorn whose protocol lacks a name the fast path reads (as a future uvicorn
    might): one WARNING for the process naming uvicorn's version and the fallback, and every frame arrives
    through the ASGI send."""
    from websockets.asyncio.client import connect

    from django_pulse import pulse
    from tests.asgi import application
    from tests.support.wsutil import token

    report = uvicorn_drifted(monkeypatch, caplog, "UVICORN_PROTOCOL")

    async with uvicorn_serving(application) as port:
        clients = []
        for name in ("ann", "bob"):
            ws = await connect(f"ws://127.0.0.1:{port}/pulse/ws/", compression=None)
            await ws.send(json.dumps({"action": "auth", "token": await token(name)}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "connected"
            await ws.send(json.dumps({"action": "subscribe", "channel": "drift", "ref": 1}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "ok"
            clients.append(ws)
        for i in range(3):
            await pulse.apublish("drift", "tick", {"i": i})
        for ws in clients:
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(3)]
            assert [f["data"]["i"] for f in frames] == [0, 1, 2]
            await ws.close()

    text = the_one_warning(caplog)
    assert server_version("uvicorn") in text and "ASGI send" in text and FUTURE_NAME in text, text
    assert report.as_dict()["uvicorn"] | {"version": None} == drifted_to_asgi(UVICORN_PROTOCOL)


def test_a_daphne_send_that_is_not_handle_reply_is_drift(caplog: pytest.LogCaptureFixture) -> None:
    """daphne's send, under another name (as a future daphne might call it): ASGI path, logged as drift."""
    from daphne import server as daphne_server

    report = FastPathReport()

    class Server:
        async def handle_reply_renamed(self, protocol: Any, message: dict[str, Any]) -> None:
            return None

    Server.handle_reply_renamed.__module__ = daphne_server.__name__
    caplog.set_level(logging.WARNING, logger=contract.logger.name)
    assert direct_writer(functools.partial(Server().handle_reply_renamed, object()), report) is None
    assert report.as_dict()["daphne"]["drift"] is True
    assert [r.getMessage() for r in caplog.records if "daphne" in r.getMessage()], caplog.text


async def test_a_uvicorn_send_under_another_name_is_drift() -> None:
    """The sansio protocol's bound method under another name (as a future uvicorn might rename ``send``): the
    ASGI path, reported as drift, naming what was found."""
    report = FastPathReport()

    async def check(send: Any) -> str:
        assert direct_writer(send.__self__.receive, report) is None
        return "ok"

    assert await on_uvicorn_connection(check) == "ok"
    entry = report.as_dict()["uvicorn"]
    assert entry["drift"] is True and ".receive, not " in entry["reason"], entry


# -- real server processes ---------------------------------------------------------------------------------------


async def five_messages_to_three_subscribers(server: LiveServer, channel: str) -> dict[str, Any]:
    """Three raw WebSocket subscribers of ``channel`` each get five published messages, in order; then the
    server's fast-path report."""
    clients = [await RawWebSocket.subscriber(server, f"{channel}-{i}", channel) for i in range(3)]
    for i in range(5):
        await asyncio.to_thread(server.publish, channel, "tick", {"i": i})
    for ws in clients:
        assert [(await asyncio.wait_for(ws.recv_json(), 10))["data"]["i"] for _ in range(5)] == list(range(5))
        ws.abort()
    return await asyncio.to_thread(server.fast_path)


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
@pytest.mark.parametrize("app", ["tests.asgi:application", "tests.asgi:wrapped_application"], ids=["plain", "wrapped"])
async def test_a_real_server_takes_the_fast_path_and_reports_its_versions(server_name: str, app: str) -> None:
    """Also behind a project's middleware that passes its own ``send`` (``wrapped``): the server's send reaches
    the connection in the scope (docs/servers.md, "In front of the application")."""
    with live_server(server=server_name, pulse={"HISTORY_SIZE": 0}, app=app) as server:
        report = await five_messages_to_three_subscribers(server, "versions")
    entry = report[server_name]
    assert (entry["path"], entry["drift"]) == ("direct", False), entry
    assert entry["version"] == server_version(server_name), entry
    assert entry["connections"] == 3 and entry["directFrames"] >= 3 * 5, entry
    assert "fast path off" not in server.log(), server.log()[-2000:]


@pytest.mark.processes
@pytest.mark.slow
async def test_granian_takes_the_asgi_path_and_delivers() -> None:
    with live_server(server="granian", pulse={"HISTORY_SIZE": 0}) as server:
        report = await five_messages_to_three_subscribers(server, "granian")
    assert set(report) == {"granian"}, report
    entry = report["granian"]
    assert (entry["path"], entry["drift"], entry["directFrames"]) == ("asgi", False, 0), entry
    assert entry["version"] == server_version("granian"), entry


# -- SSE: streamed HTTP responses (_io.response_writer) ---------------------------------------------------

# What the SSE transport writes first (headers and its first body), then a few bodies of every chunk-size shape:
# one and two hex digits, a multi-byte UTF-8 event, one over 64 KB.
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
SSE_BODIES = [b"x", b"data: 15 bytes.\n", b"data: " + "é".encode() * 120 + b"\n\n", b"data: " + b"z" * 70_000 + b"\n\n"]


def test_twisted_frames_a_chunk_as_http_chunk_does() -> None:
    from twisted.web.http import toChunk

    for body in SSE_BODIES:
        assert b"".join(toChunk(body)) == contract.http_chunk(body), f"{version_of('Twisted')}: toChunk({body[:20]!r})"


@contextlib.asynccontextmanager
async def daphne_on_socketpair(
    application: Any, *, websocket: bool = False
) -> AsyncIterator[tuple[Any, Any, socket.socket, Callable[[], bytes]]]:
    """A real daphne ``Server`` running ``application`` and its HTTP factory's real channel on a real
    ``tcp.Connection`` (one end of a socket pair; with ``websocket``, the server's WebSocket factory too):
    yields the channel, the Twisted connection, the client's socket and ``received()``, what the client end has
    received since the last call (Twisted's buffer is flushed by hand: the reactor does not run in these tests).
    On exit the sockets are closed and the application's tasks are awaited (cancelled for a WebSocket)."""
    import daphne.server  # noqa: F401  (installs the asyncio reactor first, as daphne does)
    from daphne.http_protocol import HTTPFactory
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet import reactor, tcp
    from twisted.internet.address import IPv4Address

    server = Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"], signal_handlers=False)
    server.connections = {}
    if websocket:
        server.ws_factory = WebSocketFactory(server, server=server.server_name)
        server.ws_factory.setProtocolOptions(allowNullOrigin=True)
    factory = HTTPFactory(server)

    class Connection(tcp.Connection):  # type: ignore[misc]
        """Twisted's TCP connection with the addresses its ``tcp.Server`` subclass would give."""

        def getPeer(self) -> IPv4Address:
            return IPv4Address("TCP", "127.0.0.1", 50000)

        def getHost(self) -> IPv4Address:
            return IPv4Address("TCP", "127.0.0.1", 8000)

    left, right = socket.socketpair()
    left.setblocking(False)
    right.setblocking(False)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    conn = Connection(left, protocol, reactor)
    conn.connected = 1
    protocol.makeConnection(conn)

    def received() -> bytes:
        conn.doWrite()  # what the reactor does when the socket is writable
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while data := right.recv(1 << 20):
                chunks.append(data)
        return b"".join(chunks)

    try:
        yield protocol, conn, right, received
    finally:
        conn.stopWriting()
        conn.stopReading()
        left.close()
        right.close()
        for entry in server.connections.values():
            task = entry.get("application_instance")
            if task is not None:
                if websocket:
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, 5)


@contextlib.asynccontextmanager
async def daphne_http_response() -> AsyncIterator[tuple[Any, Callable[[], bytes]]]:
    """A real daphne ``Server`` and its HTTP factory's real channel on a real ``tcp.Connection`` (one end of a
    socket pair), fed a real request: yields the ``send`` daphne gives the application once the response started
    with ``SSE_HEADERS`` and a first body, and ``received()``, what the client end has received since the last
    call (Twisted's buffer is flushed by hand: the reactor does not run in this test)."""

    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b":ok\n\n", "more_body": True})
        started.set_result(send)
        await done.wait()

    async with daphne_on_socketpair(application) as (protocol, _conn, _client, received):
        try:
            protocol.dataReceived(
                b"GET /pulse/sse/?ticket=t HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            )
            send = await asyncio.wait_for(started, 10)
            head = received()
            assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head.lower(), head
            assert head.endswith(b"\r\n\r\n" + contract.http_chunk(b":ok\n\n")), head
            yield send, received
        finally:
            done.set()


async def test_daphne_http_send_is_handle_reply_bound_to_a_twisted_request_with_what_the_sse_path_reads() -> None:
    from twisted.internet.tcp import Connection
    from twisted.web.http import Request

    async with daphne_http_response() as (send, _):
        request = daphne_protocol(send)
        assert request is not None, f"{version_of('daphne')}: the HTTP send is {send!r}, not partial(handle_reply, ...)"
        assert isinstance(request, Request), f"{version_of('daphne')}: {type(request)} is not a twisted http.Request"
        assert_has(DAPHNE_REQUEST, request)
        assert isinstance(request.transport, Connection), f"{version_of('Twisted')}: {type(request.transport)}"
        assert_has(TWISTED_TRANSPORT, request.transport)
        assert request.startedWriting and request.chunked and not request.finished and not request._disconnected, (
            f"{version_of('Twisted')}: a streaming chunked response is not seen as such by the SSE fast path"
        )
        report = FastPathReport()
        writer = response_writer(send, report)
        assert writer is not None and writer.ready(), report.as_dict()
        assert report.as_dict()["daphne-sse"]["path"] == "direct"


async def test_daphne_the_sse_fast_path_writes_the_bytes_daphnes_send_writes() -> None:
    """Byte for byte: each body through daphne's ``send`` (``handle_reply``, Twisted's ``Request.write``) and
    through the direct writer reaches the client as the same bytes, and the access log's size counts both."""
    async with daphne_http_response() as (send, received):
        request = daphne_protocol(send)
        writer = response_writer(send, FastPathReport())
        assert writer is not None
        for body in SSE_BODIES:
            before = request.sentLength
            await send({"type": "http.response.body", "body": body, "more_body": True})
            through_asgi = received()
            assert request.sentLength == before + len(body)
            assert writer.ready()
            writer.write(body)
            direct = received()
            assert direct == through_asgi == contract.http_chunk(body), (
                f"{server_version('daphne')}: {len(body)} bytes: direct {direct[:40]!r} vs ASGI {through_asgi[:40]!r}"
            )
            assert request.sentLength == before + 2 * len(body)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        assert received().endswith(b"0\r\n\r\n")
        assert not writer.ready(), "the response is finished: the direct writer must refuse"


async def on_uvicorn_http_response(check: Callable[[Any, Callable[[], Awaitable[bytes]]], Awaitable[None]]) -> None:
    """A real uvicorn (default HTTP implementation) streaming a response to a raw client: ``check(send,
    received)`` runs inside the application once the response started; ``received()`` reads what the client got
    since the last call."""
    finished = asyncio.Event()
    reader: asyncio.StreamReader | None = None

    async def received() -> bytes:
        assert reader is not None
        data = await asyncio.wait_for(reader.read(1 << 20), 10)
        while True:  # until the pipe is empty for a moment
            try:
                data += await asyncio.wait_for(reader.read(1 << 20), 0.05)
            except TimeoutError:
                return data

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b":ok\n\n", "more_body": True})
        head = await received()
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(contract.http_chunk(b":ok\n\n")), head
        try:
            await check(send, received)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            finished.set()

    async with uvicorn_serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /pulse/sse/?ticket=t HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        await asyncio.wait_for(finished.wait(), 20)
        writer.close()


async def test_uvicorn_http_send_is_the_httptools_cycles_bound_send_with_what_the_sse_path_reads() -> None:
    async def check(send: Any, received: Callable[[], Awaitable[bytes]]) -> None:
        owner = getattr(send, "__self__", None)
        cycle = server_io.uvicorn.http_cycle(send)
        assert cycle is not None, (
            f"{server_version('uvicorn')}: its HTTP send is {send!r} on {type(owner).__module__}."
            f"{type(owner).__qualname__}, not {server_io.uvicorn.UVICORN_HTTPTOOLS}.RequestResponseCycle.send"
        )
        assert_has(UVICORN_HTTP_CYCLE, cycle)
        assert_has(UVICORN_FLOW, cycle.flow)
        assert isinstance(cycle.transport, asyncio.Transport), f"{server_version('uvicorn')}: transport"
        assert cycle.response_started and cycle.chunked_encoding and not cycle.response_complete
        assert not cycle.disconnected and cycle.flow.write_paused is False

    await on_uvicorn_http_response(check)


async def test_uvicorn_the_sse_fast_path_writes_the_bytes_uvicorns_send_writes() -> None:
    report = FastPathReport()

    async def check(send: Any, received: Callable[[], Awaitable[bytes]]) -> None:
        writer = response_writer(send, report)
        assert writer is not None, report.as_dict()
        for body in SSE_BODIES:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            through_asgi = await received()
            assert writer.ready()
            writer.write(body)
            direct = await received()
            assert direct == through_asgi == contract.http_chunk(body), (
                f"{server_version('uvicorn')}: {len(body)} bytes: direct {direct[:40]!r} vs ASGI {through_asgi[:40]!r}"
            )

    await on_uvicorn_http_response(check)
    assert report.as_dict()["uvicorn-sse"] | {"version": None} == {
        "version": None,
        "path": "direct",
        "reason": "httptools",
        "drift": False,
        "connections": 1,
        "directFrames": len(SSE_BODIES),
    }


@pytest.mark.django_db(transaction=True)
async def test_sse_drift_is_a_warning_once_and_events_go_through_asgi(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pulse app's SSE streams under a real uvicorn whose request cycle lacks a name the SSE fast path reads
    (as a future uvicorn might): one WARNING naming uvicorn's version and the fallback, and every event arrives
    through the ASGI send."""
    from django_pulse import pulse
    from tests.asgi import application
    from tests.support.sseclient import sdk_stream
    from tests.support.wsutil import token

    report = uvicorn_drifted(monkeypatch, caplog, "UVICORN_HTTP_CYCLE")

    async with uvicorn_serving(application) as port, contextlib.AsyncExitStack() as stack:
        streams = []
        for name in ("ann", "bob"):
            stream = await stack.enter_async_context(sdk_stream(port, await token(name)))
            assert (await stream.events.next_frame())["action"] == "connected"
            assert (await stream.request({"action": "subscribe", "channel": "drift"}))["action"] == "ok"
            streams.append(stream)
        for i in range(3):
            await pulse.apublish("drift", "tick", {"i": i})
        for stream in streams:
            frames = await stream.events.frames_until(lambda f: f.get("data", {}).get("i") == 2)
            assert [f["data"]["i"] for f in frames if f["action"] == "message"] == [0, 1, 2]

    text = the_one_warning(caplog)
    assert server_version("uvicorn") in text and "SSE fast path off" in text, text
    assert FUTURE_NAME in text, text
    assert report.as_dict()["uvicorn-sse"] | {"version": None} == drifted_to_asgi(UVICORN_HTTP_CYCLE)


async def test_uvicorn_h11_keeps_the_asgi_path_for_sse_without_a_warning() -> None:
    """``--http h11`` frames responses through h11's state machine: the SSE fast path stays off, logged as a
    known ASGI-only setup (INFO), not as drift."""
    report = FastPathReport()
    checked = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        assert response_writer(send, report) is None
        checked.set()
        await send({"type": "http.response.body", "body": b":ok\n\n"})

    async with uvicorn_serving(app, http="h11") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).endswith(contract.http_chunk(b":ok\n\n") + b"0\r\n\r\n")
        writer.close()
    assert checked.is_set()
    entry = report.as_dict()["uvicorn-sse"]
    assert (entry["path"], entry["drift"]) == ("asgi", False) and "h11" in entry["reason"], entry


# -- the opening handshake's state, released once the connection is open (release_handshake) --------------------


def self_reads(cls: type, names: set[str]) -> list[tuple[str, str, list[ast.AST]]]:
    """Every read of ``self.<name>`` (``name`` in ``names``) in ``cls``'s own source: (method, name, the AST
    nodes enclosing it, outermost first)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    reads: list[tuple[str, str, list[ast.AST]]] = []

    def walk(node: ast.AST, method: str, path: list[ast.AST]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            method = node.name
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr in names
            and isinstance(node.ctx, ast.Load)
        ):
            reads.append((method, node.attr, [*path, node]))
        for child in ast.iter_child_nodes(node):
            walk(child, method, [*path, node])

    walk(tree, "", [])
    return reads


def _under_not_handshake_complete(path: list[ast.AST]) -> bool:
    """True when a node is in the body (not the ``else``) of an ``if`` testing ``not self.handshake_complete``."""
    return any(
        isinstance(node, ast.If)
        and "not self.handshake_complete" in ast.unparse(node.test)
        and any(inner is child for child in node.body)
        for node, inner in itertools.pairwise(path)
    )


def test_uvicorn_reads_the_request_and_response_only_during_the_handshake() -> None:
    """``release_handshake`` drops uvicorn's ``request`` and ``response`` once the connection is accepted: that is
    safe while uvicorn reads them only where the request arrives (``handle_connect``) and in ``send`` before the
    handshake completes. A uvicorn that reads them anywhere else fails here."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    reads = self_reads(WebSocketsSansIOProtocol, {"request", "response"})
    assert reads, f"{version_of('uvicorn')}: no read of request/response found: the source changed shape"
    elsewhere = [
        (method, name)
        for method, name, path in reads
        if method != "handle_connect" and not (method == "send" and _under_not_handshake_complete(path))
    ]
    assert not elsewhere, f"{version_of('uvicorn')} reads {elsewhere} after the handshake: update release_handshake"


def test_websockets_reads_the_offered_extensions_only_in_accept() -> None:
    from websockets.server import ServerProtocol

    def callers(name: str) -> set[str]:
        return {method for method, _, _ in self_reads(ServerProtocol, {name})}

    assert callers("available_extensions") == {"process_extensions"}, version_of("websockets")
    assert callers("process_extensions") == {"process_request"}, version_of("websockets")
    assert callers("process_request") == {"accept"}, version_of("websockets")


def test_websockets_parser_reads_the_request_only_before_the_handshake_ends() -> None:
    """websockets' ServerProtocol.parse keeps the opening request as a local for the whole connection (it then
    parses frames with ``yield from super().parse()``); release_handshake empties its headers, which is safe while
    parse reads the request only before that point."""
    from websockets.datastructures import Headers
    from websockets.server import ServerProtocol

    tree = ast.parse(textwrap.dedent(inspect.getsource(ServerProtocol.parse)))
    frames = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.YieldFrom) and ast.unparse(node.value) == "super().parse()"
    ]
    reads = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id == "request"]
    assert len(frames) == 1 and reads and max(reads) < frames[0], (
        f"{version_of('websockets')}: ServerProtocol.parse reads its request at lines {reads}, frames from {frames}"
    )
    assert_has(contract.WEBSOCKETS_HEADERS, Headers())


def test_autobahn_and_daphne_read_the_handshake_state_only_during_the_handshake() -> None:
    """autobahn reads its copies of the request and response only while shaking hands; daphne reads its
    ``request`` only in ``onConnect`` and its ``path`` afterwards (access log lines): what release_handshake
    keeps."""
    from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol
    from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol

    names = set(contract.DAPHNE_HANDSHAKE.names) - {"state", "request"}
    for cls in (WebSocketProtocol, WebSocketServerProtocol, DaphneWebSocketProtocol):
        methods = {method for method, _, _ in self_reads(cls, names)}
        assert methods <= {"processHandshake", "succeedHandshake", "failHandshake"}, (
            f"{version_of('autobahn')}, {version_of('daphne')}: {cls.__qualname__} reads handshake state in {methods}"
        )
    for method, _, path in self_reads(DaphneWebSocketProtocol, {"request"}):
        if method != "onConnect":
            parent = path[-2]
            assert isinstance(parent, ast.Attribute) and parent.attr == "path", (
                f"{version_of('daphne')}: {method} reads self.request beyond its path"
            )


async def test_uvicorn_connection_works_after_its_handshake_state_is_released() -> None:
    """On a real uvicorn (keepalive pings on): released right after the accept, the connection still sends,
    receives, answers pings and closes with the application's code."""
    from websockets.asyncio.client import connect

    released: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        protocol = send.__self__
        assert_has(contract.UVICORN_HANDSHAKE, protocol)
        assert_has(contract.WEBSOCKETS_HANDSHAKE, protocol.conn)
        request = protocol.request
        assert_has(contract.WEBSOCKETS_REQUEST, request)
        assert len(request.headers) > 0
        released["done"] = server_io.release_handshake(send)
        released["state"] = (protocol.request, protocol.response, protocol.conn.available_extensions)
        released["headers"] = len(request.headers)
        await send({"type": "websocket.send", "text": "one"})
        message = await receive()
        await asyncio.sleep(0.3)  # a few keepalive pings
        await send({"type": "websocket.send", "text": "got " + message["text"]})
        await send({"type": "websocket.close", "code": 4321})
        await receive()

    from websockets.exceptions import ConnectionClosed

    async with (
        uvicorn_serving(app, ws_ping_interval=0.05, ws_ping_timeout=5) as port,
        connect(f"ws://127.0.0.1:{port}/", compression=None) as ws,
    ):
        assert await asyncio.wait_for(ws.recv(), 10) == "one"
        await ws.send("two")
        assert await asyncio.wait_for(ws.recv(), 10) == "got two"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.protocol.close_code == 4321  # (ws.close_code: websockets 14+ only)
    assert released == {"done": True, "state": (None, None, None), "headers": 0}, f"{version_of('uvicorn')}: {released}"


def test_release_handshake_ignores_an_unknown_send() -> None:
    async def send(message: dict[str, Any]) -> None:
        pass

    assert not server_io.release_handshake(send)


@contextlib.asynccontextmanager
async def daphne_websocket() -> AsyncIterator[tuple[Any, Any, Any, socket.socket, Callable[[], bytes]]]:
    """A real daphne ``Server``'s HTTP factory channel on a real ``tcp.Connection`` (a socket pair), fed a real
    WebSocket upgrade that daphne hands to its WebSocket protocol: yields the application's ``send`` once it
    accepted, its ``receive``, the Twisted connection, the client's socket and ``received()`` (what the client got
    since the last call; the reactor does not run here, Twisted's buffer is flushed by hand)."""

    accepted: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        accepted.set_result((send, receive))
        await done.wait()

    async with daphne_on_socketpair(application, websocket=True) as (protocol, conn, client, received):
        try:
            protocol.dataReceived(
                b"GET /pulse/ws/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            send, receive = await asyncio.wait_for(accepted, 10)
            assert received().startswith(b"HTTP/1.1 101 "), version_of("daphne")
            yield send, receive, conn, client, received
        finally:
            done.set()


async def test_daphne_connection_works_after_its_handshake_state_is_released() -> None:
    """daphne's protocol after a real upgrade has the handshake state release_handshake drops; released, the
    connection still sends, receives and closes with the application's code, and daphne logs the disconnection
    (it reads the request's path then)."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    from twisted.web.http import HTTPChannel

    async with daphne_websocket() as (send, receive, conn, client, received):
        protocol = daphne_protocol(send)
        assert_has(contract.DAPHNE_HANDSHAKE, protocol)
        assert_has(contract.DAPHNE_CONNECTION_REQUEST, protocol.request)
        channel = conn.producer
        assert isinstance(channel, HTTPChannel), f"{version_of('Twisted')}: the producer is {channel!r}"
        assert_has(contract.TWISTED_HTTP_CHANNEL, channel)
        assert len(channel.requests) == 1 and channel.requests[0].transport is None, (
            f"{version_of('daphne')}: the upgraded request is not the channel's one handed-over request"
        )
        path = protocol.request.path
        assert server_io.release_handshake(send), version_of("autobahn")
        assert all(getattr(protocol, name) is None for name in contract.DAPHNE_HANDSHAKE.names[1:-1])
        assert protocol.request.headers == {} and protocol.request.path == path
        assert channel.requests == []
        await send({"type": "websocket.send", "text": "one"})
        assert received() == contract.text_frame(b"one")
        mask = b"\x01\x02\x03\x04"
        client.send(b"\x81\x83" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"two")))
        await asyncio.sleep(0.05)
        conn.doRead()
        assert await asyncio.wait_for(receive(), 10) == {"type": "websocket.receive", "text": "two"}
        await send({"type": "websocket.close", "code": 4321})
        assert received() == b"\x88\x02" + (4321).to_bytes(2, "big"), version_of("autobahn")
        protocol.connectionLost(Failure(ConnectionDone()))
        assert (await asyncio.wait_for(receive(), 10))["type"] == "websocket.disconnect"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("direct_write", [True, False])
async def test_the_pulse_consumer_releases_the_handshake_state_unless_direct_write_is_off(
    direct_write: bool, settings: Any
) -> None:
    """A Pulse connection under a real uvicorn gives up uvicorn's handshake state once accepted, and still
    authenticates, subscribes and receives; with ``DIRECT_WRITE`` off Pulse leaves the server's objects alone."""
    from websockets.asyncio.client import connect

    from django_pulse import pulse
    from tests.asgi import application
    from tests.support.wsutil import token

    settings.PULSE = {**getattr(settings, "PULSE", {}), "DIRECT_WRITE": direct_write}
    protocols: list[Any] = []

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            protocols.append(send.__self__)
        await application(scope, receive, send)

    async with (
        uvicorn_serving(recording) as port,
        connect(f"ws://127.0.0.1:{port}/pulse/ws/", compression=None) as ws,
    ):
        await ws.send(json.dumps({"action": "auth", "token": await token("ann")}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "connected"
        await ws.send(json.dumps({"action": "subscribe", "channel": "trimmed", "ref": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["action"] == "ok"
        await pulse.apublish("trimmed", "tick", {"i": 1})
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"] == {"i": 1}
        (protocol,) = protocols
        state = (protocol.request, protocol.response, protocol.conn.available_extensions)
    if direct_write:
        assert state == (None, None, None), f"{version_of('uvicorn')}: {state}"
    else:
        assert all(value is not None for value in state), state
