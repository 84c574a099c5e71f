"""The staff channel: the internal channel the admin's live view (``django_pulse.ops.live_view``) listens on.

The live view eats its own dog food: its page subscribes, with pulse.js, to channel ``STAFF_CHANNEL`` of the
internal app ``STAFF_KB_ID``, and the server process holding that subscription publishes snapshots there
(``live_view``). The channel is refused to anyone else, whatever token they hold:

- it lives in an app of its own, so tokens of the project's apps (signed with their secrets) never reach it;
- within that app ``authorization.decide`` hands every decision to ``admit``, which allows one operation,
  ``subscribe`` on ``STAFF_CHANNEL``, and only to a token whose capabilities name that channel exactly (not
  through ``*``) and whose client id is ``staff-<pk>`` of an active staff user who has the permission
  ``django_pulse.view_live``, checked in the database at each subscribe. Nothing else (publish, presence,
  history, another channel) is allowed there.

An admitted subscribe sends ``watch_requested`` so this process starts its watcher (connected by
``apps.PulseConfig.ready``; this module imports neither the SDK nor the live view, which import it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.dispatch import Signal

from ..exceptions import Forbidden
from ..protocol import ErrorCode, Operation

if TYPE_CHECKING:
    from ..protocol.tokens import Claims

__all__ = [
    "MANAGE_PERMISSION",
    "STAFF_CHANNEL",
    "STAFF_CLIENT_PREFIX",
    "STAFF_KB_ID",
    "VIEW_PERMISSION",
    "admit",
    "may_watch",
    "staff_client_id",
    "watch_requested",
]

# The internal app of the live view (created on first use). A kbId users are unlikely to pick: it starts with "_".
STAFF_KB_ID = "_pulse-admin"
STAFF_CHANNEL = "live"
STAFF_CLIENT_PREFIX = "staff-"
VIEW_PERMISSION = "django_pulse.view_live"
MANAGE_PERMISSION = "django_pulse.manage_live"

# Sent (sender = this module) after a subscribe to the staff channel was admitted, on the process that holds it.
watch_requested = Signal()


def staff_client_id(user: Any) -> str:
    """The client id of ``user``'s live-view connection."""
    return f"{STAFF_CLIENT_PREFIX}{user.pk}"


def may_watch(user: Any) -> bool:
    """Whether ``user`` may see the live view: active staff with ``django_pulse.view_live``."""
    return bool(
        user is not None
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and user.has_perm(VIEW_PERMISSION)
    )


def _staff_user_may_watch(client_id: str) -> bool:
    from django.contrib.auth import get_user_model

    pk = client_id.removeprefix(STAFF_CLIENT_PREFIX)
    if pk == client_id or not pk:
        return False
    try:
        user = get_user_model()._default_manager.filter(pk=pk).first()
    except (ValueError, TypeError):  # not a valid primary key
        return False
    return may_watch(user)


async def admit(claims: Claims, channel: str, operation: Operation) -> None:
    """Allow ``operation`` on ``channel`` of the staff app, or raise ``Forbidden`` (see the module docstring)."""
    if (
        operation is not Operation.SUBSCRIBE
        or channel != STAFF_CHANNEL
        or Operation.SUBSCRIBE.value not in claims.capabilities.get(STAFF_CHANNEL, ())
    ):
        raise Forbidden(f"Channel {channel!r} of the live view is not open to this token.", ErrorCode.FORBIDDEN)
    if not await database_sync_to_async(_staff_user_may_watch)(claims.client_id):
        raise Forbidden("The live view is for staff with the permission django_pulse.view_live.", ErrorCode.FORBIDDEN)
    await watch_requested.asend(sender=__name__)
