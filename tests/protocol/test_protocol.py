"""The sans-I/O protocol: parsing, validation, every frame builder, the rate limiter. No sockets."""

from __future__ import annotations

import json

import pytest

from django_pulse.exceptions import LimitExceeded, ProtocolViolation
from django_pulse.protocol import (
    PING_FRAME,
    Action,
    CloseCode,
    ErrorCode,
    RateLimiter,
    close_code_for,
    connected_frame,
    discontinuity_frame,
    error_frame,
    is_valid_channel,
    message_frame,
    message_head,
    ok_frame,
    parse_frame,
    presence_frame,
)

MAX = 1024


def parse(frame: object, max_size: int = MAX):
    return parse_frame(frame if isinstance(frame, str) else json.dumps(frame), max_size)


def violation(frame: object, max_size: int = MAX) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        parse(frame, max_size)
    return info.value


# -- parsing ---------------------------------------------------------------------------------------------


def test_parse_every_client_action() -> None:
    frames = {
        "auth": {"token": "t"},
        "subscribe": {"channel": "posts"},
        "unsubscribe": {"channel": "posts"},
        "publish": {"channel": "posts", "name": "e", "data": {"x": 1}, "id": "m1"},
        "presence.enter": {"channel": "room", "data": {"n": "A"}},
        "presence.update": {"channel": "room", "data": 1},
        "presence.leave": {"channel": "room"},
        "presence.get": {"channel": "room"},
        "presence.subscribe": {"channel": "room"},
        "presence.unsubscribe": {"channel": "room"},
        "pong": {},
    }
    for action, members in frames.items():
        request = parse({"action": action, "ref": 3, **members})
        assert request.action is Action(action)
        assert request.ref == 3
        assert request.members["action"] == action
        if "channel" in members:
            assert request.channel == members["channel"]


def test_ref_is_optional_and_may_be_a_string() -> None:
    assert parse({"action": "pong"}).ref is None
    assert parse({"action": "subscribe", "channel": "a", "ref": "r-1"}).ref == "r-1"


@pytest.mark.parametrize("ref", [True, 1.5, [], {}, "x" * 65])
def test_bad_ref_is_bad_request(ref: object) -> None:
    exc = violation({"action": "subscribe", "channel": "a", "ref": ref})
    assert exc.code is ErrorCode.BAD_REQUEST and "'ref'" in exc.message


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"auth"', "", "{", "null"])
def test_invalid_json(text: str) -> None:
    exc = violation(text)
    assert exc.code is ErrorCode.INVALID_JSON and exc.ref is None


def test_missing_action_is_bad_request_naming_it() -> None:
    exc = violation({"ref": 1, "channel": "a"})
    assert exc.code is ErrorCode.BAD_REQUEST and "'action'" in exc.message and exc.ref == 1
    assert violation({"action": 5}).code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("action", ["nope", "message", "ok", "connected", "ping", "PRESENCE.enter"])
def test_unknown_and_server_only_actions(action: str) -> None:
    exc = violation({"action": action, "ref": 9})
    assert exc.code is ErrorCode.UNKNOWN_ACTION and exc.ref == 9


@pytest.mark.parametrize(
    ("frame", "member"),
    [
        ({"action": "subscribe"}, "channel"),
        ({"action": "subscribe", "channel": 5}, "channel"),
        ({"action": "auth"}, "token"),
        ({"action": "auth", "token": 1}, "token"),
        ({"action": "auth", "token": ""}, "token"),
        ({"action": "publish", "channel": "a"}, "name"),
        ({"action": "publish", "channel": "a", "name": ""}, "name"),
        ({"action": "publish", "channel": "a", "name": "x" * 256}, "name"),
        ({"action": "publish", "channel": "a", "name": "e", "id": 7}, "id"),
        ({"action": "presence.enter"}, "channel"),
    ],
)
def test_missing_or_mistyped_member_names_it(frame: dict[str, object], member: str) -> None:
    exc = violation({**frame, "ref": "r"})
    assert exc.code is ErrorCode.BAD_REQUEST
    assert f"'{member}'" in exc.message
    assert exc.ref == "r"


