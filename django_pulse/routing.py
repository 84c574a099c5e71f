"""ASGI routes: ``websocket_urlpatterns`` serves the Pulse consumer at ``PULSE["WS_PATH"]`` (pulse/ws/), and
``sse_urlpatterns`` the SSE transport at ``PULSE["SSE_PATH"]`` (pulse/sse/; docs/transports.md) in front of
Django's own HTTP application:

    django_asgi_app = get_asgi_application()
    application = ProtocolTypeRouter({
        "http": URLRouter([*django_pulse.routing.sse_urlpatterns, re_path(r"", django_asgi_app)]),
        "websocket": URLRouter(django_pulse.routing.websocket_urlpatterns),
    })

The handshake's ``Origin`` is checked per ``PULSE["ALLOWED_ORIGINS"]`` (read for each connection): None ->
the project's ALLOWED_HOSTS (Channels' ``AllowedHostsOriginValidator``), a list -> those origins
(``OriginValidator``), ``["*"]`` -> no check. A refused origin gets HTTP 403 before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from asgiref.sync import markcoroutinefunction
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator, WebsocketDenier
from django.urls import path

from ._conf import pulse_settings
from .server.consumer import PulseConsumer
from .server.shutdown import shutdown

if TYPE_CHECKING:
    from .server.runtime import Runtime

__all__ = [
    "pulse_lifespan",
    "pulse_websocket_app",
    "register_when_served",
    "shutdown",
    "sse_urlpatterns",
    "websocket_urlpatterns",
]

logger = logging.getLogger("django_pulse.routing")

_consumer = PulseConsumer.as_asgi()


@markcoroutinefunction
def pulse_websocket_app(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
    """The consumer behind the origin check configured by ``PULSE["ALLOWED_ORIGINS"]`` (an ASGI 3 application)."""
    # Channels' validators decide, but are not awaited around the consumer: each would stay suspended in the
    # connection's task for its whole life (a coroutine frame, the validator and the parsed origin), and so
    # would as_asgi's wrapper and this function's own frame: it returns the consumer's coroutine for the caller
    # to await (~1 KB per connection fewer, docs/performance.md). Marked as a coroutine function, so asgiref's
    # guarantee_single_callable takes it for the ASGI 3 application it is.
    if not _origin_allowed(scope):
        return WebsocketDenier()(scope, receive, send)  # type: ignore[no-any-return]
    return PulseConsumer()(scope, receive, send)


def _origin_allowed(scope: dict[str, Any]) -> bool:
    """Channels' ``OriginValidator.__call__`` check, for the validator ``PULSE["ALLOWED_ORIGINS"]`` configures."""
    origins = pulse_settings.ALLOWED_ORIGINS
    if origins is not None and "*" in origins:
        return True
    if scope["type"] != "websocket":
        raise ValueError("You cannot use OriginValidator on a non-WebSocket connection")
    validator = AllowedHostsOriginValidator(_consumer) if origins is None else OriginValidator(_consumer, origins)
    parsed_origin = None
    for header_name, header_value in scope.get("headers", []):
        if header_name == b"origin":
            with contextlib.suppress(UnicodeDecodeError):
                parsed_origin = urlparse(header_value.decode("latin1"))
    return bool(validator.valid_origin(parsed_origin))


#: The WebSocket route: the consumer at ``PULSE["WS_PATH"]`` behind the origin check, for the
#: ``"websocket"`` side of the ``ProtocolTypeRouter``.
websocket_urlpatterns = [path(pulse_settings.WS_PATH, pulse_websocket_app)]  # type: ignore[arg-type]


def _sse_urlpatterns() -> list[Any]:
    from .server.sse import pulse_sse_app

    base = pulse_settings.SSE_PATH
    return [path(base + suffix, pulse_sse_app) for suffix in ("", "ticket/", "send/")]  # type: ignore[arg-type]


