"""WebSocket routes: ``websocket_urlpatterns`` serves the Pulse consumer at ``PULSE["WS_PATH"]`` (pulse/ws/).

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
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

__all__ = ["pulse_websocket_app", "websocket_urlpatterns"]

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