@pytest.mark.parametrize("channel", ["", "a b", "posts/1", "ü", "x" * 256, "a\nb", "#c"])
def test_invalid_channel(channel: str) -> None:
    exc = violation({"action": "subscribe", "channel": channel, "ref": 1})
    assert exc.code is ErrorCode.INVALID_CHANNEL and exc.ref == 1
    assert not is_valid_channel(channel)


@pytest.mark.parametrize("channel", ["a", "x" * 255, "A-z_0.9:@=~+", "chat:room-1", "user@example.com"])
def test_valid_channels(channel: str) -> None:
    assert parse({"action": "subscribe", "channel": channel}).channel == channel


def test_message_too_large_counts_utf8_bytes() -> None:
    frame = json.dumps({"action": "publish", "channel": "a", "name": "e", "data": "x" * 100})
    assert parse(frame, len(frame)).action is Action.PUBLISH
    with pytest.raises(LimitExceeded) as info:
        parse(frame, len(frame) - 1)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE
    wide = '{"action":"pong","data":"' + "é" * 50 + '"}'  # 50 chars, 100 bytes
    with pytest.raises(LimitExceeded):
        parse_frame(wide, len(wide) + 10)
    assert parse_frame(wide, len(wide) + 50).action is Action.PONG


# -- frames ----------------------------------------------------------------------------------------------


def test_connected_frame() -> None:
    limits = {"maxMessageSize": 65536, "maxSubscriptions": 128, "heartbeatInterval": 15000}
    frame = json.loads(
        connected_frame(connection_id="c_1", client_id="u", kb_id="default", expires_at=5, limits=limits)
    )
    assert frame == {
        "action": "connected",
        "connectionId": "c_1",
        "clientId": "u",
        "kbId": "default",
        "expiresAt": 5,
        "limits": limits,
    }


def test_ok_and_error_frames() -> None:
    assert json.loads(ok_frame(7, {"channel": "a", "serial": 0})) == {
        "action": "ok",
        "ref": 7,
        "channel": "a",
        "serial": 0,
    }
    assert json.loads(ok_frame("r")) == {"action": "ok", "ref": "r"}
    assert json.loads(error_frame(ErrorCode.FORBIDDEN, "No.", 3)) == {
        "action": "error",
        "ref": 3,
        "code": "forbidden",
        "message": "No.",
    }
    assert "ref" not in json.loads(error_frame(ErrorCode.RATE_LIMITED, "Slow down."))


def test_ping_and_discontinuity_frames() -> None:
    assert json.loads(PING_FRAME) == {"action": "ping"}
    assert json.loads(discontinuity_frame("posts", "broker_unavailable")) == {
        "action": "discontinuity",
        "channel": "posts",
        "reason": "broker_unavailable",
    }


def test_message_head_plus_serial_is_the_message_frame() -> None:
    head = message_head(channel="posts", name="new_post", data_json='{"t":"é\\"x"}', id="m_1", timestamp=12)
    assert head.endswith('"serial":')
    frame = json.loads(message_frame(head, 42))
    assert frame == {
        "action": "message",
        "channel": "posts",
        "name": "new_post",
        "data": {"t": 'é"x'},
        "id": "m_1",
        "timestamp": 12,
        "serial": 42,
    }
    with_client = json.loads(
        message_frame(message_head(channel="a", name="n", data_json="null", id="i", timestamp=1, client_id="u1"), 1)
    )
    assert with_client["clientId"] == "u1" and with_client["data"] is None


def test_presence_frame() -> None:
    member = {"clientId": "u", "connectionId": "c", "data": {"n": 1}, "timestamp": 3}
    assert json.loads(presence_frame(channel="room", event="enter", member=member, serial=17)) == {
        "action": "presence",
        "channel": "room",
        "event": "enter",
        "member": member,
        "serial": 17,
    }


