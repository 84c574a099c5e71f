"""Live templates: HTML fragments that travel as ordinary Pulse messages.

A fragment is a message named ``FRAGMENT_EVENT`` (``"pulse:html"``) whose data is
``{"action": ..., "target": ..., "html": ...}``: the browser SDK applies it to the element whose id is
``target`` (docs/live-templates.md). Because it is a normal message it has the channel's serial, is kept in
history, is replayed on resume and obeys ``MAX_MESSAGE_SIZE``, so JSON and HTML subscribers can share a
channel.

    from django_pulse import pulse
    pulse.publish_html("posts", "posts/_post.html", {"post": post}, action="prepend", target="posts")

This module holds what the server SDK, the model publishers and the template tags share: the fragment's
shape (``fragment``), rendering it once (``render_fragment``), and channel names for objects
(``stream_name``). It performs no I/O besides template rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db import models
from django.template.loader import render_to_string

from .exceptions import ProtocolViolation
from .protocol import ErrorCode, check_channel

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "ACTIONS",
    "FRAGMENT_EVENT",
    "TARGETLESS_ACTIONS",
    "fragment",
    "render_fragment",
    "stream_name",
]

#: The event name of a live fragment on its channel (pulse.js swaps the HTML it carries into the page).
FRAGMENT_EVENT = "pulse:html"

# Turbo Streams' set: the first six put ``html`` relative to the target, ``remove`` deletes the target,
# ``refresh`` asks the page (or the stream's region) to reload itself.
#: The actions a fragment may carry (Turbo Streams' set).
ACTIONS = ("append", "prepend", "replace", "update", "remove", "before", "after", "refresh")
#: The actions that need no target element.
TARGETLESS_ACTIONS = ("refresh",)
_NO_HTML = ("remove", "refresh")
MAX_TARGET_LENGTH = 255


def fragment(action: str, target: str | None = None, html: str | None = None, *, morph: bool = False) -> dict[str, Any]:
    """The data of a fragment message: ``{"action", "target"?, "html"?, "method"?}``.

    ``morph`` (``replace`` and ``update`` only) adds ``"method": "morph"``: under Turbo the page morphs the
    element instead of swapping it (Turbo's ``method="morph"``); elsewhere it is a plain replace/update.

    Raises ``ProtocolViolation`` (``bad_request``) for an unknown action, a missing or over-long target
    (every action but ``refresh`` needs one), or ``html`` missing for an action that inserts it.
    """
    if action not in ACTIONS:
        raise ProtocolViolation(
            f"Unknown fragment action {action!r}: one of {', '.join(ACTIONS)}.", ErrorCode.BAD_REQUEST
        )
    data: dict[str, Any] = {"action": action}
    if action not in TARGETLESS_ACTIONS or target is not None:
        if not isinstance(target, str) or not 1 <= len(target) <= MAX_TARGET_LENGTH or any(c.isspace() for c in target):
            raise ProtocolViolation(
                f"A fragment's target must be an element id (1-{MAX_TARGET_LENGTH} characters, no spaces), "
                f"not {target!r}.",
                ErrorCode.BAD_REQUEST,
            )
        data["target"] = target
    if action not in _NO_HTML:
        if not isinstance(html, str):
            raise ProtocolViolation(f"The action {action!r} needs html.", ErrorCode.BAD_REQUEST)
        data["html"] = html
    if morph:
        if action not in ("replace", "update"):
            raise ProtocolViolation("morph applies to replace and update only.", ErrorCode.BAD_REQUEST)
        data["method"] = "morph"
    return data


def render_fragment(
    template_name: str | list[str],
    context: Mapping[str, Any] | None = None,
    *,
    action: str,
    target: str | None,
    request: HttpRequest | None = None,
    morph: bool = False,
) -> dict[str, Any]:
    """Render ``template_name`` once (Django's engine, autoescaped) and wrap it as a fragment.

    ``remove`` and ``refresh`` render nothing. Raises what rendering raises (``TemplateDoesNotExist``, ...)
    and ``ProtocolViolation`` as ``fragment`` does.
    """
    if action in _NO_HTML:
        return fragment(action, target, morph=morph)
    html = render_to_string(template_name, dict(context or {}), request=request)
    return fragment(action, target, html.strip(), morph=morph)


def stream_name(*parts: Any) -> str:
    """A channel name for what a page shows, as ``{% pulse_stream_from %}`` and ``@publishes`` compute it.

    Each part is a string (used as is), a model instance (``<app_label>.<model_name>.<pk>``) or a model class
    (``<app_label>.<model_name>``); parts are joined with ``:``. ``stream_name(post)`` is ``"posts.post.7"``,
    ``stream_name(room, "messages")`` is ``"chat.room.3:messages"``. Raises ``ProtocolViolation``
    (``invalid_channel``) when the result is not a valid channel name (e.g. an unsaved instance).
    """
    names = []
    for part in parts:
        if isinstance(part, models.Model):
            if part.pk is None:
                raise ProtocolViolation(
                    f"An unsaved {type(part).__name__} has no stream name.", ErrorCode.INVALID_CHANNEL
                )
            names.append(f"{part._meta.app_label}.{part._meta.model_name}.{part.pk}")
        elif isinstance(part, type) and issubclass(part, models.Model):
            names.append(f"{part._meta.app_label}.{part._meta.model_name}")
        else:
            names.append(str(part))
    name = ":".join(names)
    check_channel(name)
    return name
