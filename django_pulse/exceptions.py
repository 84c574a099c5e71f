"""The one exception hierarchy of django-pulse.

    PulseError (code: ErrorCode)
    ├── TokenError            a token failed verification (token_invalid, token_expired, ...)
    ├── AppError              the app (kbId) is unknown or disabled
    ├── ProtocolViolation     a frame broke the protocol (bad_request, invalid_channel, ...)
    ├── LimitExceeded         a limit was hit (message_too_large, rate_limited, ...)
    ├── Forbidden             the capabilities do not allow the operation
    └── Unavailable           the broker (Redis) cannot be reached

Every error carries an ``ErrorCode`` (docs/protocol.md lists them) and a human sentence; the WebSocket
consumer turns them into error frames / close codes and the HTTP API into JSON error bodies.
"""

from __future__ import annotations

from .protocol.codes import ErrorCode

__all__ = [
    "AppError",
    "Forbidden",
    "LimitExceeded",
    "ProtocolViolation",
    "PulseError",
    "TokenError",
    "Unavailable",
]


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
    default_code = ErrorCode.TOKEN_INVALID


class AppError(PulseError):
    default_code = ErrorCode.APP_UNKNOWN


class ProtocolViolation(PulseError):
    default_code = ErrorCode.BAD_REQUEST


class LimitExceeded(PulseError):
    default_code = ErrorCode.MESSAGE_TOO_LARGE


class Forbidden(PulseError):
    default_code = ErrorCode.FORBIDDEN


class Unavailable(PulseError):
    default_code = ErrorCode.UNAVAILABLE
