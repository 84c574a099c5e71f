"""The SSE transport's wire format (django_pulse.server.sse_wire): events as a browser's EventSource parses
them, the close frame, and the resume positions carried in Last-Event-ID."""

from __future__ import annotations

import json
from typing import Any

from django_pulse.server import sse_wire


def parse_stream(raw: bytes) -> list[dict[str, Any]]:
    """The events a browser dispatches for ``raw`` (the HTML spec's event stream interpretation), with the last
    event id after each; an id-only block updates the id and dispatches nothing."""
    events: list[dict[str, Any]] = []
    last_id = ""
    data: list[str] = []
    name = ""
    for line in raw.decode().split("\n"):
        if line == "":
            if data:
                events.append({"event": name or "message", "data": "\n".join(data), "id": last_id})
            data, name = [], ""
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id":
            last_id = value
    return events


def test_an_sdk_event_carries_the_frame_text_unchanged() -> None:
    frame = '{"action":"message","channel":"posts","name":"new_post","data":{"a":1},"serial":3}'
    assert sse_wire.event(frame) == f"data: {frame}\n\n".encode()
    assert parse_stream(sse_wire.event(frame)) == [{"event": "message", "data": frame, "id": ""}]


def test_data_with_line_breaks_is_split_into_data_lines_and_joined_back() -> None:
    html = "<li>\n  one\r\n  two\r</li>"
    events = parse_stream(sse_wire.event(html, name="new_post", id="4.abc"))
    assert events == [{"event": "new_post", "data": "<li>\n  one\n  two\n</li>", "id": "4.abc"}]


def test_names_and_ids_with_line_breaks_are_left_out_rather_than_breaking_the_stream() -> None:
    raw = sse_wire.event("x", name="evil\ndata: injected", id="1.a\nevent: y")
    assert parse_stream(raw) == [{"event": "message", "data": "x", "id": ""}]
    # The "message" name is the default: no event line.
    assert b"event:" not in sse_wire.event("x", name="message")


def test_comments_dispatch_nothing() -> None:
    assert parse_stream(sse_wire.comment("ping") + sse_wire.event("a")) == [{"event": "message", "data": "a", "id": ""}]


def test_close_frame_names_the_code() -> None:
    assert json.loads(sse_wire.close_frame(4002)) == {"action": "close", "code": 4002, "reason": "token_expired"}
    assert json.loads(sse_wire.close_frame(1000))["reason"] == "normal"


def test_positions_round_trip() -> None:
    positions: list[sse_wire.Position | None] = [(42, "AbCd-Ef_GhIj"), None, (0, "zz")]
    text = sse_wire.encode_positions(positions)
    assert text == "42.AbCd-Ef_GhIj~~0.zz"
    assert sse_wire.decode_positions(text, 3) == positions
    assert sse_wire.decode_positions(sse_wire.encode_positions([(7, "e")]), 1) == [(7, "e")]


def test_malformed_positions_resume_nothing() -> None:
    for text in [
        None,
        "",
        "42.abc",  # one entry for a stream of two channels
        "42.abc~x.def",
        "-1.abc~1.def",
        "42~1.def",
        "42.a b~1.def",
        "42.abc~1.def~",
        "99999999999999999999.abc~1.def",
        "٣.abc~1.def",  # a non-ASCII digit
        "1." + "a" * 65 + "~1.def",
    ]:
        assert sse_wire.decode_positions(text, 2) == [None, None], text
