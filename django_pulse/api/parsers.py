"""Strict JSON for HTTP bodies: what the WebSocket path refuses as ``invalid_json`` is refused here too.

``json.loads`` accepts text that is not JSON, or that Pulse cannot send on: ``NaN``/``Infinity``, ``1e999``
(decodes to ``inf``), lone surrogate escapes (``"\\ud800"``, which no UTF-8 socket or database can take) and
nesting past the interpreter's recursion limit (``RecursionError``, which is not a ``ValueError``). Every
one of them was a 500 somewhere; ``loads_strict`` turns each into one ``ValueError`` the caller answers with
400.
"""

from __future__ import annotations

import json
import math
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ..protocol.frames import MAX_DEPTH, nested_too_deeply

__all__ = ["MAX_DEPTH", "StrictJSONParser", "loads_strict"]


class _NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"the number {text[:20]} is out of range")
    return value


def _check(value: Any, depth: int) -> None:
    """Depth and surrogates of a decoded value, without recursion (so a deep value cannot crash the check)."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise _NotJSON("the body contains an unpaired surrogate escape (\\uD800-\\uDFFF)") from None
        elif isinstance(item, dict | list):
            if level >= MAX_DEPTH:
                raise _NotJSON(f"the body is nested deeper than {MAX_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)


def loads_strict(raw: bytes | str) -> Any:
    """Decode an HTTP body as strict JSON (UTF-8). Raises ``ValueError`` saying why it is refused."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _NotJSON("the body is not UTF-8") from None
    else:
        text = raw
    if nested_too_deeply(text):
        raise _NotJSON(f"the body is nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NotJSON:
        raise
    except (ValueError, RecursionError) as exc:
        raise _NotJSON(f"the body is not valid JSON ({str(exc)[:80]})") from None
    _check(value, 0)
    return value


class StrictJSONParser(JSONParser):
    """DRF's JSON parser with ``loads_strict``: every body it refuses is a 400 ``invalid_json``.

    The body is read as UTF-8 whatever ``charset`` the ``Content-Type`` names (RFC 8259 §8.1), so an unknown
    charset cannot raise ``LookupError``.
    """

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            return loads_strict(raw)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}.") from None
