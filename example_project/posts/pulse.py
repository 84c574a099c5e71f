"""Who may listen on a private channel: an authorize hook, not the secrecy of the id alone.

A private channel is ``private-<48 hex digits>`` (``Member.private_channel``). The token of the private page
may subscribe to ``private-*`` in general; this hook then lets a connection in only when the member its token
was issued for owns that channel, so a leaked or guessed id gets ``forbidden``.
"""

from __future__ import annotations

from typing import Any

from django_pulse import pulse

from .models import Member

__all__ = ["member_for", "private_channel"]

CLIENT_PREFIX = "member-"


def member_for(client_id: str) -> Member | None:
    """``PULSE["USER_RESOLVER"]``: the ``Member`` a token's client id (``member-<pk>``) stands for."""
    pk = client_id.removeprefix(CLIENT_PREFIX)
    if pk == client_id or not pk.isdigit():
        return None
    return Member.objects.filter(pk=int(pk)).first()


@pulse.authorize("private-{secret}")
def private_channel(member: Any, secret: str) -> bool:
    return isinstance(member, Member) and member.private_channel == f"private-{secret}"
