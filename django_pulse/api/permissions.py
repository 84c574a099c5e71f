"""Permissions of the Pulse views, and the project's hook deciding who gets tokens."""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string
from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from .._conf import pulse_settings
from .authentication import PulseCaller

__all__ = ["HasApiKey", "IsPulseAdmin", "MayRequestToken", "token_capabilities"]


class HasApiKey(BasePermission):
    """An API key (or the admin credential) authenticated the request."""

    message = "Send 'Authorization: Bearer <api key>'."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, PulseCaller)


class IsPulseAdmin(BasePermission):
    """Only the admin credential of ``manage.py pulse`` (operations on the server process itself)."""

    message = "This endpoint is for 'manage.py pulse' (its admin credential), not for API keys."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not isinstance(request.auth, PulseCaller):
            return False
        return request.auth.admin


class MayRequestToken(BasePermission):
    """An API key, or a logged-in Django user (session; DRF enforces CSRF for it)."""

    message = "Log in, or send 'Authorization: Bearer <api key>' with a userId."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, PulseCaller) or bool(request.user and request.user.is_authenticated)


def token_capabilities(request: Request, user_id: str) -> dict[str, list[str]] | None:
    """Ask the project's ``PULSE["TOKEN_PERMISSION"]`` hook about a token for ``user_id``.

    The hook, ``(request, user_id) -> dict | None``, returns the token's capabilities, or None for
    ``DEFAULT_CAPABILITIES``; it refuses by raising ``PermissionDenied`` (Django's or DRF's) or returning False.
    Without a hook every authenticated caller gets the default capabilities.
    """
    path = pulse_settings.TOKEN_PERMISSION
    if not path:
        return None
    hook: Any = import_string(path)
    result = hook(request, user_id)
    if result is False:
        raise exceptions.PermissionDenied(f"The project does not issue tokens for user {user_id!r}.")
    if result is None or result is True:
        return None
    if not isinstance(result, dict):
        raise TypeError(f"PULSE['TOKEN_PERMISSION'] ({path}) must return a dict, None or False, not {result!r}")
    return result
