"""Live Posts: the seed's ``POST /posts`` handler, its safe page, the seed's page verbatim, and private
messages.

``POST /posts`` takes ``{"action": ..., ...}`` exactly like the seed's Lambda (``getPulseToken``, ``list``,
``create``, ``presence``), answers ``OPTIONS`` with 200, puts the CORS headers on every answer, and answers
anything else with 400 ``{"error": "..."}``. ``create`` does not publish: the ``Post`` model is registered
with publish-on-save (models.py), which publishes ``new_post`` once the insert has committed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie

from django_pulse import pulse
from django_pulse.exceptions import PulseError

from .models import Member, Post, post_data
from .security import cross_site

POSTS_CHANNEL = "posts"
LOBBY_CHANNEL = "lobby"
LIST_LIMIT = 50
MAX_CONTENT = 2000
MAX_NAME = 100
SEED_PAGE = Path(__file__).resolve().parent / "seed" / "index.html"

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
}


class BadRequest(Exception):
    """A request the handler refuses; the message is shown to the client as ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def index(request: HttpRequest) -> HttpResponse:
    """The Live Posts page (user content is only ever inserted as text)."""
    return render(request, "posts/index.html")


def seed_page(request: HttpRequest) -> HttpResponse:
    """The seed's own frontend, byte for byte but for the pulse.js ``<script src>``."""
    return HttpResponse(SEED_PAGE.read_bytes(), content_type="text/html; charset=utf-8")


def _answer(body: Any, status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status, safe=False)
    for name, value in CORS_HEADERS.items():
        response[name] = value
    return response


def _json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; an empty body is ``{}`` as in the seed (``event.body || '{}'``)."""
    if not request.body:
        return {}
    try:
        # Strict JSON: no lone surrogates (the database and UTF-8 sockets refuse them), NaN or nesting past
        # 64 levels; each is a 400 here instead of a 500 further on.
        body = pulse.loads_strict(request.body)
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object with an 'action'.")
    return body


def _text(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{key}' must be a non-empty string.")
    if len(value) > limit:
        raise BadRequest(f"'{key}' must be at most {limit} characters.")
    return value


def _create_post(user_name: str, content: str) -> Post:
    """Every post the views create is validated by the model's fields first: the seed's page renders posts with
    innerHTML, so text that would open a tag is refused (the admin applies the same validators)."""
    post = Post(user_name=user_name, content=content)
    try:
        post.full_clean()
    except ValidationError as exc:
        raise BadRequest(" ".join(dict.fromkeys(exc.messages))) from None
    post.save()
    return post


def _pulse_call(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the server SDK, turning its refusals into client errors."""
    try:
        return call(*args, **kwargs)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    except PulseError as exc:
        raise BadRequest(exc.message, status=503 if exc.code == "unavailable" else 403) from None


@csrf_exempt
def posts_api(request: HttpRequest) -> HttpResponse:
    if request.method == "OPTIONS":
        response = HttpResponse(b"", status=200)
        for name, value in CORS_HEADERS.items():
            response[name] = value
        return response
    if request.method != "POST":
        answer = _answer({"error": 'Use POST with a JSON body {"action": ...}.'}, status=405)
        answer["Allow"] = "POST, OPTIONS"
        return answer
    if cross_site(request):
        # CORS headers stay (the seed's contract), but a browser page of another site may not post here.
        return _answer({"error": "Cross-site requests are refused: post from this site's own pages."}, status=403)
    try:
        data = _json_body(request)
        return _answer(_posts_action(request, data.pop("action", None), data))
    except BadRequest as exc:
        return _answer({"error": exc.message}, status=exc.status)


def _posts_action(request: HttpRequest, action: Any, data: dict[str, Any]) -> dict[str, Any]:
    if action == "getPulseToken":
        # Live Posts clients may read 'posts' (with its history, so a page that reconnects after a Redis outage
        # or a server crash resumes and gets every post saved meanwhile, once) and be present on it; only the
        # server publishes there.
        _claim_identity(request, data.get("userId"))
        token = _pulse_call(
            pulse.get_token,
            data.get("userId"),
            request=request,
            capabilities={POSTS_CHANNEL: ["subscribe", "presence", "history"]},
        )
        return {**token, "kbId": token["kbId"]}  # the seed: {...tokenData, kbId}
    if action == "list":
        return {"posts": [post_data(post) for post in Post.objects.order_by("-created_at", "-id")[:LIST_LIMIT]]}
    if action == "create":
        post = _create_post(_text(data, "userName", MAX_NAME), _text(data, "content", MAX_CONTENT))
        return {"post": post_data(post)}
    if action == "presence":
        result: dict[str, Any] = _pulse_call(pulse.presence, POSTS_CHANNEL)
        return result
    raise BadRequest("Unknown action")


# Identities of the seed's page -----------------------------------------------------------------------------
# The seed's page names itself (a random 'user_…' per page load), so the server cannot refuse a name: it bounds
# how many a visitor can mint instead. A name belongs to the browser session that first asked for it (another
# session asking for it is refused, so a name seen in presence cannot be taken over), and an address may
# claim NEW_IDENTITIES_PER_MINUTE new names a minute; asking again for a name the session holds (a token
# renewal, another tab) is free. Without these, a script minted 1,000 present members in 4.6 s.

