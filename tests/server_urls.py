"""URLs of test server processes: the test URLs plus test-only helpers to mint tokens and publish inside
the server process (needed with the in-memory broker, whose state lives in that process)."""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.static import serve

from tests.urls import urlpatterns as base_urlpatterns


@csrf_exempt
def token(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    body: dict[str, Any] = json.loads(request.body or b"{}")
    # Test clients may publish unless a test asks for less (publishing is not a default capability).
    kwargs = {"capabilities": {"*": ["*"]}, **{k: body[k] for k in ("kb_id", "capabilities", "ttl") if k in body}}
    return JsonResponse(pulse.get_token(body.get("clientId", "tester"), request=request, **kwargs))


@csrf_exempt
def publish(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse
    from django_pulse.exceptions import PulseError

    body: dict[str, Any] = json.loads(request.body or b"{}")
    try:
        message_id = pulse.publish(
            body["channel"], body["event"], body.get("data"), id=body.get("id"), exclude=body.get("exclude")
        )
    except PulseError as exc:  # as the HTTP API answers: 503 when the broker is unreachable
        status = 503 if exc.code == "unavailable" else 400
        response = JsonResponse({"error": {"code": exc.code.value, "message": exc.message}}, status=status)
        response._has_been_logged = True  # type: ignore[attr-defined]  # as the API: the broker logs outages
        return response
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
    yet), asyncio tasks, RSS; and ``fastPath``: per server, the path its connections took and the frames written
    directly (docs/servers.md).

    ``gc=1`` collects garbage first (so cycles that are merely uncollected do not count as leaks).
    """
    import asyncio
    import gc
    import os

    from django_pulse.server.runtime import get_runtime

    if request.GET.get("gc"):
        gc.collect()
    runtime = get_runtime()
    hub = runtime.hub
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return JsonResponse(
        {
            "topics": hub.local_topics(),
            "connections": sum(len(conns) for conns in hub.connections.values()),
            "consumers": len(runtime.connections),
            "open": sum(1 for conn in list(runtime.connections) if not conn.closed),
            "tasks": len(asyncio.all_tasks()),
            "rss": rss,
            "fastPath": runtime.fast_path.as_dict(),
        }
    )


SEED_DIR = Path(__file__).resolve().parent / "browser" / "seed"
# The seed's "Complete Example" frontend: the one copy the example project serves at /seed/.
SEED_FRONTEND = Path(__file__).resolve().parent.parent / "example_project" / "posts" / "seed" / "index.html"
PAGE = """<!DOCTYPE html>
<html><head><title>pulse.js test page</title><script src="/static/django_pulse/pulse.js"></script></head>
<body></body></html>"""


def page(request: HttpRequest) -> HttpResponse:
    """A blank page that loads the real pulse.js from /static/ (browser tests drive it)."""
    return HttpResponse(PAGE)


def seed_page(request: HttpRequest) -> HttpResponse:
    """The seed's "Complete Example" frontend, verbatim but for its <script src>."""
    return HttpResponse(SEED_FRONTEND.read_text())


def built_app(request: HttpRequest, path: str) -> HttpResponse:
    """A front-end app a test built (tests/browser/test_js_frameworks.py), from the folder PULSE_TEST_APPS: served by
    this server, so its pages reach /pulse/ws/ and the token endpoint on their own origin, as a deployed app does."""
    root = os.environ.get("PULSE_TEST_APPS")
    if not root:
        raise Http404("no PULSE_TEST_APPS")
    return serve(request, path + "index.html" if path.endswith("/") else path, document_root=root)


def lobby(request: HttpRequest) -> HttpResponse:
    """A live page with ``{% pulse_presence 'lobby' %}``, rendered for this request's visitor (and session)."""
    from django.template import engines

    template = engines["django"].from_string("{% load pulse %}{% pulse_presence 'lobby' %}")
    return HttpResponse(template.render({}, request))


@csrf_exempt
def revoke(request: HttpRequest) -> JsonResponse:
    """``pulse.disconnect(clientId)`` inside the server process (close 4005 on the client's connections)."""
    from django_pulse import pulse

    body: dict[str, Any] = json.loads(request.body or b"{}")
    pulse.disconnect(body["clientId"])
    return JsonResponse({})


@csrf_exempt
def presence_users(request: HttpRequest) -> JsonResponse:
    """``pulse.presence_users(channel)`` inside the server process (the in-memory presence lives there)."""
    from django_pulse import pulse

    body: dict[str, Any] = json.loads(request.body or b"{}")
    return JsonResponse(pulse.presence_users(body["channel"]))


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
    path("__test__/app/", app),
    path("__test__/state/", state),
    path("__test__/revoke/", revoke),
    path("__test__/lobby/", lobby),
    path("__test__/presence-users/", presence_users),
    path("__test__/page/", page),
    path("__test__/seed/", seed_page),
    path("__test__/apps/<path:path>", built_app),
    path("auth", seed_backend),
    path("posts", seed_backend),
]
