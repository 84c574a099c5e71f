"""Strict JSON for HTTP bodies: DRF's parser over the one decoder of client text
(``django_pulse.protocol.strict_json.loads_strict``), so what the WebSocket path refuses as ``invalid_json`` is
refused here too, with 400."""

from __future__ import annotations

from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ..protocol.strict_json import MAX_DEPTH, loads_strict

__all__ = ["MAX_DEPTH", "StrictJSONParser", "loads_strict"]


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