NEW_IDENTITIES_PER_MINUTE = 20
IDENTITY_OWNER_TTL = 24 * 3600  # seconds a name stays its session's (longer than any token it gets)
SESSION_IDENTITIES = "posts_identities"
SESSION_IDENTITIES_KEPT = 20  # the names a session remembers (its newest), so a session stays small


def _claim_identity(request: HttpRequest, user_id: Any) -> None:
    """Let this visitor's session use ``user_id``, or raise ``BadRequest`` (403 another session's, 429 too many
    new names from this address). A malformed id is left to ``get_token`` to refuse."""
    if not isinstance(user_id, str) or not user_id or len(user_id) > 255:
        return
    held: list[str] = request.session.get(SESSION_IDENTITIES, [])
    if user_id in held:
        return
    if request.session.session_key is None:
        request.session.save()  # a new visitor: the key that names its session from now on
    owner_key = "posts:identity:" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
    owner = cache.get(owner_key)
    if owner is not None and owner != request.session.session_key:
        raise BadRequest("This userId belongs to another visitor; pick another one.", status=403)
    address = request.META.get("REMOTE_ADDR", "")
    window = "posts:new-identities:" + address
    cache.add(window, 0, 60)
    try:
        count = cache.incr(window)
    except ValueError:  # the minute ended between the two calls
        cache.set(window, count := 1, 60)
    if count > NEW_IDENTITIES_PER_MINUTE:
        raise BadRequest("Too many new userIds from this address; retry in a minute.", status=429)
    cache.set(owner_key, request.session.session_key, IDENTITY_OWNER_TTL)
    request.session[SESSION_IDENTITIES] = [*held, user_id][-SESSION_IDENTITIES_KEPT:]


# Private messages (the seed's "Private Channels") ---------------------------------------------------------
# Each member (one per browser session) has a secret random channel that only they subscribe to; the server
# publishes a message on the addressee's channel. Everyone is present on 'lobby' to be found.


@ensure_csrf_cookie
def private_page(request: HttpRequest) -> HttpResponse:
    return render(request, "posts/private.html")


def _session_member(request: HttpRequest) -> Member | None:
    member_id = request.session.get("member_id")
    return Member.objects.filter(pk=member_id).first() if member_id else None


def private_api(request: HttpRequest) -> HttpResponse:
    """``POST /private/api`` (session + CSRF protected): ``join``, ``me``, ``getPulseToken``, ``send``."""
    if request.method != "POST":
        answer = JsonResponse({"error": 'Use POST with a JSON body {"action": ...}.'}, status=405)
        answer["Allow"] = "POST"
        return answer
    try:
        data = _json_body(request)
        return JsonResponse(_private_action(request, data.pop("action", None), data))
    except BadRequest as exc:
        return JsonResponse({"error": exc.message}, status=exc.status)


def _private_action(request: HttpRequest, action: Any, data: dict[str, Any]) -> dict[str, Any]:
    member = _session_member(request)
    if action == "join":
        name = _text(data, "name", 40).strip()
        if member is None:
            member = Member.objects.create(name=name)
            request.session["member_id"] = member.pk
        elif member.name != name:
            member.name = name
            member.save(update_fields=["name"])
        return {"me": {**member.public(), "privateChannel": member.private_channel}}
    if action == "me":
        return {"me": None if member is None else {**member.public(), "privateChannel": member.private_channel}}
    if member is None:
        raise BadRequest("Join first (action 'join' with a name).", status=403)
    if action == "getPulseToken":
        # Private channels may be subscribed to (the authorize hook in posts/pulse.py lets only their owner
        # in); nobody may publish on them: only the server does.
        return dict(
            _pulse_call(
                pulse.get_token,
                member.client_id,
                request=request,
                capabilities={
                    "private-*": ["subscribe"],
                    LOBBY_CHANNEL: ["subscribe", "presence"],
                },
            )
        )
    if action == "send":
        to = data.get("to")
        recipient = Member.objects.filter(pk=to).first() if isinstance(to, int) and not isinstance(to, bool) else None
        if recipient is None:
            raise BadRequest(f"No member with id {to!r}.", status=404)
        message = {"from": member.public(), "to": recipient.public(), "text": _text(data, "text", MAX_CONTENT)}
        _pulse_call(pulse.publish, recipient.private_channel, "message", message)
        return {"sent": message}
    raise BadRequest("Unknown action")


# Live Posts with templates only (docs/live-templates.md) ---------------------------------------------------
# No JavaScript of the project's own: the page renders the posts with a template, {% pulse_stream_from %}
# keeps them live (Post is registered with a template in models.py: created -> prepend, edited -> replace,
# deleted -> remove), {% pulse_presence %} shows who is here. The form is a plain POST that redirects back.


def live_page(request: HttpRequest, error: str | None = None) -> HttpResponse:
    # A lazy queryset: it is evaluated below {% pulse_stream_from %} in the template, after the channel's
    # position was read, so nothing published in between is missed.
    posts = Post.objects.order_by("-created_at", "-id")[:LIST_LIMIT]
    name = request.session.get("live_name", "")
    return render(
        request, "posts/live.html", {"posts": posts, "name": name, "error": error}, status=400 if error else 200
    )


def live_create(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    form = request.POST.dict()
    try:
        name = _text(form, "user_name", MAX_NAME).strip()
        content = _text(form, "content", MAX_CONTENT)
        _create_post(name, content)  # published as a fragment after commit (models.py)
    except BadRequest as exc:
        return live_page(request, error=exc.message)
    request.session["live_name"] = name
    return redirect("live")
