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

from typing import Any

from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from django.urls import path

from .conf import pulse_settings
from .server.consumer import PulseConsumer

__all__ = ["pulse_websocket_app", "sse_urlpatterns", "websocket_urlpatterns"]

_consumer = PulseConsumer.as_asgi()


async def pulse_websocket_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The consumer behind the origin check configured by ``PULSE["ALLOWED_ORIGINS"]``."""
    origins = pulse_settings.ALLOWED_ORIGINS
    if origins is None:
        app = AllowedHostsOriginValidator(_consumer)
    elif "*" in origins:
        app = _consumer
    else:
        app = OriginValidator(_consumer, origins)
    await app(scope, receive, send)


websocket_urlpatterns = [path(pulse_settings.WS_PATH, pulse_websocket_app)]  # type: ignore[arg-type]


def _sse_urlpatterns() -> list[Any]:
    from .server.sse import pulse_sse_app

    base = pulse_settings.SSE_PATH
    return [path(base + suffix, pulse_sse_app) for suffix in ("", "ticket/", "send/")]  # type: ignore[arg-type]


# The SSE transport's HTTP routes (stream, ticket, send), for the "http" side of the ProtocolTypeRouter.
sse_urlpatterns = _sse_urlpatterns()
