"""Signed stream names: a channel name signed by the server into a page, so only pages it rendered can listen.

``sign_stream("orders.42")`` returns an opaque string that a page carries (an attribute of a
``{% pulse_stream_from %}`` element, an SSE URL parameter). A connection that presents it back proves that
this server chose that channel for it: ``verify_stream(value)`` returns the app and channel it names, or
raises ``InvalidStream``. A stream may be bound to one client id (the user the page was rendered for); then
only a connection authenticated as that client may use it.

The signature is Django's ``signing.dumps`` with its own salt, so it is keyed by ``SECRET_KEY`` (rotating
``SECRET_KEY`` or listing the old one in ``SECRET_KEY_FALLBACKS`` behaves as it does for sessions). A signed
stream grants *subscribe* (listen, history, presence read) to that one channel; it grants no publish. It
grants presence *enter* only when it was signed with ``presence=`` data: the member then enters with exactly
that data, whatever the client sends (``{% pulse_presence %}``). Authorize hooks still run for the channel when
any are registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core import signing

from .exceptions import Forbidden
from .protocol import ErrorCode, check_channel

__all__ = ["InvalidStream", "StreamGrant", "remember_stream", "sign_stream", "verify_stream"]

SALT = "django_pulse.stream"


class InvalidStream(Forbidden):
    """A signed stream name was forged, truncated, expired, or bound to another client."""

    default_code = ErrorCode.FORBIDDEN


@dataclass(frozen=True)
class StreamGrant:
    """What a valid signed stream name grants: listening on ``channel`` of app ``kb_id``."""

    kb_id: str
    channel: str
    client_id: str | None
    presence: dict[str, Any] | None = None


def sign_stream(
    channel: str,
    *,
    kb_id: str | None = None,
    client_id: str | None = None,
    presence: dict[str, Any] | None = None,
) -> str:
    """Sign ``channel`` of app ``kb_id`` (default: the project's default app) for a page.

    With ``client_id`` the result is valid only for connections authenticated as that client. With ``presence``
    (a JSON-able dict) it also lets the connection enter the channel's presence, with exactly that data. Raises
    ``ProtocolViolation`` for an invalid channel name.
    """
    from ._conf import pulse_settings

    check_channel(channel)
    payload: dict[str, Any] = {"k": kb_id or pulse_settings.DEFAULT_KB_ID, "c": channel}
    if client_id is not None:
        payload["u"] = str(client_id)
    if presence is not None:
        payload["p"] = dict(presence)
    return signing.dumps(payload, salt=SALT, compress=False)


def verify_stream(value: object, *, client_id: str | None = None, max_age: int | None = None) -> StreamGrant:
    """Check a signed stream name; ``client_id`` is the presenting connection's client, if authenticated.

    Returns the ``StreamGrant``. Raises ``InvalidStream`` when the signature does not verify, the value is not
    a string, it is older than ``max_age`` seconds, or it is bound to a client other than ``client_id``.
    """
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise InvalidStream("The signed stream name is missing or malformed.")
    try:
        payload = signing.loads(value, salt=SALT, max_age=max_age)
    except signing.BadSignature as exc:
        raise InvalidStream("The signed stream name does not verify (forged, truncated or expired).") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), str) or not isinstance(payload.get("k"), str):
        raise InvalidStream("The signed stream name is malformed.")
    bound = payload.get("u")
    if bound is not None and bound != client_id:
        raise InvalidStream("The signed stream name was issued for another client.")
    presence = payload.get("p")
    if presence is not None and not isinstance(presence, dict):
        raise InvalidStream("The signed stream name is malformed.")
    return StreamGrant(kb_id=payload["k"], channel=payload["c"], client_id=bound, presence=presence)


def remember_stream(
    grants: dict[str, StreamGrant], value: object, *, channel: object, kb_id: str, client_id: str
) -> StreamGrant:
    """Verify the ``stream`` member of a request about ``channel`` on a connection of ``client_id`` in app
    ``kb_id``, and record the grant in the connection's ``grants`` (channel -> grant) for later requests.

    A grant with presence data is kept when a later stream of the same channel carries none. Raises
    ``InvalidStream`` when the value does not verify for this client, or names another app or channel.
    """
    grant = verify_stream(value, client_id=client_id)
    if grant.kb_id != kb_id or grant.channel != channel:
        raise InvalidStream("The signed stream name is for another channel.")
    previous = grants.get(grant.channel)
    if grant.presence is None and previous is not None and previous.presence is not None:
        grant = previous
    grants[grant.channel] = grant
    return grant
