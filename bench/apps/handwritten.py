"""The baseline a Django developer writes today, straight from the Channels tutorial.

Each socket's consumer ``group_add``s its own layer channel to a group on connect; a publish is one
``group_send``; each consumer receives the event through the channel layer and ``send_json``s it (one JSON
encoding per socket). Routing uses ``AllowedHostsOriginValidator(AuthMiddlewareStack(...))`` as the tutorial
does. ``BENCH_LAYER`` picks ``InMemoryChannelLayer`` or channels_redis ``RedisChannelLayer`` (defaults).
After ``group_add`` the consumer sends ``{"action": "ready"}`` so the load generator knows it is subscribed.
"""

from __future__ import annotations

import os
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import HttpRequest, JsonResponse
from django.urls import path

from bench.apps.publisher import baseline_frame, parse_params, run_publisher

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings")
os.environ.setdefault("BENCH_KIND", "handwritten")

GROUP = "bench"


class BaselineConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"action": "ready"})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send_json(event["frame"])


async def publish_view(request: HttpRequest) -> JsonResponse:
    from channels.layers import get_channel_layer

    layer: Any = get_channel_layer()

    async def one(seq: int, t_us: int) -> None:
        await layer.group_send(GROUP, {"type": "bench.message", "frame": baseline_frame(seq, t_us)})

    return JsonResponse(await run_publisher(one, parse_params(request.META.get("QUERY_STRING", ""))))


def ping_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [path("__bench__/publish", publish_view), path("__bench__/ping", ping_view)]

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/bench/", BaselineConsumer.as_asgi())]))
        ),
    }
)