#: The SSE transport's HTTP routes at ``PULSE["SSE_PATH"]`` (stream, ticket, send), for the ``"http"`` side
#: of the ``ProtocolTypeRouter``, in front of Django's own application.
sse_urlpatterns = _sse_urlpatterns()


# -- Server process registration at startup (so `pulse status` counts idle processes too) -------------------
#
# With Redis every server process announces itself in the process registry (docs/architecture.md). It used to
# do so at its first WebSocket connection, so `pulse status` showed `processes: 0` with idle servers running.
# Now it registers as soon as the server runs its event loop: this module is imported by the project's ASGI
# module in every server process, and the servers give three ways to run code on that loop.


def _spawn_registration(loop: asyncio.AbstractEventLoop) -> None:
    from .server.runtime import get_runtime

    # Held by the runtime until done (the loop keeps only weak references to its tasks).
    runtime = get_runtime()
    tasks = runtime.background_tasks
    task = loop.create_task(_register_process(runtime), name="pulse-register-process")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _register_process(runtime: Runtime) -> None:
    runtime.metrics.ensure_loop_monitor()
    if pulse_settings.OUTBOX_RELAY:
        # Every server process relays the outbox (docs/durability.md): after the database claim below, so that a
        # row written by another process of an in-memory installation is this process's to publish.
        from .server.relay import start_relay

        asyncio.get_running_loop().call_soon(start_relay, runtime)
    if not pulse_settings.REDIS_URL:
        # In memory, the one process must be the whole installation: say so if another one serves the site.
        # Tried once per process (a second lock taken by the same process would look like another server).
        if pulse_settings.BROKER_BACKEND == "django_pulse.broker.memory.MemoryBroker" and not runtime.database_claimed:
            from .broker.memory import claim_database

            runtime.database_claimed = True
            runtime.database_claim = claim_database()
        return
    try:
        await runtime.liveness.ensure_started()
    except Exception:
        # Redis unreachable at startup: the first connection tries again (presence_actions.connection_started).
        logger.warning("pulse: could not register this server process at startup", exc_info=True)


def _on_daphne_reactor() -> bool:
    """Under daphne (its asyncio Twisted reactor, installed by ``daphne.server``): register when it runs."""
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor as twisted_reactor

    reactor: Any = twisted_reactor
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        return False

    def started() -> None:
        from .server._io import install_daphne_shutdown
        from .server.shutdown import logged_shutdown

        install_daphne_shutdown(logged_shutdown)
        _spawn_registration(loop)

    reactor.callWhenRunning(started)
    return True


def _on_prepared_loop() -> bool:
    """Under granian: the worker has created and set its loop (not yet running) before importing the app."""
    if "granian" not in sys.modules:
        return False
    loop = asyncio.get_event_loop_policy().get_event_loop()
    loop.call_soon_threadsafe(_spawn_registration, loop)
    from .server._io import install_granian_shutdown
    from .server.shutdown import logged_shutdown

    install_granian_shutdown(logged_shutdown)
    return True


def register_when_served() -> None:
    """Register this process once its server's event loop runs (daphne, granian, or a server importing the
    application inside its running loop). Other servers (uvicorn) register through ``pulse_lifespan`` when the
    project routes ``"lifespan"`` to it, else at their first connection, as before."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # granian first: daphne in INSTALLED_APPS installs its reactor in every process, which never runs there.
        _on_prepared_loop() or _on_daphne_reactor()
    else:
        _spawn_registration(loop)


async def pulse_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI lifespan for servers that speak it (uvicorn, granian): route ``"lifespan": pulse_lifespan`` in the
    ``ProtocolTypeRouter``. Startup registers this process; shutdown closes its Pulse connections gracefully
    (``shutdown()``) before the server stops."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            from .server.runtime import get_runtime

            await _register_process(get_runtime())
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await shutdown()
            except Exception:
                logger.warning("pulse: graceful shutdown failed", exc_info=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


register_when_served()