def test_message_frame_serial_reads_the_tail() -> None:
    from django_pulse.protocol import message_frame, message_frame_serial

    frame = message_frame(message_head(channel="c", name="n", data_json='{"serial":"x"}', id="i", timestamp=1), 42)
    assert message_frame_serial(frame) == 42
    assert message_frame_serial('{"action":"discontinuity","channel":"c","reason":"x"}') is None


def test_history_ok_frame_embeds_frames_as_they_are() -> None:
    from django_pulse.protocol import history_ok_frame

    text = history_ok_frame(
        3, {"channel": "c", "serial": 2}, ['{"action":"message","serial":1}', '{"action":"message","serial":2}']
    )
    assert json.loads(text) == {
        "action": "ok",
        "ref": 3,
        "channel": "c",
        "serial": 2,
        "messages": [{"action": "message", "serial": 1}, {"action": "message", "serial": 2}],
    }
    assert json.loads(history_ok_frame(None, {}, [])) == {"action": "ok", "ref": None, "messages": []}


# -- codes -------------------------------------------------------------------------------------------------


def test_close_codes_for_auth_errors_and_retry_rule() -> None:
    assert close_code_for(ErrorCode.TOKEN_INVALID) is CloseCode.TOKEN_INVALID
    assert close_code_for(ErrorCode.TOKEN_EXPIRED) is CloseCode.TOKEN_EXPIRED
    assert close_code_for(ErrorCode.APP_DISABLED) is CloseCode.APP_DISABLED
    assert close_code_for(ErrorCode.APP_UNKNOWN) is CloseCode.APP_UNKNOWN
    assert close_code_for(ErrorCode.BAD_REQUEST) is CloseCode.INTERNAL_ERROR
    give_up = {c for c in CloseCode if not c.retry}
    assert give_up == {
        CloseCode.NORMAL,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.APP_DISABLED,
        CloseCode.APP_UNKNOWN,
        CloseCode.REVOKED,
        CloseCode.SUPERSEDED,
    }


