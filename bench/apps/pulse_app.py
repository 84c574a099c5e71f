"""django_pulse wired exactly as docs/installation.md says, plus the benchmark's HTTP endpoints.

``GET /__bench__/publish?rate&count&seq0`` publishes with ``pulse.apublish`` on the server's event loop;
``GET /__bench__/tokens?n=N`` mints N tokens (client ids ``bench-0`` ... ``bench-{N-1}``) with ``pulse.get_token``
(``&anonymous=1``: without capabilities, as live-template pages of anonymous visitors get them).
"""

from __future__ import annotations

import os
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from bench.apps.publisher import CHANNEL, EVENT, parse_params, run_publisher

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings")
os.environ.setdefault("BENCH_KIND", "pulse")


async def publish_view(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    apublish: Any = pulse.apublish

    async def one(seq: int, t_us: int) -> None:
        await apublish(CHANNEL, EVENT, {"t": t_us, "s": seq})

    return JsonResponse(await run_publisher(one, parse_params(request.META.get("QUERY_STRING", ""))))


def tokens_view(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    n = int(request.GET.get("n", "1"))
    # anonymous=1: the live-template page's token for visitors (no capabilities; signed streams only).
    capabilities: dict[str, list[str]] | None = {} if request.GET.get("anonymous") else None
    return JsonResponse(
        {"tokens": [pulse.get_token(f"bench-{i}", capabilities=capabilities)["token"] for i in range(n)]}
    )


def ping_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [
    path("__bench__/publish", publish_view),
    path("__bench__/tokens", tokens_view),
    path("__bench__/ping", ping_view),
]

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from django_pulse.routing import (  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
    sse_urlpatterns,
    websocket_urlpatterns,
)

application = ProtocolTypeRouter(
    {
        "http": URLRouter([*sse_urlpatterns, re_path(r"", django_asgi_app)]),  # type: ignore[arg-type]
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
