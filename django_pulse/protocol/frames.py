"""The Pulse wire protocol, sans I/O: channel-name rules, frame parsing and frame building.

No Django, Channels or asyncio imports: everything here is pure and tested without sockets.
docs/protocol.md is the human-readable form of this module; keep the two in step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .. import exceptions as _exceptions
from .codes import Action, ErrorCode
from .strict_json import MAX_DEPTH, InvalidJSON, loads_strict, nested_too_deeply

__all__ = [
    "CHANNEL_RE",
    "CHANNEL_RULE",
    "CLIENT_ACTIONS",
    "CONNECTION_ID_RE",
    "KB_ID_RE",
    "MAX_DEPTH",
    "PING_FRAME",
    "RateLimiter",
    "Request",
    "check_channel",
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
    "nested_too_deeply",
    "ok_frame",
    "parse_frame",
    "presence_frame",
    "presence_frame_serial",
    "utf8_len",
    "whisper_frame",
]

# \A and \Z, not ^ and $: "$" also matches before a trailing newline, which let "posts\n" through.
CHANNEL_RE = re.compile(r"\A[A-Za-z0-9_\-.:@=~+]{1,255}\Z")
KB_ID_RE = re.compile(r"\A[A-Za-z0-9_\-]{1,64}\Z")
# A connection id as ``exclude`` names it (the server's are "c_" + 16 URL-safe characters): no character that
# JSON escapes, so the id reads back from a frame's text as it was written.
CONNECTION_ID_RE = re.compile(r"\A[A-Za-z0-9_\-]{1,64}\Z")


# What every refusal of a channel name says (WebSocket, SSE, HTTP API, SDK, signed streams, presence).
CHANNEL_RULE = "A channel name is 1-255 characters of A-Z a-z 0-9 _ - . : @ = ~ +."


def is_valid_channel(name: object) -> bool:
    return isinstance(name, str) and CHANNEL_RE.match(name) is not None


def check_channel(name: object) -> None:
    """``ProtocolViolation`` (``invalid_channel``) naming ``name`` and the rule, unless it is a valid channel name."""
    if not is_valid_channel(name):
        raise _exceptions.ProtocolViolation(
            f"Invalid channel name {name!r:.100}. {CHANNEL_RULE}", ErrorCode.INVALID_CHANNEL
        )


CLIENT_ACTIONS = frozenset(
    {
        Action.AUTH,
        Action.SUBSCRIBE,
        Action.UNSUBSCRIBE,
        Action.PUBLISH,
        Action.PRESENCE_ENTER,
        Action.PRESENCE_UPDATE,
        Action.PRESENCE_LEAVE,
        Action.PRESENCE_GET,
        Action.PRESENCE_SUBSCRIBE,
        Action.PRESENCE_UNSUBSCRIBE,
        Action.HISTORY,
        Action.WHISPER,
        Action.PONG,
    }
)
_ACTION_BY_VALUE = {action.value: action for action in CLIENT_ACTIONS}
_CHANNEL_ACTIONS = CLIENT_ACTIONS - {Action.AUTH, Action.PONG}
MAX_NAME_LENGTH = 255
MAX_REF_LENGTH = 64
# Integer refs must survive a round trip through a JavaScript number (2**53 - 1).
MAX_SAFE_INTEGER = 2**53 - 1


# Bounds of the history members (the server also caps them at HISTORY_SIZE).
MAX_REWIND = 10_000
MAX_HISTORY_LIMIT = 1000
MAX_EPOCH_LENGTH = 64
MAX_CONNECTION_KEY_LENGTH = 256


def dumps(value: Any) -> str:
    """The one JSON encoding of frames: compact, UTF-8 (not ``\\u``-escaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_data(value: Any, member: str = "data") -> str:
    """``value`` (a member of a parsed frame) as JSON, for relaying; ``bad_request`` when it cannot be encoded.

    ``parse_frame`` decodes nesting up to the interpreter's recursion limit at the depth it is called; encoding
    the same value deeper in the stack may pass that limit.
    """
    try:
        return dumps(value)
    except (ValueError, RecursionError):
        raise _exceptions.ProtocolViolation(
            f"The member {member!r} is nested too deeply.", ErrorCode.BAD_REQUEST
        ) from None


def utf8_len(text: str) -> int:
    """Size of ``text`` in UTF-8 bytes (cheap for ASCII, which most frames are)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Request:
    """A validated client frame: its action, its ``ref`` (None when absent) and all its members.

    Members named in docs/protocol.md for the action are present with the right types: ``channel`` is a
    valid channel name, ``token``/``name`` are strings, ``id`` is absent or a string.
    """

    action: Action
    ref: str | int | None
    members: dict[str, Any]

    @property
    def channel(self) -> str:
        """The ``channel`` member (validated by ``parse_frame`` for every action that has one)."""
        return str(self.members["channel"])


def _violation(message: str, code: ErrorCode, ref: str | int | None = None) -> _exceptions.ProtocolViolation:
    exc = _exceptions.ProtocolViolation(message, code)
    exc.ref = ref
    return exc


def _string_member(
    members: dict[str, Any],
    name: str,
    ref: str | int | None,
    *,
    required: bool = True,
    max_length: int = MAX_NAME_LENGTH,
) -> None:
    if name not in members:
        if required:
            raise _violation(f"The member {name!r} is missing.", ErrorCode.BAD_REQUEST, ref)
        return
    value = members[name]
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise _violation(
            f"The member {name!r} must be a string of 1-{max_length} characters.", ErrorCode.BAD_REQUEST, ref
        )


def parse_frame(text: str, max_size: int) -> Request:
    """Parse and validate one client text frame.

    Raises ``LimitExceeded(message_too_large)`` when ``text`` is over ``max_size`` UTF-8 bytes (not parsed),
    ``ProtocolViolation`` with ``invalid_json`` (not a JSON object), ``bad_request`` (a member missing or of
    the wrong type; the message names it), ``unknown_action`` or ``invalid_channel``. The exception's ``ref``
    is the frame's ``ref`` when it could be read, so the error can be sent as the request's one reply.
    """
    # Characters <= bytes <= 4 * characters: most frames are decided without encoding.
    if len(text) > max_size or (len(text) * 4 > max_size and utf8_len(text) > max_size):
        raise _exceptions.LimitExceeded(f"The frame is larger than {max_size} bytes.", ErrorCode.MESSAGE_TOO_LARGE)
    try:
        # The one decoder of client text (strict_json): a lone surrogate, escaped or raw (a frame that came in
        # an SSE send/ body is text decoded from JSON, not from UTF-8), relayed to subscribers would break every
        # socket it reaches.
        members = loads_strict(text, "the frame")
    except InvalidJSON as exc:
        raise _violation(exc.sentence(), ErrorCode.INVALID_JSON) from None
    if not isinstance(members, dict):
        raise _violation("The frame must be a JSON object.", ErrorCode.INVALID_JSON)
    ref = members.get("ref")
    if ref is not None and (
        isinstance(ref, bool)
        or not isinstance(ref, str | int)
        or (isinstance(ref, str) and len(ref) > MAX_REF_LENGTH)
        or (isinstance(ref, int) and abs(ref) > MAX_SAFE_INTEGER)
    ):
        raise _violation(
            f"The member 'ref' must be a string of at most {MAX_REF_LENGTH} characters or an integer "
            f"of at most {MAX_SAFE_INTEGER} in magnitude.",
            ErrorCode.BAD_REQUEST,
        )
    raw_action = members.get("action")
    if not isinstance(raw_action, str):
        raise _violation("The member 'action' is missing or not a string.", ErrorCode.BAD_REQUEST, ref)
    action = _ACTION_BY_VALUE.get(raw_action)
    if action is None:
        raise _violation(f"Unknown action {raw_action[:64]!r}.", ErrorCode.UNKNOWN_ACTION, ref)
    if action in _CHANNEL_ACTIONS:
        channel = members.get("channel")
        if not isinstance(channel, str):
            raise _violation("The member 'channel' is missing or not a string.", ErrorCode.BAD_REQUEST, ref)
        if CHANNEL_RE.match(channel) is None:
            raise _violation(CHANNEL_RULE, ErrorCode.INVALID_CHANNEL, ref)
    if action is Action.AUTH:
        _string_member(members, "token", ref, max_length=8192)
        _string_member(members, "recover", ref, required=False, max_length=MAX_CONNECTION_KEY_LENGTH)
    elif action is Action.PUBLISH:
        _string_member(members, "name", ref)
        _string_member(members, "id", ref, required=False)
        if "exclude" in members and (
            not isinstance(members["exclude"], str) or CONNECTION_ID_RE.match(members["exclude"]) is None
        ):
            raise _violation("The member 'exclude' must be this connection's connectionId.", ErrorCode.BAD_REQUEST, ref)
    elif action is Action.WHISPER:
        _string_member(members, "name", ref)
    elif action is Action.SUBSCRIBE:
        _subscribe_members(members, ref)
    elif action is Action.HISTORY:
        _int_member(members, "limit", ref, 1, MAX_HISTORY_LIMIT)
        _int_member(members, "before", ref, 1, None)
    return Request(action, ref, members)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_member(members: dict[str, Any], name: str, ref: str | int | None, low: int, high: int | None) -> None:
    """An optional integer member within ``[low, high]`` (``high`` None: no upper bound)."""
    if name not in members:
        return
    value = members[name]
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"{low}-{high}" if high is not None else f"at least {low}"
        raise _violation(f"The member {name!r} must be an integer ({bound}).", ErrorCode.BAD_REQUEST, ref)


def _subscribe_members(members: dict[str, Any], ref: str | int | None) -> None:
    """``resume`` ({serial: int >= 0, epoch: string}) and ``rewind`` (int) of a ``subscribe``."""
    _int_member(members, "rewind", ref, 0, MAX_REWIND)
    if "resume" not in members:
        return
    resume = members["resume"]
    if (
        not isinstance(resume, dict)
        or not _is_int(resume.get("serial"))
        or resume["serial"] < 0
        or not isinstance(resume.get("epoch"), str)
        or not 1 <= len(resume["epoch"]) <= MAX_EPOCH_LENGTH
    ):
        raise _violation(
            'The member \'resume\' must be {"serial": integer >= 0, "epoch": string} from an earlier '
            "subscribe reply and the messages seen since.",
            ErrorCode.BAD_REQUEST,
            ref,
        )


# -- frame builders ------------------------------------------------------------------------------------------

PING_FRAME = '{"action":"ping"}'


def connected_frame(
    *,
    connection_id: str,
    client_id: str,
    kb_id: str,
    expires_at: int,
    limits: dict[str, int],
    connection_key: str | None = None,
    recovered: bool | None = None,
) -> str:
    """The reply to a successful first ``auth``; ``expires_at`` in ms since the epoch.

    ``connection_key`` lets a later connection of the same client continue this one (``auth`` ``recover``);
    ``recovered`` answers an ``auth`` that carried ``recover`` (absent otherwise).
    """
    frame: dict[str, Any] = {
        "action": "connected",
        "connectionId": connection_id,
        "clientId": client_id,
        "kbId": kb_id,
        "expiresAt": expires_at,
        "limits": limits,
    }
    if connection_key is not None:
        frame["connectionKey"] = connection_key
    if recovered is not None:
        frame["recovered"] = recovered
    return dumps(frame)


def ok_frame(ref: str | int | None, result: dict[str, Any] | None = None) -> str:
    """The success reply to the request ``ref``, with the action's result members."""
    return dumps({"action": "ok", "ref": ref, **(result or {})})


def error_frame(code: ErrorCode, message: str, ref: str | int | None = None) -> str:
    """An error: the reply to request ``ref``, or asynchronous when ``ref`` is None (no ``ref`` member)."""
    frame: dict[str, Any] = {"action": "error"}
    if ref is not None:
        frame["ref"] = ref
    frame["code"] = code.value
    frame["message"] = message
    return dumps(frame)


def discontinuity_frame(channel: str, reason: str) -> str:
    return dumps({"action": "discontinuity", "channel": channel, "reason": reason})


def message_head(
    *,
    channel: str,
    name: str,
    data_json: str,
    id: str,
    timestamp: int,
    client_id: str | None = None,
    exclude: str | None = None,
) -> str:
    """A ``message`` frame without its serial, ending in ``"serial":`` (the broker appends ``n}``).

    ``data_json`` is the data already encoded as JSON (the publisher chooses the encoder). ``exclude`` (a
    connection id matching ``CONNECTION_ID_RE``) is written first, right after the action, so that
    ``excluded_connection`` finds it without parsing the frame.
    """
    start = '{"action":"message",' if exclude is None else f'{{"action":"message","exclude":"{exclude}",'
    head = (
        f'{start}"channel":{dumps(channel)},"name":{dumps(name)},"data":{data_json},'
        f'"id":{dumps(id)},"timestamp":{timestamp},'
    )
    if client_id is not None:
        head += f'"clientId":{dumps(client_id)},'
    return head + '"serial":'


def message_frame(head: str, serial: int) -> str:
    """The complete ``message`` frame: ``head`` from ``message_head`` plus its serial."""
    return f"{head}{serial}}}"


_MESSAGE_SERIAL_TAIL = '"serial":'
_SERIAL_FRAMES = ('{"action":"message"', '{"action":"excluded"')


def message_frame_serial(text: str) -> int | None:
    """The serial of a ``message`` frame built by ``message_frame``, or of the ``excluded`` frame that stands in
    for one (both end ``"serial":n}``); None for any other frame (a ``discontinuity`` notice, a ``whisper``).
    Reads only the frame's tail: no JSON parsing."""
    if not text.startswith(_SERIAL_FRAMES):
        return None
    start = text.rfind(_MESSAGE_SERIAL_TAIL)
    if start < 0:
        return None
    try:
        return int(text[start + len(_MESSAGE_SERIAL_TAIL) : -1])
    except ValueError:
        return None


# -- others only: whispers and excluded messages ----------------------------------------------------------

_EXCLUDED_MESSAGE = '{"action":"message","exclude":"'
_WHISPER = '{"action":"whisper","connectionId":"'
_EXCLUDING = (_EXCLUDED_MESSAGE, _WHISPER)


def whisper_frame(*, connection_id: str, channel: str, name: str, data_json: str, client_id: str) -> str:
    """A ``whisper``: a client event relayed to the channel's other subscribers, never stored, without serial.

    ``connectionId`` (the sender's) comes first, so ``excluded_connection`` reads it without parsing.
    """
    return (
        f'{{"action":"whisper","connectionId":{dumps(connection_id)},"channel":{dumps(channel)},'
        f'"name":{dumps(name)},"data":{data_json},"clientId":{dumps(client_id)}}}'
    )


def excluded_connection(text: str) -> str | None:
    """The connection a frame must not reach as it is: the ``exclude`` of a ``message`` published for the others
    only, the sender of a ``whisper``; None for every other frame. O(1): two prefix checks (the hub asks for
    every frame it fans out)."""
    if not text.startswith(_EXCLUDING):
        return None
    start = len(_EXCLUDED_MESSAGE) if text[11] == "m" else len(_WHISPER)  # after '{"action":"'
    end = text.find('"', start)
    return text[start:end] if end > start else None


def excluded_frame(message: str) -> str | None:
    """What the excluded connection gets in place of ``message`` (a ``message`` frame with ``exclude``):
    ``{"action":"excluded","channel","id","serial"}``, the message's place in the channel's serial sequence
    without its content, so the connection's serial stays continuous. None for a ``whisper`` (nothing stands in
    for it) or a frame that cannot be read."""
    if not message.startswith(_EXCLUDED_MESSAGE):
        return None
    try:
        frame = json.loads(message)
        return dumps(
            {"action": "excluded", "channel": frame["channel"], "id": frame["id"], "serial": int(frame["serial"])}
        )
    except (ValueError, KeyError, TypeError):
        return None


def history_ok_frame(ref: str | int | None, result: dict[str, Any], frames: list[str]) -> str:
    """The ``ok`` reply of a ``history`` request: ``result`` plus ``messages``, the retained ``message`` frames
    embedded as they are (already JSON; nothing is decoded or re-encoded)."""
    return f'{ok_frame(ref, result)[:-1]},"messages":[{",".join(frames)}]}}'


def presence_frame(*, channel: str, event: str, member: dict[str, Any], serial: int) -> str:
    """A ``presence`` event (``event`` is enter, update or leave).

    ``member`` is ``{"clientId", "connectionId", "data", "timestamp"}`` in that order: the Redis presence
    scripts (presence/redis.py) build the same bytes, and ``presence_frame_serial`` reads the serial back.
    """
    return dumps({"action": "presence", "channel": channel, "event": event, "member": member, "serial": serial})


_SERIAL_TAIL = ',"serial":'


def presence_frame_serial(frame: str) -> int:
    """The serial of a ``presence`` frame, read from its tail (no decoding); ``ValueError`` if it has none."""
    at = frame.rfind(_SERIAL_TAIL)
    if at < 0 or not frame.endswith("}"):
        raise ValueError("not a presence frame")
    return int(frame[at + len(_SERIAL_TAIL) : -1])


# -- rate limiting ---------------------------------------------------------------------------------------

FLOOD_DECAY = 0.1


class RateLimiter:
    """A token bucket: ``rate`` tokens per second, at most ``burst``; one token per frame.

    ``allow(now)`` takes a token when there is one. Each refused frame adds one to a *debt* that is paid back
    at ``rate * FLOOD_DECAY`` per second; ``flooding`` is true once the debt passes ``burst``, i.e. the peer
    kept sending well above the rate (about 2x the rate for ~2 s with the defaults): the caller closes it.
    A ``rate`` of 0 or less means unlimited. ``now`` is any monotonic clock in seconds.
    """

    __slots__ = ("_stamp", "burst", "debt", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = max(float(burst), 1.0)
        self.tokens = self.burst
        self.debt = 0.0
        self._stamp = now

    def allow(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        elapsed = now - self._stamp
        if elapsed > 0:
            self._stamp = now
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            if self.debt:
                self.debt = max(0.0, self.debt - elapsed * self.rate * FLOOD_DECAY)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.debt += 1.0
        return False

    @property
    def flooding(self) -> bool:
        return self.debt > self.burst
