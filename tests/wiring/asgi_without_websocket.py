"""An ASGI application as a new user might write it: HTTP only, no Pulse WebSocket route."""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

application = ProtocolTypeRouter({"http": get_asgi_application()})
