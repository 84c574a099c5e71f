"""The Pulse wire protocol, sans I/O: code tables, channel-name rules and frame building.

No Django, Channels or asyncio imports: everything here is pure and tested without sockets.
docs/protocol.md is the human-readable form of this module; keep the two in step.
"""

from __future__ import annotations

import json
import re
from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "CHANNEL_RE",
    "PROTOCOL_VERSION",
    "Action",
    "CloseCode",
    "ErrorCode",
    "Operation",
    "PresenceEvent",
    "close_code_for",
    "is_valid_channel",
    "presence_frame",
    "presence_frame_serial",
]

PROTOCOL_VERSION = 1

CHANNEL_RE = re.compile(r"^[A-Za-z0-9_\-.:@=~+]{1,255}$")
KB_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


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
    PONG = "pong"
    # server -> client
    CONNECTED = "connected"
    OK = "ok"
    ERROR = "error"
    MESSAGE = "message"
    PRESENCE = "presence"
    DISCONTINUITY = "discontinuity"
    PING = "ping"


class Operation(StrEnum):
    """Operations a token's capabilities grant on a channel pattern."""

    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    PRESENCE = "presence"
    HISTORY = "history"


class ErrorCode(StrEnum):
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
    NOT_PRESENT = "not_present"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 4000
    TOKEN_INVALID = 4001
    TOKEN_EXPIRED = 4002
    APP_DISABLED = 4003
    APP_UNKNOWN = 4004
    REVOKED = 4005
    AUTH_TIMEOUT = 4008
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
    {CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR, CloseCode.APP_DISABLED, CloseCode.APP_UNKNOWN, CloseCode.REVOKED}
)

_CLOSE_FOR_ERROR = {
    ErrorCode.TOKEN_INVALID: CloseCode.TOKEN_INVALID,
    ErrorCode.TOKEN_NOT_YET_VALID: CloseCode.TOKEN_INVALID,
    ErrorCode.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
    ErrorCode.APP_DISABLED: CloseCode.APP_DISABLED,
    ErrorCode.APP_UNKNOWN: CloseCode.APP_UNKNOWN,
    ErrorCode.CLIENT_ID_MISMATCH: CloseCode.TOKEN_INVALID,
    ErrorCode.UNAVAILABLE: CloseCode.UNAVAILABLE,
}


def close_code_for(code: ErrorCode) -> CloseCode:
    """The close code that ends a connection whose authentication failed with ``code``."""
    return _CLOSE_FOR_ERROR.get(code, CloseCode.INTERNAL_ERROR)


def is_valid_channel(name: object) -> bool:
    return isinstance(name, str) and CHANNEL_RE.match(name) is not None



# -- presence --------------------------------------------------------------------------------------------------


class PresenceEvent(StrEnum):
    """Values of a ``presence`` frame's ``event`` member."""

    ENTER = "enter"
    UPDATE = "update"
    LEAVE = "leave"


def presence_frame(*, channel: str, event: str, member: dict[str, Any], serial: int) -> str:
    """A ``presence`` event (``event`` is enter, update or leave).

    ``member`` is ``{"clientId", "connectionId", "data", "timestamp"}`` in that order; the Redis presence
    scripts build the same bytes, and ``presence_frame_serial`` reads the serial back from the tail.
    """
    return json.dumps({"action": "presence", "channel": channel, "event": event, "member": member, "serial": serial},
                      separators=(",", ":"), ensure_ascii=False)


_SERIAL_TAIL = ',"serial":'


def presence_frame_serial(frame: str) -> int:
    """The serial of a ``presence`` frame, read from its tail; ``ValueError`` if it has none."""
    at = frame.rfind(_SERIAL_TAIL)
    if at < 0 or not frame.endswith("}"):
        raise ValueError("not a presence frame")
    return int(frame[at + len(_SERIAL_TAIL) : -1])
