"""The HTTP API's error bodies: every error is ``{"error": {"code": "...", "message": "..."}}``.

Pulse errors (``django_pulse.exceptions``) keep their protocol code and get the status of ``STATUS_FOR_CODE``;
DRF and Django errors get a code of their own (``not_authenticated``, ``not_found``, ...). Validation errors
also carry ``fields``: the serializer's messages per field.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..exceptions import PulseError, Unavailable
from ..protocol import ErrorCode

__all__ = ["STATUS_FOR_CODE", "error_body", "pulse_exception_handler"]

STATUS_FOR_CODE: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_CHANNEL: 400,
    ErrorCode.PRESENCE_DATA_TOO_LARGE: 413,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_NOT_YET_VALID: 401,
    ErrorCode.CLIENT_ID_MISMATCH: 403,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.APP_DISABLED: 403,
    ErrorCode.APP_UNKNOWN: 404,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}

# DRF exception class -> our code (the status is the exception's own).
_DRF_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ParseError, ErrorCode.INVALID_JSON),
    (exceptions.ValidationError, ErrorCode.BAD_REQUEST),
    (exceptions.NotAuthenticated, ErrorCode.NOT_AUTHENTICATED),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.PermissionDenied, ErrorCode.FORBIDDEN),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, ErrorCode.RATE_LIMITED),
]
_KNOWN_CODES = {code.value for code in ErrorCode}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": str(code), "message": message, **extra}}


def _publishes(view: Any) -> bool:
    return bool(getattr(view, "publishes", False))


def _outcome(published: bool | None) -> bool | str:
    """``Unavailable.published`` as the body says it: ``true``, ``false`` or ``"unknown"``."""
    return "unknown" if published is None else published


def _first_message(detail: Any, path: str = "") -> str:
    """One sentence out of DRF's nested validation detail, naming the field it is about."""
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        where = key if key != "non_field_errors" else ""
        return _first_message(value, f"{path}.{where}".strip(".") if where else path)
    if isinstance(detail, list) and detail:
        for index, item in enumerate(detail):
            if item:
                nested = isinstance(item, dict | list)
                return _first_message(item, f"{path}[{index}]" if nested else path)
    text = str(detail).rstrip(".") + "."
    return f"{path}: {text}" if path else text


def _first_code(codes: Any) -> str | None:
    """The first validation code that is a protocol error code (e.g. ``invalid_channel``), if any."""
    if isinstance(codes, dict):
        codes = list(codes.values())
    if isinstance(codes, list):
        for item in codes:
            found = _first_code(item)
            if found:
                return found
        return None
    return str(codes) if str(codes) in _KNOWN_CODES else None


def pulse_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler of the Pulse views (set per view, so the project's own handler is untouched)."""
    if isinstance(exc, PulseError):
        extra: dict[str, Any] = {}
        if isinstance(exc, Unavailable) and context.get("view") is not None and _publishes(context["view"]):
            # A publish's retry depends on what the failure did: say it, for the message and its id alike.
            extra["published"] = _outcome(exc.published)
        answer = Response(
            error_body(exc.code.value, exc.message, **extra), status=STATUS_FOR_CODE.get(exc.code.value, 400)
        )
        if exc.code == ErrorCode.UNAVAILABLE:
            # The broker logged the outage once, when calls started failing (and logs when they succeed again):
            # Django's ERROR line for each 503 would bury that under one line per refused request.
            answer._has_been_logged = True  # type: ignore[attr-defined]
        return answer
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("request_too_large", "The request body is larger than the server accepts."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: DRF re-raises it, Django logs it and answers 500
    api_exc = exc if isinstance(exc, exceptions.APIException) else None
    code: str | None = next((c for cls, c in _DRF_CODES if api_exc is not None and isinstance(api_exc, cls)), None)
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(
            _first_code(exc.get_codes()) or ErrorCode.BAD_REQUEST, _first_message(exc.detail), fields=fields
        )
        return response
    if code is None:
        code = (
            "not_found"
            if response.status_code == 404
            else (
                ErrorCode.FORBIDDEN if response.status_code == 403 else str(getattr(api_exc, "default_code", "error"))
            )
        )
    detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
    message = str(detail)
    if code == ErrorCode.FORBIDDEN and message.startswith("CSRF Failed"):
        code = "csrf_failed"
    wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
    if wait is not None:
        message = f"Too many requests with this API key; retry in {max(1, round(wait))} s."
    response.data = error_body(code, message)
    return response