# -- rate limiting -----------------------------------------------------------------------------------------


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=5, now=0.0)
    assert [limiter.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow(0.1)  # one token refilled after 1/rate s
    assert not limiter.allow(0.1)
    assert limiter.allow(10.0) and limiter.tokens == pytest.approx(4.0)  # refilled to the burst, not beyond


def test_rate_limiter_flags_a_sustained_flood_only() -> None:
    limiter = RateLimiter(rate=10, burst=5, now=0.0)
    # A short excess: a few refusals, not a flood.
    for _ in range(8):
        limiter.allow(0.0)
    assert not limiter.flooding
    # Twice the rate for a while: a flood.
    t = 0.0
    while not limiter.flooding and t < 5:
        t += 0.05
        limiter.allow(t)
    assert limiter.flooding and t < 2
    # Just under the rate for a long time: never a flood.
    calm = RateLimiter(rate=10, burst=5, now=0.0)
    for i in range(1, 2000):
        calm.allow(i * 0.101)
    assert not calm.flooding and calm.debt == 0


def test_rate_limiter_zero_means_unlimited() -> None:
    limiter = RateLimiter(rate=0, burst=0, now=0.0)
    assert all(limiter.allow(0.0) for _ in range(1000))


def test_every_error_and_close_code_is_documented_and_named_by_the_clients() -> None:
    """codes.py, docs/protocol.md's tables, the SSE close frame's names and pulse.js's names agree."""
    import re
    from pathlib import Path

    from django_pulse.protocol.sse import CLOSE_REASONS

    root = Path(__file__).resolve().parents[2]
    page = (root / "docs" / "protocol.md").read_text()
    errors = set(re.findall(r"^\| `([a-z_]+)` \|", page.split("## Error codes", 1)[1].split("## Close codes")[0], re.M))
    assert {code.value for code in ErrorCode} <= errors, {code.value for code in ErrorCode} - errors
    closes = dict(re.findall(r"^\| (\d{4}) \| ([a-z_()]+[ a-z_()]*) \|", page.split("## Close codes", 1)[1], re.M))
    for code in CloseCode:
        assert str(int(code)) in closes, code
        if code >= 4000:
            assert closes[str(int(code))] == code.name.lower(), code
            assert CLOSE_REASONS[int(code)] == code.name.lower(), code
    script = (root / "django_pulse" / "static" / "django_pulse" / "pulse.js").read_text()
    for code in CloseCode:
        if code >= 4000:
            assert f"{int(code)}: '{code.name.lower()}'" in script, code


def test_nesting_is_refused_past_64_levels_on_every_python_version() -> None:
    """The limit is the protocol's, not the JSON decoder's (Python 3.13 decodes far deeper than 3.11 and 3.12):
    64 levels of data pass, 65 are invalid_json, and brackets inside strings do not count."""
    from django_pulse.protocol.frames import MAX_DEPTH

    def frame(depth: int, text: str = "") -> str:
        data = '{"a":' * depth + json.dumps(text) + "}" * depth
        return '{"action":"publish","channel":"posts","name":"e","ref":1,"data":' + data + "}"

    assert parse_frame(frame(MAX_DEPTH - 1), 1 << 20).members["data"]  # the frame itself is one level
    with pytest.raises(ProtocolViolation) as refused:
        parse_frame(frame(MAX_DEPTH), 1 << 20)
    assert refused.value.code.value == "invalid_json" and "64 levels" in refused.value.message
    assert parse_frame(frame(3, "[{" * 500), 1 << 20).members["data"]


@pytest.mark.parametrize(
    "text",
    [
        # The character itself: what a frame decoded from an SSE send/ body holds (a WebSocket cannot carry it).
        '{"action":"whisper","channel":"posts","name":"n","data":"\ud800"}',
        '{"action":"publish","channel":"posts","name":"\udfff","data":1}',
        '{"action":"presence.enter","channel":"posts","data":{"\ud800":1}}',
        # The escape: what a WebSocket text frame can carry.
        '{"action":"whisper","channel":"posts","name":"n","data":"\\ud800"}',
        '{"action":"presence.update","channel":"posts","data":["ok",{"k":"a\\udc00"}]}',
    ],
)
def test_a_lone_surrogate_raw_or_escaped_is_invalid_json(text: str) -> None:
    """No subscriber's socket can take a lone surrogate: refused before any handler sees the frame."""
    with pytest.raises(ProtocolViolation) as refused:
        parse_frame(text, 1 << 20)
    assert refused.value.code.value == "invalid_json" and "surrogate" in refused.value.message
    paired = parse_frame(
        '{"action":"whisper","channel":"posts","name":"n","data":"\\ud83d\\ude00 \U0001f600"}', 1 << 20
    )
    assert paired.members["data"] == "\U0001f600 \U0001f600"


def test_one_decoder_for_frames_and_http_bodies() -> None:
    """The frame parser, DRF's parser and the SSE endpoints decode with the same function; it says why it
    refuses, as one ValueError."""
    from django_pulse.api import parsers
    from django_pulse.protocol import frames, strict_json
    from django_pulse.server import sse

    assert parsers.loads_strict is frames.loads_strict is sse.loads_strict is strict_json.loads_strict
    for raw, why in [
        (b"\xff", "not UTF-8"),
        ("\ud800", "surrogate"),
        ('"\\udfff"', "surrogate"),
        ("[" * 65 + "]" * 65, "64 levels"),
        ("[" * 100_000, "64 levels"),
        ('{"a":NaN}', "NaN is not JSON"),
        ("1e999", "out of range"),
        ("{nope", "not valid JSON"),
    ]:
        with pytest.raises(strict_json.InvalidJSON, match=why):
            strict_json.loads_strict(raw, "the body")
    assert strict_json.loads_strict(b'{"a":["\\u00e9\\ud83d\\ude00"]}') == {"a": ["\u00e9\U0001f600"]}
