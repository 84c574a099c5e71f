"""Who calls the HTTP API: an app's API key, or the admin credential of ``manage.py pulse``.

``Authorization: Bearer <credential>`` where the credential is

- an API key (``pk_…``): the key selects its app, which must be enabled (read with the key on every request,
  so a disable is seen at once by every process); its last use is recorded (at most one write a minute);
- an admin credential (``padm_…``): a short-lived value signed with the project's ``SECRET_KEY``
  (``django.core.signing``, its own salt, valid ``ADMIN_CREDENTIAL_MAX_AGE`` seconds) naming one app. The
  management commands mint one themselves to reach a running server whose state lives in its memory; anyone
  holding ``SECRET_KEY`` can already do everything, so it grants nothing new.

On success ``request.auth`` is a ``PulseCaller`` and ``request.user`` an ``AnonymousUser``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core import signing
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from ..exceptions import AppError
from ..models import ApiKey, PulseApp
from ..protocol import ErrorCode

__all__ = [
    "ADMIN_CREDENTIAL_MAX_AGE",
    "ADMIN_PREFIX",
    "ApiKeyAuthentication",
    "PulseCaller",
    "issue_admin_credential",
]

ADMIN_PREFIX = "padm_"
ADMIN_SALT = "django_pulse.api.admin-credential"
ADMIN_CREDENTIAL_MAX_AGE = 120


@dataclass(frozen=True)
class PulseCaller:
    """An authenticated API caller: the app it acts for, and its API key (None for the admin credential)."""

    app: PulseApp
    api_key: ApiKey | None = None

    @property
    def admin(self) -> bool:
        return self.api_key is None

    @property
    def kb_id(self) -> str:
        return self.app.kb_id


def issue_admin_credential(kb_id: str) -> str:
    """A credential for app ``kb_id`` that the API accepts for ``ADMIN_CREDENTIAL_MAX_AGE`` seconds."""
    return ADMIN_PREFIX + signing.dumps({"kb": kb_id}, salt=ADMIN_SALT)


def _verify_admin_credential(raw: str) -> str:
    try:
        payload = signing.loads(raw[len(ADMIN_PREFIX) :], salt=ADMIN_SALT, max_age=ADMIN_CREDENTIAL_MAX_AGE)
    except signing.SignatureExpired:
        raise exceptions.AuthenticationFailed("The admin credential has expired; commands mint a new one.") from None
    except signing.BadSignature:
        raise exceptions.AuthenticationFailed(
            "The admin credential is not valid for this server (is SECRET_KEY the same?)."
        ) from None
    kb_id = payload.get("kb") if isinstance(payload, dict) else None
    if not isinstance(kb_id, str):
        raise exceptions.AuthenticationFailed("The admin credential names no app.")
    return kb_id


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <api key | admin credential>``. No header: not this scheme (returns None)."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, PulseCaller] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send 'Authorization: Bearer <api key>' with exactly one key.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API key is not ASCII.") from None
        if raw.startswith(ADMIN_PREFIX):
            kb_id = _verify_admin_credential(raw)
            app = PulseApp.objects.filter(kb_id=kb_id).first()
            if app is None:
                raise exceptions.NotFound(f"No Pulse app has kbId {kb_id!r}.")
            return AnonymousUser(), PulseCaller(app=app)
        key = ApiKey.objects.authenticate(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("The API key is unknown or revoked.")
        if not key.app.enabled:
            # Read with the key (one query), never from a process's cache of enabled apps: a key of an app
            # disabled a moment ago on another process is refused here at once.
            raise AppError(f"The Pulse app {key.app.kb_id!r} is disabled.", ErrorCode.APP_DISABLED)
        key.touch()
        return AnonymousUser(), PulseCaller(app=key.app, api_key=key)

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="pulse"'
