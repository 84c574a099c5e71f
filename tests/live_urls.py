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

    body: dict[str, Any] = json.loads(request.body or b"{}")
    publish_fn = getattr(pulse, "publish")  # noqa: B009  (filled in by the fan-out work)
    message_id = publish_fn(body["channel"], body["event"], body.get("data"), id=body.get("id"))
    return JsonResponse({"id": message_id})


urlpatterns = [
    *base_urlpatterns,
    path("__test__/token/", token),
    path("__test__/publish/", publish),
]
