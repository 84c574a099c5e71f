"""The Pulse wire protocol, sans I/O: no Django, no asyncio, tested without sockets.

- ``codes``: actions, operations, presence events, error and close codes (a leaf module).
- ``frames``: channel-name rules, frame parsing and validation, frame building, rate limiting.
- ``tokens``: issuing and verifying tokens (JWT) and matching capabilities.

``from django_pulse.protocol import X`` gives every name of ``codes`` and ``frames``.
"""

from __future__ import annotations

from .codes import PROTOCOL_VERSION, Action, CloseCode, ErrorCode, Operation, PresenceEvent, close_code_for
from .frames import (
    CHANNEL_RE,
    CLIENT_ACTIONS,
    CONNECTION_ID_RE,
    KB_ID_RE,
    PING_FRAME,
    RateLimiter,
    Request,
    connected_frame,
    discontinuity_frame,
    dumps,
    encode_data,
    error_frame,
    excluded_connection,
    excluded_frame,
    history_ok_frame,
    is_valid_channel,
    message_frame,
    message_frame_serial,
    message_head,
    ok_frame,
    parse_frame,
    presence_frame,
    presence_frame_serial,
    utf8_len,
    whisper_frame,
)

__all__ = [
    "CHANNEL_RE",
    "CLIENT_ACTIONS",
    "CONNECTION_ID_RE",
    "KB_ID_RE",
    "PING_FRAME",
    "PROTOCOL_VERSION",
    "Action",
    "CloseCode",
    "ErrorCode",
    "Operation",
    "PresenceEvent",
    "RateLimiter",
    "Request",
    "close_code_for",
    "connected_frame",
    "discontinuity_frame",
    "dumps",
    "encode_data",
    "error_frame",
    "excluded_connection",
    "excluded_frame",
    "history_ok_frame",
    "is_valid_channel",
    "message_frame",
    "message_frame_serial",
    "message_head",
    "ok_frame",
    "parse_frame",
    "presence_frame",
    "presence_frame_serial",
    "utf8_len",
    "whisper_frame",
]
