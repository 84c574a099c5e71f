"""The one JSON decoder of everything a client sends: WebSocket frames, SSE ``ticket/`` and ``send/`` bodies (and
the frames inside them), HTTP API bodies, and the example project's views.

``json.loads`` accepts text that is not JSON, or that Pulse cannot send on, and each was a crash somewhere:

- ``NaN``/``Infinity`` and ``1e999`` (which decodes to ``inf`` and is re-encoded as ``Infinity``);
- lone surrogates (``\\uD800``-``\\uDFFF`` without their pair), either escaped (``"\\ud800"``) or raw in a
  ``str`` that did not come from UTF-8 (the frames inside an SSE ``send/`` body were decoded from JSON text, so
  ``"\\ud800"`` there is a raw surrogate in the frame): no UTF-8 socket, Redis connection or database can take
  one, so relayed to subscribers it broke every socket it reached;
- nesting deeper than the interpreter's recursion limit (``RecursionError``, which is not a ``ValueError``;
  Python 3.13 decodes far deeper than 3.11), refused here at ``MAX_DEPTH`` whatever the version.

``loads_strict`` turns each into one ``InvalidJSON`` (a ``ValueError``) saying why: the WebSocket and SSE paths
answer it with an ``invalid_json`` error frame to the sender, HTTP endpoints with 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "InvalidJSON", "loads_strict", "nested_too_deeply"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a frame or an HTTP body (a message's ``data`` included)."""


class InvalidJSON(ValueError):
    """Text ``loads_strict`` refuses; the message says why, in words a client can act on."""

    def sentence(self) -> str:
        """The message as a sentence, for an error body or frame."""
        text = str(self)
        return f"{text[:1].upper()}{text[1:]}."


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity; JSON (and every browser's JSON.parse) does not.
    raise InvalidJSON(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 decodes to inf, which would be re-encoded as Infinity
        raise InvalidJSON(f"the number {text[:20]} is out of range")
    return value


def nested_too_deeply(text: str) -> bool:
    """Whether the JSON ``text`` nests arrays and objects deeper than ``MAX_DEPTH``, decided before decoding it:
    the decoder's own limit is the interpreter's (a ``RecursionError`` at about 1,000 levels on Python 3.11 and
    3.12; Python 3.13 decodes far deeper), so without this the same frame would be refused on one version and
    relayed on another. Brackets inside strings are skipped; a text with few brackets costs two ``count``s."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


_SURROGATE = "an unpaired surrogate (\\uD800-\\uDFFF), which cannot be sent as UTF-8"


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a decoded value holds a lone surrogate in a key or a string, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads_strict(raw: bytes | str, what: str = "the body") -> Any:
    """Decode ``raw`` (UTF-8 bytes, or text) as strict JSON; raises ``InvalidJSON`` saying why it is refused.

    ``what`` names the text in the message (``"the frame"``, ``"the body"``). Cheap for what clients send:
    ASCII text without ``\\u`` escapes is decoded by ``json.loads`` with no other pass.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON(f"{what} is not UTF-8") from None
    else:
        text = raw
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJSON(f"{what} contains {_SURROGATE}") from None
    if nested_too_deeply(text):
        raise InvalidJSON(f"{what} is nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except InvalidJSON:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(f"{what} is not valid JSON ({str(exc)[:80]})") from None
    # Text that is valid UTF-8 decodes to a lone surrogate only through a \u escape.
    if "\\u" in text and _has_lone_surrogate(value):
        raise InvalidJSON(f"{what} contains {_SURROGATE}")
    return value
