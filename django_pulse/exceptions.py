"""The exceptions of django-pulse, importable from this one module.

Raised by the server SDK, the consumer and the HTTP API: one hierarchy, each with an ``ErrorCode``
(docs/protocol.md lists them) and a human sentence; the WebSocket consumer turns them into error frames / close
codes and the HTTP API into JSON error bodies::

    PulseError (code: ErrorCode)
    ├── TokenError            a token failed verification (token_invalid, token_expired, ...)
    ├── AppError              the app (kbId) is unknown or disabled
    ├── ProtocolViolation     a frame broke the protocol (bad_request, invalid_channel, ...)
    ├── LimitExceeded         a limit was hit (message_too_large, rate_limited, ...)
    ├── Forbidden             the capabilities do not allow the operation
    └── Unavailable           the broker (Redis) cannot be reached

Raised by the clients for other programs (``django_pulse.clients``; the same classes, also importable from
there)::

    PulseClientError                 base of every client error
    ├── PulseConnectionError         the server did not answer (HTTP client)
    ├── PulseReplyError              an ``error`` reply or a refused ``auth`` (WebSocket client): ``code``, ``message``
    └── PulseAPIError                an HTTP API error body: ``status``, ``code``, ``message``
        ├── BadRequest (400)  NotAuthenticated (401)  PermissionDenied (403)  NotFound (404)
        └── PayloadTooLarge (413)  Throttled (429)  ServiceUnavailable (503)

``ErrorCode`` and ``CloseCode`` are the codes an error or a closed connection carries (``CloseCode(code).retry``
says whether reconnecting can help). The client classes load on first use, so the server never imports the
clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol.codes import CloseCode, ErrorCode

if TYPE_CHECKING:
    from .clients.exceptions import PulseClientError, PulseConnectionError, PulseReplyError
    from .clients.http import (
        BadRequest,
        NotAuthenticated,
        NotFound,
        PayloadTooLarge,
        PermissionDenied,
        PulseAPIError,
        ServiceUnavailable,
        Throttled,
    )

__all__ = [
    "AppError",
    "BadRequest",
    "CloseCode",
    "ErrorCode",
    "Forbidden",
    "LimitExceeded",
    "NotAuthenticated",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProtocolViolation",
    "PulseAPIError",
    "PulseClientError",
    "PulseConnectionError",
    "PulseError",
    "PulseReplyError",
    "ServiceUnavailable",
    "Throttled",
    "TokenError",
    "Unavailable",
]

# The clients' exceptions, by the module that defines them (loaded lazily, see __getattr__).
_CLIENT_ERRORS = {
    "PulseClientError": "exceptions",
    "PulseConnectionError": "exceptions",
    "PulseReplyError": "exceptions",
    "PulseAPIError": "http",
    "BadRequest": "http",
    "NotAuthenticated": "http",
    "PermissionDenied": "http",
    "NotFound": "http",
    "PayloadTooLarge": "http",
    "Throttled": "http",
    "ServiceUnavailable": "http",
}


def __getattr__(name: str) -> Any:
    module = _CLIENT_ERRORS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"django_pulse.clients.{module}"), name)


class PulseError(Exception):
    """Base of every django-pulse error; ``code`` is the protocol error code."""

    default_code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        # The ``ref`` of the request that caused it, when known (protocol.parse_frame sets it).
        self.ref: str | int | None = None

    def __str__(self) -> str:
        return f"{self.message} [{self.code.value}]"


class TokenError(PulseError):
    """A token failed verification: malformed, badly signed, expired, or for another app."""

    default_code = ErrorCode.TOKEN_INVALID


class AppError(PulseError):
    """The app (kbId) is unknown or disabled."""

    default_code = ErrorCode.APP_UNKNOWN


class ProtocolViolation(PulseError):
    """A frame or request broke the protocol: bad JSON, an unknown action, an invalid channel name."""

    default_code = ErrorCode.BAD_REQUEST


class LimitExceeded(PulseError):
    """A limit was hit: a message too large, a rate limit, too many subscriptions or connections."""

    default_code = ErrorCode.MESSAGE_TOO_LARGE


class Forbidden(PulseError):
    """The token's capabilities (or an authorize hook) do not allow the operation on the channel."""

    default_code = ErrorCode.FORBIDDEN


class Unavailable(PulseError):
    """The broker (Redis) cannot be reached; the operation may succeed when retried.

    ``published`` says what a failed publish did: ``False`` nothing was written (its message id is still free,
    so a retry is delivered), ``True`` the message was published and its id recorded but the replicas did not
    confirm it (``REDIS_WAIT_REPLICAS``; a retry with the same id is answered with that id and not delivered
    again), ``None`` unknown (the connection broke after the publish was sent: retry with the same id). It is
    ``False`` for every other operation.
    """

    default_code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str, code: ErrorCode | None = None, *, published: bool | None = False) -> None:
        super().__init__(message, code)
        self.published = published
