"""The SSE transport's wire format: events, the close frame, and resume positions in ``Last-Event-ID``.

Pure functions (no Django, no asyncio); docs/transports.md describes the format and
``django_pulse.server.sse`` uses it.

- **SDK streams** carry each protocol frame as one unnamed event, ``data: <frame text>`` (the browser's
  ``message`` event), so a client reads exactly the frames a WebSocket carries. The end of a connection is
  the frame ``{"action":"close","code":4002,"reason":"token_expired"}`` followed by the end of the response.
- **Unidirectional streams** (a plain ``EventSource``, htmx's ``sse`` extension) carry each message as an
  event named after the message (``event: new_post``) whose data is the message's ``data``: a string as it
  is (HTML for ``sse-swap``), anything else as JSON. Every event has ``id:`` = the stream's positions, so the
  browser's reconnect sends them back in ``Last-Event-ID``.
- **Positions**: ``serial.epoch`` per channel of the stream, in the order of the URL's ``stream`` parameters,
  joined by ``~`` (``42.AbCdEfGhIjKl~7.XyZ...``). An empty entry means "no position" for that channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

__all__ = [
    "CLOSE_REASONS",
    "Position",
    "close_frame",
    "comment",
    "decode_positions",
    "encode_positions",
    "event",
]

Position = tuple[int, str]

# Close codes -> names (docs/protocol.md), for the close frame's ``reason``.
CLOSE_REASONS = {
    1000: "normal",
    1001: "going_away",
    1006: "connection_lost",
    4000: "protocol_error",
    4001: "token_invalid",
    4002: "token_expired",
    4003: "app_disabled",
    4004: "app_unknown",
    4005: "revoked",
    4006: "superseded",
    4008: "auth_timeout",
    4009: "too_many_connections",
    4010: "slow_consumer",
    4011: "heartbeat_timeout",
    4029: "rate_limited",
    4500: "internal_error",
    4503: "unavailable",
}

_EPOCH_RE = re.compile(r"\A[A-Za-z0-9_\-]{1,64}\Z")
_MAX_SERIAL = 2**63 - 1


def event(data: str, *, name: str | None = None, id: str | None = None) -> bytes:
    """One SSE event: ``id:``, ``event:`` and one ``data:`` line per line of ``data`` (the browser joins them
    with newlines again), then the blank line that dispatches it. ``name``/``id`` holding a line break are
    left out (they would end the field early)."""
    parts: list[str] = []
    if id is not None and "\n" not in id and "\r" not in id:
        parts.append(f"id: {id}\n")
    if name is not None and name != "message" and "\n" not in name and "\r" not in name:
        parts.append(f"event: {name}\n")
    if "\n" in data or "\r" in data:
        for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            parts.append(f"data: {line}\n")
    else:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode()


def comment(text: str = "") -> bytes:
    """An SSE comment line (ignored by the browser; keeps proxies from timing the response out)."""
    return f":{text}\n\n".encode()


def close_frame(code: int) -> str:
    """The frame an SDK stream ends with: the WebSocket close code and its name."""
    return json.dumps(
        {"action": "close", "code": int(code), "reason": CLOSE_REASONS.get(int(code), "")}, separators=(",", ":")
    )


def encode_positions(positions: Sequence[Position | None]) -> str:
    """``serial.epoch`` per channel, ``~``-joined; an empty entry for a channel without a position."""
    return "~".join("" if p is None else f"{p[0]}.{p[1]}" for p in positions)


def decode_positions(text: str | None, count: int) -> list[Position | None]:
    """The positions of a ``Last-Event-ID`` written by ``encode_positions`` for a stream of ``count`` channels.

    Anything malformed (another stream's id, a different number of channels, a bad serial or epoch) gives no
    position for any channel: the stream then starts from the channels' current serials, as a new one does.
    """
    empty: list[Position | None] = [None] * count
    if not text or len(text) > 80 * max(count, 1):
        return empty
    entries = text.split("~")
    if len(entries) != count:
        return empty
    out: list[Position | None] = []
    for entry in entries:
        if not entry:
            out.append(None)
            continue
        serial_text, dot, epoch = entry.partition(".")
        if not dot or not serial_text.isdigit() or not serial_text.isascii() or not _EPOCH_RE.match(epoch):
            return empty
        serial = int(serial_text)
        if serial > _MAX_SERIAL:
            return empty
        out.append((serial, epoch))
    return out
