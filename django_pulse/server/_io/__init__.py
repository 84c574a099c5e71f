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

The package: ``contract`` (the ``Requirement``s, the path report, the shared frame and chunk builders), one module
per server (``daphne``, ``uvicorn``, ``granian``), and here the functions that recognise a ``send`` and hand it to
its server's module. The names read on each server's objects are declared once, as ``Requirement``s; the writers
check them when a connection opens, and ``tests/test_server_contract.py`` checks them on the real objects of the
installed versions (docs/servers.md lists the versions tested). The first connection of each server in a process decides
and logs the path it takes; a recognised server whose internals differ is logged at WARNING, with its version and
the fallback (ASGI). ``FastPathReport`` keeps, per server, the path taken and the frames written directly.
"""

from __future__ import annotations

from typing import Any

from . import daphne, uvicorn
from .contract import DirectWriter, FastPathReport, ResponseWriter, server_send
from .daphne import buffer_probe, close_going_away, daphne_protocol, install_daphne_hooks, install_daphne_shutdown
from .granian import install_granian_shutdown
from .uvicorn import UVICORN_HTTP, UVICORN_HTTPTOOLS, UVICORN_SANSIO, UVICORN_WEBSOCKETS, install_uvicorn_hooks

# What the rest of django_pulse uses; the contract (the Requirements, the frame and chunk bytes) is read from
# ``contract``, each server's own parts from its module.
__all__ = [
    "DirectWriter",
    "FastPathReport",
    "ResponseWriter",
    "buffer_probe",
    "close_going_away",
    "daphne_protocol",
    "direct_writer",
    "install_daphne_shutdown",
    "install_granian_shutdown",
    "install_server_hooks",
    "release_handshake",
    "response_writer",
    "server_send",
]


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


def _other_http_path(send: Any, report: FastPathReport) -> None:
    """Record the ASGI path of an HTTP ``send`` the SSE fast path knows but does not serve: uvicorn with h11 (or an
    unknown HTTP implementation: drift) and granian."""
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


def install_server_hooks(*, max_body_size: int | None, header_timeout: float | None) -> None:
    """Set up, once per process, what the adapter puts in front of the application under the server loading it
    (docs/servers.md, "In front of the application"): the server's own ``send`` in every scope (daphne, uvicorn),
    bodies over ``max_body_size`` refused before the server buffers them (daphne; uvicorn and granian do not read
    a body the application does not ask for), and connections whose first request's headers are not in within
    ``header_timeout`` seconds closed (daphne, uvicorn httptools; granian: its ``--http1-header-read-timeout``).
    Called by ``django_pulse.asgi.get_asgi_application`` while the server loads the application."""
    install_daphne_hooks(max_body_size, header_timeout)
    install_uvicorn_hooks(header_timeout)


# -- choosing ----------------------------------------------------------------------------------------------------


def _choose(send: Any, report: FastPathReport, *, sse: bool) -> Any:
    """The writer of the server whose ``send`` this is (its response's when ``sse``), or None (recorded)."""
    target = daphne.daphne_protocol(send)
    if target is not None:
        return (daphne.response_writer if sse else daphne.writer)(target, report)
    target = (uvicorn.http_cycle if sse else uvicorn.websocket_protocol)(send)
    if target is not None:
        return (uvicorn.response_writer if sse else uvicorn.writer)(target, report)
    reason = daphne.unrecognised(send)
    if reason is not None:
        report.decide("daphne", "asgi", reason, drift=True, sse=sse)
    else:
        (_other_http_path if sse else _other_path)(send, report)
    return None


def response_writer(send: Any, report: FastPathReport) -> ResponseWriter | None:
    """For a recognised server's HTTP ``send``: a ``ResponseWriter`` for the response it belongs to; None for
    other servers, TLS under daphne, uvicorn with ``--http h11``, or versions whose internals differ from what
    this module expects (logged once, as for WebSockets, under the server's ``-sse`` entry of ``report``)."""
    writer: ResponseWriter | None = _choose(send, report, sse=True)
    return writer


def direct_writer(send: Any, report: FastPathReport) -> DirectWriter | None:
    """For a recognised server's ``send``: a function that writes a ``websocket.send`` text message itself and
    returns True, or returns False (nothing written) when the caller must use ``send`` for this message; None
    for other servers, TLS under daphne, or versions whose internals differ from what this module expects.
    What was decided goes to ``report`` (the runtime's: ``get_runtime().fast_path``)."""
    writer: DirectWriter | None = _choose(send, report, sse=False)
    return writer


def release_handshake(send: Any) -> bool:
    """Once a connection is open, drop what its server keeps of the opening handshake for the whole connection
    but reads only during it: under uvicorn the request and the response (``websockets``' ``Request`` and
    ``Response`` with their headers) and the deflate offer factory; under daphne autobahn's copies of the request
    (its bytes, headers, path, host, origin, key) and of the response text. ~1.5-3 KB per connection
    (docs/performance.md, "Memory per connection"). True when released; False (nothing touched) for other
    servers, a connection not open yet, or versions whose internals differ from the ``Requirement``s."""
    protocol = uvicorn.websocket_protocol(send)
    if protocol is not None:
        return uvicorn.release_handshake(protocol)
    protocol = daphne.daphne_protocol(send)
    if protocol is not None:
        return daphne.release_handshake(protocol)
    return False
