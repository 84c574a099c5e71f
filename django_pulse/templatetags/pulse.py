"""Live templates in Django templates: ``{% load pulse %}`` (docs/live-templates.md).

- ``{% pulse_script %}``: the browser SDK and its configuration for this page's visitor (the logged-in
  user's token endpoint with the CSRF token, or the anonymous one).
- ``{% pulse_stream_from obj_or_channel ... %}``: a hidden ``<pulse-stream-source>`` element carrying the
  channel's signed stream name and the channel's position when the page was rendered; the SDK subscribes
  with it and applies the fragments published on the channel (``pulse.publish_html``, ``@publishes(template=)``).
- ``{% pulse_presence channel %}``: a live "who is here" region; the visitor enters the channel's presence
  with data the server chose and signed into the page.

Put ``{% pulse_stream_from %}`` before the content it keeps live: the channel's position is read when the tag
renders, and the SDK asks for everything published after it, so nothing published between the page's
queries and the browser's subscribe is missed (as long as the queries run after the tag, e.g. lazy
querysets evaluated further down the template).
"""

from __future__ import annotations

import logging
from typing import Any

from django import template
from django.forms.utils import flatatt
from django.middleware.csrf import get_token as csrf_token
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString, mark_safe

from .._conf import pulse_settings
from .._visitors import anonymous_client_id
from ..live import stream_name
from ..streams import sign_stream

__all__ = ["pulse_presence", "pulse_script", "pulse_stream_from"]

logger = logging.getLogger("django_pulse.live")
register = template.Library()

CONFIG_ID = "pulse-live-config"


def _request(context: template.Context) -> Any:
    return getattr(context, "request", None) or context.get("request")


def _user(request: Any) -> Any:
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _bound_client(request: Any, bind: bool, *, anonymous: bool = False) -> str | None:
    """The client id a logged-in user's token has (``POST /pulse/token/`` issues it for ``str(user.pk)``); with
    ``anonymous``, for a visitor who is not logged in, the anonymous id of the visitor's session, which
    ``POST /pulse/token/anonymous/`` issues its tokens for."""
    if not bind:
        return None
    user = _user(request)
    if user is not None:
        return str(user.pk)
    # Without a session (no SessionMiddleware) there is no visitor to bind to: the stream stays unbound.
    if anonymous and getattr(request, "session", None) is not None and pulse_settings.LIVE_ANONYMOUS:
        return anonymous_client_id(request)
    return None


@register.simple_tag(takes_context=True)
def pulse_script(context: template.Context, *, kb_id: str | None = None) -> SafeString:
    """The SDK's ``<script>`` and the live elements' configuration (a JSON ``<script>`` the SDK reads).

    A logged-in user's page gets its tokens from ``POST /pulse/token/`` (session + the CSRF token, embedded
    here so ``CSRF_COOKIE_HTTPONLY`` does not matter); anyone else's from ``POST /pulse/token/anonymous/``
    (a token with no capabilities: it opens only the signed streams on the page), unless
    ``PULSE["LIVE_ANONYMOUS"]`` is False: then the live elements stay static.
    """
    from ..sdk import endpoint_url

    request = _request(context)
    config: dict[str, Any] = {"endpoint": endpoint_url(request)}
    try:
        if _user(request) is not None:
            config["authUrl"] = reverse("django_pulse:token")
            config["authHeaders"] = {"X-CSRFToken": csrf_token(request)}
            if kb_id is not None:
                config["authParams"] = {"kbId": kb_id}
        elif pulse_settings.LIVE_ANONYMOUS:
            config["authUrl"] = reverse("django_pulse:anonymous-token")
        else:
            config = {"disabled": True}
    except NoReverseMatch:
        raise template.TemplateSyntaxError(
            "{% pulse_script %} needs django_pulse's URLs: path('pulse/', include('django_pulse.urls'))."
        ) from None
    return format_html(
        '{}\n<script src="{}"></script>', json_script(config, CONFIG_ID), static("django_pulse/pulse.js")
    )


def _position(channel: str, kb_id: str | None) -> dict[str, str]:
    """The channel's serial and epoch now, as attributes; nothing when the broker cannot be reached."""
    from ..sdk import stream_position

    try:
        serial, epoch = stream_position(channel, kb_id=kb_id)
    except Exception as exc:  # the page still renders; the SDK then subscribes from "now"
        logger.warning("Could not read the position of channel %r for a live page: %s", channel, exc)
        return {}
    return {"serial": str(serial), "epoch": epoch}


@register.simple_tag(takes_context=True)
def pulse_stream_from(
    context: template.Context,
    *parts: Any,
    region: str | None = None,
    kb_id: str | None = None,
    bind: bool = True,
) -> SafeString:
    """``<pulse-stream-source>`` for the channel named by ``parts`` (``live.stream_name``).

    ``region``: the id of the element to fetch again (from this page's URL) when updates were missed and
    cannot be replayed; without it the page reloads. ``bind`` (default True): a logged-in user's stream is
    valid only for that user's connections.
    """
    request = _request(context)
    channel = stream_name(*parts)
    signed = sign_stream(channel, kb_id=kb_id, client_id=_bound_client(request, bind))
    attrs: dict[str, str] = {"channel": channel, "signed-stream-name": signed, **_position(channel, kb_id)}
    if region:
        attrs["region"] = str(region)
    return format_html("<pulse-stream-source{} hidden></pulse-stream-source>", flatatt(attrs))


@register.simple_tag(takes_context=True)
def pulse_presence(
    context: template.Context,
    *parts: Any,
    name: Any = None,
    data: dict[str, Any] | None = None,
    enter: bool = True,
    template_name: str = "django_pulse/presence.html",
    kb_id: str | None = None,
    bind: bool = True,
) -> SafeString:
    """A live "who is here" region of the channel named by ``parts``.

    The visitor enters presence (unless ``enter=False``) with ``data``, by default ``{"name": name}``, where
    ``name`` defaults to the logged-in user's username (empty for anonymous visitors). The data is signed
    into the page: the client cannot change it. ``template_name`` renders the region (context: ``channel``,
    ``count``, ``members`` now, ``attrs`` for the root element); the SDK keeps ``[data-pulse-count]`` and
    ``[data-pulse-members]`` up to date (docs/live-templates.md). ``bind`` (default True): the stream is valid
    only for the visitor the page was rendered for (the logged-in user, or the anonymous id of the visitor's
    session).
    """
    request = _request(context)
    channel = stream_name(*parts)
    if data is None:
        user = _user(request)
        if name is None:
            name = user.get_username() if user is not None else ""
        data = {"name": str(name)}
    # A stream that enters presence is bound to the visitor, anonymous ones included: a page fetched once must
    # not let its fetcher enter the channel with many identities.
    client_id = _bound_client(request, bind, anonymous=enter)
    signed = sign_stream(channel, kb_id=kb_id, client_id=client_id, presence=data if enter else None)
    members: list[dict[str, Any]] = []
    try:
        from ..sdk import presence

        members = list(presence(channel, kb_id=kb_id)["members"])
    except Exception as exc:  # rendered empty; the SDK fills it in once connected
        logger.warning("Could not read the presence of channel %r for a live page: %s", channel, exc)
    attrs = {"channel": channel, "signed-stream-name": signed}
    if not enter:
        attrs["watch-only"] = ""
    html = render_to_string(
        template_name,
        {"channel": channel, "count": len(members), "members": members, "attrs": mark_safe(flatatt(attrs))},
        request=request,
    )
    return mark_safe(html)
