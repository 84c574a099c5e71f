"""The server SDK: what views, workers, commands and signals call (``from django_pulse import pulse``).

One path for each job: the HTTP API, the management commands and the signals all call these functions.
Every function takes ``kb_id=None`` meaning the project's default app (``PULSE["DEFAULT_KB_ID"]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .authorization import authorize
from .conf import pulse_settings

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["authorize", "endpoint_url", "get_token"]


def endpoint_url(request: HttpRequest | None = None) -> str:
    """The absolute ws(s):// URL of the WebSocket endpoint.

    ``PULSE["ENDPOINT"]`` when set; else derived from ``request`` (its scheme and host, so it is right behind
    a proxy that Django trusts); else from ``PULSE["SERVER_URL"]``.
    """
    if pulse_settings.ENDPOINT:
        return pulse_settings.ENDPOINT
    if request is not None:
        return pulse_settings.endpoint_from_base(request.build_absolute_uri("/"))
    return pulse_settings.endpoint_from_base(pulse_settings.SERVER_URL)


def get_token(
    user_id: Any,
    *,
    kb_id: str | None = None,
    capabilities: dict[str, list[str]] | None = None,
    ttl: int | None = None,
    request: HttpRequest | None = None,
) -> dict[str, Any]:
    """Issue a token for client ``user_id`` of app ``kb_id``.

    Returns ``{"token", "endpoint", "kbId", "clientId", "expiresAt"}`` (``expiresAt`` in ms since the epoch).
    ``capabilities`` (channel pattern -> operations) defaults to ``PULSE["DEFAULT_CAPABILITIES"]``; ``ttl``
    (seconds) to ``PULSE["TOKEN_TTL"]``. Raises ``ValueError`` for a bad user id, capabilities or ttl, and
    ``AppError`` when the app is unknown or disabled.
    """
    from .auth import resolve_app
    from .tokens import issue_token, normalize_capabilities

    client_id = str(user_id) if isinstance(user_id, int | str) and not isinstance(user_id, bool) else None
    if not client_id or len(client_id) > 255:
        raise ValueError("user_id must be a non-empty string or integer of at most 255 characters")
    lifetime = pulse_settings.TOKEN_TTL if ttl is None else ttl
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 0 < lifetime <= 7 * 86400:
        raise ValueError("ttl must be a whole number of seconds between 1 and 604800 (7 days)")
    caps = normalize_capabilities(pulse_settings.DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    app = resolve_app(kb_id)
    token, claims = issue_token(
        secret=app.token_secret, kb_id=app.kb_id, client_id=client_id, capabilities=caps, ttl=lifetime
    )
    return {
        "token": token,
        "endpoint": endpoint_url(request),
        "kbId": app.kb_id,
        "clientId": client_id,
        "expiresAt": claims.expires_at * 1000,
    }
