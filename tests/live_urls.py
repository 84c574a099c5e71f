"""URLs of test server processes: the test URLs plus test-only helpers to mint tokens and publish inside
the server process (needed with the in-memory broker, whose state lives in that process)."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
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


SEED_DIR = Path(__file__).resolve().parent / "browser" / "seed"
PAGE = """<!DOCTYPE html>
<html><head><title>pulse.js test page</title><script src="/static/django_pulse/pulse.js"></script></head>
<body></body></html>"""


def page(request: HttpRequest) -> HttpResponse:
    """A blank page that loads the real pulse.js from /static/ (browser tests drive it)."""
    return HttpResponse(PAGE)


def seed_page(request: HttpRequest) -> HttpResponse:
    """The seed's "Complete Example" frontend, verbatim but for its <script src>."""
    return HttpResponse((SEED_DIR / "live_posts.html").read_text())


# The seed's backend handler (posts/index.mjs) for its frontend and snippets, posts kept in memory.
_posts: list[dict[str, Any]] = []
_posts_lock = threading.Lock()
_post_ids = itertools.count(1)


@csrf_exempt
def seed_backend(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    body: dict[str, Any] = json.loads(request.body or b"{}")
    action = body.get("action")
    if action == "getPulseToken":
        token_data = pulse.get_token(body["userId"], request=request)
        return JsonResponse({**token_data, "kbId": token_data["kbId"]})
    if action == "list":
        with _posts_lock:
            return JsonResponse({"posts": list(reversed(_posts[-50:]))})
    if action == "create":
        with _posts_lock:
            post = {"id": next(_post_ids), "user_name": body.get("userName"), "content": body.get("content")}
            _posts.append(post)
        pulse.publish("posts", "new_post", {"post": post})
        return JsonResponse({"post": post})
    return JsonResponse({"error": "Unknown action"}, status=400)


urlpatterns = [
    *base_urlpatterns,
    path("__test__/token/", token),
    path("__test__/publish/", publish),
    path("__test__/page/", page),
    path("__test__/seed/", seed_page),
    path("auth", seed_backend),
    path("posts", seed_backend),
]
