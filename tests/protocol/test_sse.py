"""The SSE transport's wire format (django_pulse.protocol.sse): events as a browser's EventSource parses
them, the close frame, and the resume positions carried in Last-Event-ID."""

from __future__ import annotations

import json
from typing import Any

from django_pulse.protocol import sse as sse_wire
from tests.support.sseclient import EventStreamParser


def parse_stream(raw: bytes) -> list[dict[str, Any]]:
    """The events a browser dispatches for ``raw`` (the HTML spec's event stream interpretation), with the last
    event id after each; an id-only block updates the id and dispatches nothing."""
    parser = EventStreamParser()
    events = [parser.line(line) for line in raw.decode().split("\n")]
    return [event for event in events if event is not None]


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


# -- the SSE connection's output, in process -----------------------------------------------------------------


def _recording_send(sent: list[dict[str, Any]]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return send


async def test_a_message_is_encoded_once_for_every_sdk_stream() -> None:
    from django_pulse.server.sse import SSEConnection

    sent: list[list[dict[str, Any]]] = [[], [], []]
    conns = [SSEConnection({"type": "http"}, _recording_send(sent[i]), stream_id=f"s{i}") for i in range(3)]
    for conn in conns:
        assert conn.outbox is not None
        conn.outbox.push({"type": "websocket.accept"}, 0)
    frame = '{"action":"message","channel":"posts","name":"n","data":1,"id":"m","timestamp":1,"serial":7}'
    message = {"type": "websocket.send", "text": frame}  # the hub hands this one dict to every sink
    for conn in conns:
        assert conn.outbox is not None
        conn.outbox.push(message, len(frame))
    assert sent[0][0]["type"] == "http.response.start"
    assert dict(sent[0][0]["headers"])[b"content-type"].startswith(b"text/event-stream")
    bodies = [s[-1] for s in sent]
    assert bodies[0]["body"] == f"data: {frame}\n\n".encode() and bodies[0]["more_body"] is True
    assert bodies[1] is bodies[0] and bodies[2] is bodies[0]  # built once, sent to all three


async def test_a_unidirectional_stream_names_events_and_tracks_its_positions() -> None:
    from django_pulse.server.sse import SSEConnection

    sent: list[dict[str, Any]] = []
    conn = SSEConnection({"type": "http"}, _recording_send(sent), unidirectional=True)
    conn.stream_channels = ["a", "b"]
    conn.positions = dict.fromkeys(["a", "b"])
    assert conn.outbox is not None
    conn.outbox.push({"type": "websocket.accept"}, 0)
    conn.send_frame('{"action":"ok","ref":1,"channel":"a","serial":4,"epoch":"EA"}')
    conn.send_frame('{"action":"ok","ref":2,"channel":"b","serial":0,"epoch":"EB","resumed":false}')
    for serial, data in ((5, '"<p>x</p>"'), (6, '{"k":1}')):
        text = f'{{"action":"message","channel":"a","name":"new_post","data":{data},"id":"m","serial":{serial}}}'
        conn.outbox.push({"type": "websocket.send", "text": text}, len(text))
    conn.send_frame('{"action":"ping"}')  # not part of a unidirectional stream
    raw = b"".join(m.get("body", b"") for m in sent)
    events = parse_stream(raw)
    assert [e["event"] for e in events] == ["discontinuity", "new_post", "new_post"]
    assert json.loads(events[0]["data"])["reason"] == "resume_failed"
    assert events[1]["data"] == "<p>x</p>" and json.loads(events[2]["data"]) == {"k": 1}
    assert events[2]["id"] == "6.EA~0.EB"
    assert sse_wire.decode_positions(events[2]["id"], 2) == [(6, "EA"), (0, "EB")]
    conn.close(4003)
    assert parse_stream(sent[-1]["body"])[0]["event"] == "close" and sent[-1]["more_body"] is False


async def test_a_unidirectional_stream_skips_whispers_and_keeps_the_place_of_an_excluded_message() -> None:
    from django_pulse.protocol import whisper_frame
    from django_pulse.server.sse import SSEConnection

    sent: list[dict[str, Any]] = []
    conn = SSEConnection({"type": "http"}, _recording_send(sent), unidirectional=True)
    conn.stream_channels = ["a"]
    conn.positions = dict.fromkeys(["a"])
    assert conn.outbox is not None
    conn.outbox.push({"type": "websocket.accept"}, 0)
    conn.send_frame('{"action":"ok","ref":1,"channel":"a","serial":4,"epoch":"EA"}')
    frames = [
        whisper_frame(connection_id="c_x", channel="a", name="typing", data_json="true", client_id="u"),
        '{"action":"excluded","channel":"a","id":"m5","serial":5}',  # published excluding this stream
        '{"action":"message","exclude":"c_y","channel":"a","name":"n","data":"six","id":"m6","serial":6}',
    ]
    for text in frames:
        conn.outbox.push({"type": "websocket.send", "text": text}, len(text))
    events = parse_stream(b"".join(m.get("body", b"") for m in sent))
    # No event for the whisper; the stand-in moves the position (an id line, no event); the message excluding
    # someone else is an ordinary event.
    assert [(e["event"], e["data"], e["id"]) for e in events] == [("n", "six", "6.EA")]
    assert b"id: 5.EA\n\n" in b"".join(m.get("body", b"") for m in sent)
