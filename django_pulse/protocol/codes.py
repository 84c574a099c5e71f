"""The protocol's code tables: actions, operations, error codes and close codes (a leaf: imports nothing of ours).

docs/protocol.md lists every code; keep the two in step.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "PROTOCOL_VERSION",
    "Action",
    "CloseCode",
    "ErrorCode",
    "Operation",
    "PresenceEvent",
    "close_code_for",
]

PROTOCOL_VERSION = 1


class Action(StrEnum):
    """Values of a frame's ``action`` member."""

    # client -> server
    AUTH = "auth"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    PUBLISH = "publish"
    PRESENCE_ENTER = "presence.enter"
    PRESENCE_UPDATE = "presence.update"
    PRESENCE_LEAVE = "presence.leave"
    PRESENCE_GET = "presence.get"
    PRESENCE_SUBSCRIBE = "presence.subscribe"
    PRESENCE_UNSUBSCRIBE = "presence.unsubscribe"
    HISTORY = "history"
    WHISPER = "whisper"
    PONG = "pong"
    # server -> client (and WHISPER, relayed to the channel's other subscribers)
    CONNECTED = "connected"
    OK = "ok"
    ERROR = "error"
    MESSAGE = "message"
    PRESENCE = "presence"
    DISCONTINUITY = "discontinuity"
    EXCLUDED = "excluded"
    PING = "ping"


class Operation(StrEnum):
    """Operations a token's capabilities grant on a channel pattern."""

    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    PRESENCE = "presence"
    HISTORY = "history"
    WHISPER = "whisper"


class ErrorCode(StrEnum):
    """The ``code`` of an error reply, an HTTP error body and a ``PulseError`` (docs/protocol.md lists them)."""

    BAD_REQUEST = "bad_request"
    INVALID_JSON = "invalid_json"
    UNSUPPORTED_FRAME = "unsupported_frame"
    UNKNOWN_ACTION = "unknown_action"
    NOT_AUTHENTICATED = "not_authenticated"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    APP_UNKNOWN = "app_unknown"
    APP_DISABLED = "app_disabled"
    CLIENT_ID_MISMATCH = "client_id_mismatch"
    INVALID_CHANNEL = "invalid_channel"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    FORBIDDEN = "forbidden"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    PRESENCE_DATA_TOO_LARGE = "presence_data_too_large"
    PRESENCE_FULL = "presence_full"
    # Limits per identity (one client cannot take a shared resource from the others): one client id holds too
    # many of a channel's presence slots, one connection is present on too many channels, one client id has too
    # many open connections.
    PRESENCE_CLIENT_LIMIT = "presence_client_limit"
    TOO_MANY_PRESENCE_CHANNELS = "too_many_presence_channels"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    NOT_PRESENT = "not_present"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


class CloseCode(IntEnum):
    """The WebSocket close codes the server ends a connection with (docs/protocol.md); ``retry`` says whether
    reconnecting can help."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 4000
    TOKEN_INVALID = 4001
    TOKEN_EXPIRED = 4002
    APP_DISABLED = 4003
    APP_UNKNOWN = 4004
    REVOKED = 4005
    AUTH_TIMEOUT = 4008
    TOO_MANY_CONNECTIONS = 4009
    SUPERSEDED = 4006
    SLOW_CONSUMER = 4010
    HEARTBEAT_TIMEOUT = 4011
    RATE_LIMITED = 4029
    INTERNAL_ERROR = 4500
    UNAVAILABLE = 4503

    @property
    def retry(self) -> bool:
        """Whether a client should reconnect after this close (4001/4002 only with a new token)."""
        return self not in _GIVE_UP


_GIVE_UP = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.APP_DISABLED,
        CloseCode.APP_UNKNOWN,
        CloseCode.REVOKED,
        CloseCode.SUPERSEDED,
    }
)

_CLOSE_FOR_ERROR = {
    ErrorCode.TOKEN_INVALID: CloseCode.TOKEN_INVALID,
    ErrorCode.TOKEN_NOT_YET_VALID: CloseCode.TOKEN_INVALID,
    ErrorCode.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
    ErrorCode.APP_DISABLED: CloseCode.APP_DISABLED,
    ErrorCode.APP_UNKNOWN: CloseCode.APP_UNKNOWN,
    ErrorCode.CLIENT_ID_MISMATCH: CloseCode.TOKEN_INVALID,
    ErrorCode.UNAVAILABLE: CloseCode.UNAVAILABLE,
    ErrorCode.TOO_MANY_CONNECTIONS: CloseCode.TOO_MANY_CONNECTIONS,
}


def close_code_for(code: ErrorCode) -> CloseCode:
    """The close code that ends a connection whose authentication failed with ``code``."""
    return _CLOSE_FOR_ERROR.get(code, CloseCode.INTERNAL_ERROR)


class PresenceEvent(StrEnum):
    """Values of a ``presence`` frame's ``event`` member."""

    ENTER = "enter"
    UPDATE = "update"
    LEAVE = "leave"
