"""Apps and tokens together: resolve the app of a call, and verify a presented token against its app.

``tokens.py`` is pure; this module adds the database (the app's secret and ``enabled`` flag).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async

from .conf import pulse_settings
from .exceptions import AppError
from .models import PulseApp
from .protocol import ErrorCode
from .tokens import Claims, peek_kb_id, verify_token

__all__ = ["aauthenticate_token", "authenticate_token", "resolve_app"]


def resolve_app(kb_id: str | None, *, require_enabled: bool = True) -> PulseApp:
    """The app ``kb_id`` (None: the project's default app, created on first use).

    Raises ``AppError`` with ``app_unknown`` or ``app_disabled``.
    """
    default = pulse_settings.DEFAULT_KB_ID
    kb = kb_id or default
    if kb == default:
        app, _ = PulseApp.objects.ensure(kb)
    else:
        found = PulseApp.objects.filter(kb_id=kb).first()
        if found is None:
            raise AppError(f"No Pulse app has kbId {kb!r}; create it with 'manage.py pulse enable --kb-id {kb}'.",
                           ErrorCode.APP_UNKNOWN)
        app = found
    if require_enabled and not app.enabled:
        raise AppError(f"The Pulse app {kb!r} is disabled; enable it with 'manage.py pulse enable'.",
                       ErrorCode.APP_DISABLED)
    return app


def authenticate_token(token: object) -> Claims:
    """Verify ``token`` against its app; returns its claims or raises ``TokenError`` / ``AppError``.

    The signature is checked before the app's ``enabled`` flag, so a forged token never learns whether an app
    is disabled.
    """
    kb_id = peek_kb_id(token)
    app = PulseApp.objects.filter(kb_id=kb_id).first()
    if app is None:
        raise AppError(f"No Pulse app has kbId {kb_id!r}.", ErrorCode.APP_UNKNOWN)
    assert isinstance(token, str)
    claims = verify_token(token, secret=app.token_secret, kb_id=kb_id, leeway=pulse_settings.TOKEN_LEEWAY)
    if not app.enabled:
        raise AppError(f"The Pulse app {kb_id!r} is disabled.", ErrorCode.APP_DISABLED)
    return claims


aauthenticate_token = sync_to_async(authenticate_token, thread_sensitive=True)
