"""Access to apps: resolve the app (kbId) of a call, cache which apps are enabled, verify a token against its app.

``protocol/tokens.py`` is pure JWT; this module adds the database (the app's secret and ``enabled`` flag).
Channel-level decisions (capabilities, authorize hooks) are ``django_pulse.authorization``'s.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connection as db_connection
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .._conf import pulse_settings
from ..broker.base import CONTROL_TOPIC
from ..exceptions import AppError, PulseError, TokenError
from ..models import ApiKey, PulseApp
from ..protocol import ErrorCode
from ..protocol.tokens import Claims, peek_kb_id, verify_token
from .app_cache import ENABLED_APP_TTL, AppCache
from .control import app_disabled_command
from .runtime import get_runtime

__all__ = [
    "aauthenticate_token",
    "aenabled_kb",
    "authenticate_token",
    "enabled_kb",
    "forget_app",
    "resolve_app",
]

logger = logging.getLogger("django_pulse.app_access")


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
            raise AppError(
                f"No Pulse app has kbId {kb!r}; create it with 'manage.py pulse enable --kb-id {kb}'.",
                ErrorCode.APP_UNKNOWN,
            )
        app = found
    if require_enabled and not app.enabled:
        raise AppError(
            f"The Pulse app {kb!r} is disabled; enable it with 'manage.py pulse enable'.", ErrorCode.APP_DISABLED
        )
    return app


def enabled_kb(kb_id: str | None, *, apps: AppCache) -> str:
    """The kbId of app ``kb_id`` (None: the default app) after checking it is enabled, cached in ``apps`` (the
    runtime's cache).

    Raises ``AppError`` (``app_unknown`` / ``app_disabled``) as ``resolve_app`` does.
    """
    kb = kb_id or pulse_settings.DEFAULT_KB_ID
    if apps.is_enabled(kb):
        return kb
    app = resolve_app(kb)
    apps.remember(app.kb_id)
    return app.kb_id


async def aenabled_kb(kb_id: str | None, *, apps: AppCache) -> str:
    """``enabled_kb`` for async code: no thread hop when the answer is cached."""
    kb = kb_id or pulse_settings.DEFAULT_KB_ID
    if apps.is_enabled(kb):
        return kb
    return await sync_to_async(enabled_kb, thread_sensitive=True)(kb, apps=apps)


def forget_app(kb_id: str | None = None) -> None:
    """Drop this process's cached state of app ``kb_id`` (None: of every app)."""
    # A model signal's receiver (and the commands'): an entry point, where the runtime is looked up.
    get_runtime().apps.forget(kb_id)


def _on_app_changed(sender: Any, instance: PulseApp, **kwargs: Any) -> None:
    forget_app(instance.kb_id)


def _on_key_revoked(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    if instance.revoked_at is not None:
        forget_app()  # this process checks its tokens' keys again at once (the others within ENABLED_APP_TTL)


post_save.connect(_on_app_changed, sender=PulseApp, dispatch_uid="django_pulse.app_access.app_saved")
post_save.connect(_on_key_revoked, sender=ApiKey, dispatch_uid="django_pulse.app_access.key_revoked")
post_delete.connect(_on_app_changed, sender=PulseApp, dispatch_uid="django_pulse.app_access.app_deleted")


# -- disabling an app anywhere closes its connections everywhere -------------------------------------------------------
# (an admin's disable must not wait for the tokens to expire)


def _close_connections_of_disabled_app(
    sender: type[PulseApp], instance: PulseApp, created: bool, **kwargs: Any
) -> None:
    """``post_save``: a saved app that is disabled has its open connections closed (4003) on every process.

    The admin's "Enabled" tick box, ``manage.py pulse disable`` and ``app.enabled = False; app.save()`` all
    end here; the control message goes out once the transaction commits (so a rolled-back save closes
    nothing). A disabled app has no connections left, so saving it again costs one no-op broadcast. A broker
    that cannot be reached is logged, never raised into the save: the app is disabled anyway, and every
    connection of it is refused at its next request.
    """
    if created or instance.enabled:
        return
    kb_id = instance.kb_id

    def close() -> None:
        try:
            # A model signal's receiver: an entry point, where the runtime is looked up.
            get_runtime().broker.broadcast_sync(CONTROL_TOPIC, app_disabled_command(kb_id))
        except PulseError as exc:
            logger.warning("App %s is disabled but its connections could not be closed now: %s", kb_id, exc.message)

    def sweep_again() -> None:
        try:
            # Only if it is still disabled: an app enabled again meanwhile keeps its new connections.
            if PulseApp.objects.filter(kb_id=kb_id, enabled=False).exists():
                close()
        except Exception:  # a runtime or database torn down meanwhile (process exit): nothing left to close
            logger.debug("The second close of disabled app %s's connections did not run.", kb_id, exc_info=True)
        finally:
            db_connection.close()  # this thread's own connection, opened by the query

    def close_and_sweep_again() -> None:
        close()
        # A process may verify a token from its cache of enabled apps just before the control message reaches
        # it and open that connection after the close: every such entry was read before the save and expires
        # within ENABLED_APP_TTL, so one more close then leaves none (``manage.py pulse disable`` waits for it).
        sweep = threading.Timer(ENABLED_APP_TTL + 0.1, sweep_again)
        sweep.daemon = True
        sweep.start()

    transaction.on_commit(close_and_sweep_again, robust=True)


post_save.connect(
    _close_connections_of_disabled_app, sender=PulseApp, dispatch_uid="django_pulse.app_access.close_disabled_app"
)


def authenticate_token(token: object, *, apps: AppCache | None = None) -> Claims:
    """Verify ``token`` against its app; returns its claims or raises ``TokenError`` / ``AppError``. With
    ``apps`` (a runtime's cache) the app's secret is remembered there for ``aauthenticate_token``.

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
    if apps is not None:
        apps.remember_secret(kb_id, app.token_secret)
    _check_issuing_key(claims, apps, _key_is_active(claims))
    return claims


def _needs_key_check(claims: Claims) -> bool:
    return claims.key_id is not None and pulse_settings.REVOKE_TOKENS_WITH_KEY


def _key_is_active(claims: Claims) -> bool | None:
    """Whether the API key that ``claims``' token was issued for is active (a query); None: nothing to check."""
    if not _needs_key_check(claims):
        return None
    return ApiKey.objects.filter(app__kb_id=claims.kb_id, prefix=claims.key_id, revoked_at__isnull=True).exists()


def _check_issuing_key(claims: Claims, apps: AppCache | None, active: bool | None) -> None:
    """``REVOKE_TOKENS_WITH_KEY``: refuse a token whose API key is revoked (``token_invalid``: the client gets a
    new token, issued with a key that is still active); ``active`` None means nothing was checked."""
    if active is None:
        return
    assert claims.key_id is not None
    if apps is not None:
        apps.remember_key(claims.kb_id, claims.key_id, active)
    if not active:
        raise TokenError(
            "The API key this token was issued with has been revoked; get a new token.", ErrorCode.TOKEN_INVALID
        )


_key_is_active_in_thread = database_sync_to_async(_key_is_active)


_authenticate_in_thread = database_sync_to_async(authenticate_token)


async def aauthenticate_token(token: object, *, apps: AppCache) -> Claims:
    """``authenticate_token`` for async code (a connection's ``auth``, a token refresh, an SSE ticket).

    While the app's secret is cached (it was read enabled less than ENABLED_APP_TTL ago, and has not been saved,
    deleted or disabled since: ``AppCache``), the token is verified on the event loop: no thread hop and no
    query, which a burst of connections would otherwise queue behind one thread. Else through the database,
    which fills the cache (``apps``: the connection's runtime's). Raises as ``authenticate_token``.
    """
    kb_id = peek_kb_id(token)
    secret = apps.token_secret(kb_id)
    claims: Claims
    if secret is None:
        claims = await _authenticate_in_thread(token, apps=apps)
    else:
        assert isinstance(token, str)
        claims = verify_token(token, secret=secret, kb_id=kb_id, leeway=pulse_settings.TOKEN_LEEWAY)
        if _needs_key_check(claims):
            assert claims.key_id is not None
            active = apps.key_active(kb_id, claims.key_id)
            if active is None:
                active = await _key_is_active_in_thread(claims)
            _check_issuing_key(claims, apps, active)
    # A connection keeps its claims for its whole life: equal ones are kept once (AppCache.share_claims).
    return apps.share_claims(claims)
