"""URLs of test server processes: the test URLs plus test-only helpers to mint tokens and publish inside
the server process (needed with the in-memory broker, whose state lives in that process)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from tests.urls import urlpatterns as base_urlpatterns


@csrf_exempt
def token(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    body: dict[str, Any] = json.loads(request.body or b"{}")
    kwargs = {k: body[k] for k in ("kb_id", "capabilities", "ttl") if k in body}
    return JsonResponse(pulse.get_token(body.get("clientId", "tester"), request=request, **kwargs))


@csrf_exempt
def publish(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse
    from django_pulse.exceptions import PulseError

    body: dict[str, Any] = json.loads(request.body or b"{}")
    try:
        message_id = pulse.publish(body["channel"], body["event"], body.get("data"), id=body.get("id"))
    except PulseError as exc:  # as the HTTP API answers: 503 when the broker is unreachable
        status = 503 if exc.code == "unavailable" else 400
        return JsonResponse({"error": {"code": exc.code.value, "message": exc.message}}, status=status)
    return JsonResponse({"id": message_id})


@csrf_exempt
def app(request: HttpRequest) -> JsonResponse:
    """Create or update an app (``kbId``, ``enabled``); returns its token secret, so tests can forge tokens."""
    from django_pulse.models import PulseApp

    body: dict[str, Any] = json.loads(request.body or b"{}")
    pulse_app, _ = PulseApp.objects.ensure(body["kbId"])
    if "enabled" in body:
        pulse_app.enabled = bool(body["enabled"])
        pulse_app.save(update_fields=["enabled"])
    return JsonResponse({"kbId": pulse_app.kb_id, "secret": pulse_app.token_secret, "enabled": pulse_app.enabled})


async def state(request: HttpRequest) -> JsonResponse:
    """What this process holds, to find leaks: hub topics and connections, live consumers (``open``: not closing
    yet), asyncio tasks, RSS.

    ``gc=1`` collects garbage first (so cycles that are merely uncollected do not count as leaks).
    """
    import asyncio
    import gc
    import os

    from django_pulse import consumers
    from django_pulse.fanout import get_hub

    if request.GET.get("gc"):
        gc.collect()
    hub = get_hub()
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return JsonResponse({
        "topics": hub.local_topics(),
        "connections": sum(len(conns) for conns in hub.connections.values()),
        "consumers": len(consumers._live),
        "open": sum(1 for conn in list(consumers._live) if not conn.closed),
        "tasks": len(asyncio.all_tasks()),
        "rss": rss,
    })


urlpatterns = [
    *base_urlpatterns,
    path("__test__/token/", token),
    path("__test__/publish/", publish),
    path("__test__/app/", app),
    path("__test__/state/", state),
]
