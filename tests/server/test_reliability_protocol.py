"""Bad input: fuzzed and hand-written nasty frames get a documented error frame (or close code); nothing
else happens, the server stays up and other connections are unaffected.

The bulk (>= 10,000 generated frames per run) drives ``protocol.parse_frame`` directly; a few hundred go
through a real consumer (WebsocketCommunicator); the hand-written corpus goes through both.
docs/reliability.md states what these tests enforce.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from django_pulse import pulse
from django_pulse.exceptions import PulseError
from django_pulse.protocol import CLIENT_ACTIONS, ErrorCode, Request, dumps, is_valid_channel, parse_frame
from tests.support.wsutil import Client, connect

pytestmark = pytest.mark.reliability

MAX = 65536
# What parse_frame may answer (docs/protocol.md, error codes).
PARSE_ERRORS = {
    ErrorCode.BAD_REQUEST,
    ErrorCode.INVALID_JSON,
    ErrorCode.UNKNOWN_ACTION,
    ErrorCode.INVALID_CHANNEL,
    ErrorCode.MESSAGE_TOO_LARGE,
}
ACTIONS = [
    *sorted(a.value for a in CLIENT_ACTIONS),
    "connected",
    "ok",
    "error",
    "message",
    "ping",
    "",
    "AUTH",
    "publish ",
    "presence.",
    "__proto__",
]

# -- strategies ------------------------------------------------------------------------------------------

# A WebSocket text frame is valid UTF-8 (every server decodes it strictly), so raw text never holds a lone
# surrogate; escapes (\\ud800) in the JSON can produce one, and are generated below.
chars = st.characters(blacklist_categories=("Cs",))
text_ = st.text(chars, max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text_
    | st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\x00", "\u2028", "😀", "posts", "a" * 256])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text_, inner, max_size=4), max_leaves=8
)
channels = st.one_of(
    st.sampled_from(["posts", "a", "x" * 255, "x" * 256, "", "bad name", "é", "a/b", "orders.*", "posts\n", "\nposts"]),
    st.text("abcXYZ019_-.:@=~+", min_size=1, max_size=20),
    text_,
    json_values,
)
refs = st.one_of(
    st.integers(),
    st.text(chars, max_size=70),
    st.booleans(),
    st.floats(),
    st.none(),
    st.sampled_from([2**53 - 1, 2**53, -(2**53), 10**100]),
)


@st.composite
def frames(draw: st.DrawFn) -> dict[str, Any]:
    """A frame shaped like a request, with every member possibly missing, mistyped or hostile."""
    frame: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        frame["action"] = draw(st.sampled_from(ACTIONS) | json_values)
    for name, values in (
        ("ref", refs),
        ("channel", channels),
        ("name", st.text(chars, max_size=300) | json_values),
        ("token", text_ | json_values),
        ("data", json_values),
        ("id", st.text(chars, max_size=300) | json_values),
    ):
        if draw(st.booleans()):
            frame[name] = draw(values)
    if not draw(st.integers(0, 4)):
        frame[draw(text_)] = draw(json_values)
    return frame


def encode(frame: Any) -> str:
    # allow_nan: Python writes NaN/Infinity, which is exactly the kind of not-quite-JSON a client may send.
    # ensure_ascii=False writes lone surrogates raw; escape those, as a client's JSON encoder would.
    text = json.dumps(frame, ensure_ascii=False, allow_nan=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(frame, ensure_ascii=True, allow_nan=True)
    return text


def mutate(text: str, cut: int, junk: str) -> str:
    cut = cut % (len(text) + 1)
    return text[:cut] + junk + text[cut:]


texts = st.one_of(
    frames().map(encode),
    st.tuples(
        frames().map(encode),
        st.integers(0, 1000),
        st.sampled_from(["", "}", "{", '"', "\\", ",", "]", "\\u", "\\ud800", "NaN", "1e999", "\x00"]),
    ).map(lambda t: mutate(*t)),
    st.text(chars, max_size=100),
    json_values.map(encode),
)


def check_parse(text: str) -> Request | PulseError:
    """parse_frame's answer, asserting it keeps the protocol's promises whatever ``text`` is."""
    try:
        request = parse_frame(text, MAX)
    except PulseError as exc:
        assert exc.code in PARSE_ERRORS, (exc.code, text)
        assert exc.message
        return exc
    assert request.action in CLIENT_ACTIONS
    if "channel" in request.members and request.action.value not in ("auth", "pong"):
        assert is_valid_channel(request.channel)
    ref = request.ref
    assert (
        ref is None
        or (isinstance(ref, str) and len(ref) <= 64)
        or (isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) < 2**53)
    )
    # Whatever is accepted can be relayed: strict JSON (no NaN/Infinity) that encodes to UTF-8.
    relayed = dumps(request.members)
    relayed.encode("utf-8")
    json.loads(relayed, parse_constant=lambda name: pytest.fail(f"{name} relayed"))
    return request


# -- parse_frame: the bulk -------------------------------------------------------------------------------

# 500 examples of 10 frames each per test: 10,000 frames per run (a list per example keeps Hypothesis's
# per-example overhead small).
FUZZ = hsettings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.fuzz
@pytest.mark.timeout(600)  # CPU-bound: on a loaded machine (make test runs 4 workers on 2 cores) it took over 120 s
@FUZZ
@given(st.lists(frames().map(encode), min_size=10, max_size=10))
def test_fuzzed_request_shaped_frames_get_a_request_or_a_documented_error(batch: list[str]) -> None:
    for text in batch:
        check_parse(text)


@pytest.mark.fuzz
@pytest.mark.timeout(600)  # CPU-bound: on a loaded machine (make test runs 4 workers on 2 cores) it took over 120 s
@FUZZ
@given(st.lists(texts, min_size=10, max_size=10))
def test_fuzzed_text_gets_a_request_or_a_documented_error(batch: list[str]) -> None:
    for text in batch:
        check_parse(text)


# -- hand-written nasty frames -----------------------------------------------------------------------------

PUB = '{"action":"publish","channel":"posts","name":"e","ref":1,"data":%s}'
NASTY: list[tuple[str, str, Any]] = [
    # (what, frame text, the error code expected; None: accepted)
    ("empty", "", ErrorCode.INVALID_JSON),
    ("whitespace", "   \n", ErrorCode.INVALID_JSON),
    ("not JSON", "hello", ErrorCode.INVALID_JSON),
    ("truncated", '{"action":"subscribe","channel":"po', ErrorCode.INVALID_JSON),
    ("trailing garbage", '{"action":"pong"} {}', ErrorCode.INVALID_JSON),
    ("array", '["subscribe","posts"]', ErrorCode.INVALID_JSON),
    ("string", '"subscribe"', ErrorCode.INVALID_JSON),
    ("number", "42", ErrorCode.INVALID_JSON),
    ("null", "null", ErrorCode.INVALID_JSON),
    ("NaN data", PUB % "NaN", ErrorCode.INVALID_JSON),
    ("Infinity data", PUB % "Infinity", ErrorCode.INVALID_JSON),
    ("-Infinity data", PUB % "-Infinity", ErrorCode.INVALID_JSON),
    ("float overflowing to inf", PUB % "1e999", ErrorCode.INVALID_JSON),
    ("negative float overflow", PUB % "-1e400", ErrorCode.INVALID_JSON),
    ("5000-digit integer", PUB % ("9" * 5000), ErrorCode.INVALID_JSON),
    ("4000-digit integer data", PUB % ("9" * 4000), None),
    ("huge integer ref", '{"action":"pong","ref":%s}' % ("9" * 40), ErrorCode.BAD_REQUEST),
    ("ref past 2**53", '{"action":"subscribe","channel":"a","ref":9007199254740992}', ErrorCode.BAD_REQUEST),
    ("ref at 2**53-1", '{"action":"subscribe","channel":"a","ref":9007199254740991}', None),
    ("float ref", '{"action":"subscribe","channel":"a","ref":1.5}', ErrorCode.BAD_REQUEST),
    ("bool ref", '{"action":"subscribe","channel":"a","ref":true}', ErrorCode.BAD_REQUEST),
    ("65-char ref", '{"action":"subscribe","channel":"a","ref":"%s"}' % ("r" * 65), ErrorCode.BAD_REQUEST),
    ("deep nesting 100k", "[" * 30000 + "]" * 30000, ErrorCode.INVALID_JSON),
    ("deep nesting in data", PUB % ("[" * 20000 + "]" * 20000), ErrorCode.INVALID_JSON),
    ("deep object nesting", PUB % ('{"a":' * 5000 + "1" + "}" * 5000), ErrorCode.INVALID_JSON),
    ("lone high surrogate in data", PUB % '"\\ud800"', ErrorCode.INVALID_JSON),
    (
        "lone low surrogate in name",
        '{"action":"publish","channel":"posts","name":"\\udc00","ref":1}',
        ErrorCode.INVALID_JSON,
    ),
    ("lone surrogate in a key", '{"action":"pong","\\ud800":1}', ErrorCode.INVALID_JSON),
    ("surrogate pair (valid)", PUB % '"\\ud83d\\ude00"', None),
    ("escaped backslash before u", PUB % '"\\\\ud800"', None),
    ("NUL in data", PUB % '"a\\u0000b"', None),
    ("unknown action", '{"action":"explode","ref":1}', ErrorCode.UNKNOWN_ACTION),
    ("server-only action", '{"action":"connected","ref":1}', ErrorCode.UNKNOWN_ACTION),
    ("action of wrong type", '{"action":1,"ref":1}', ErrorCode.BAD_REQUEST),
    ("action missing", '{"ref":1}', ErrorCode.BAD_REQUEST),
    ("action null", '{"action":null}', ErrorCode.BAD_REQUEST),
    ("action as object", '{"action":{"toString":1}}', ErrorCode.BAD_REQUEST),
    ("channel missing", '{"action":"subscribe","ref":1}', ErrorCode.BAD_REQUEST),
    ("channel a number", '{"action":"subscribe","channel":5,"ref":1}', ErrorCode.BAD_REQUEST),
    ("channel a list", '{"action":"subscribe","channel":["a"],"ref":1}', ErrorCode.BAD_REQUEST),
    ("channel 256 chars", '{"action":"subscribe","channel":"%s","ref":1}' % ("c" * 256), ErrorCode.INVALID_CHANNEL),
    ("channel with space", '{"action":"subscribe","channel":"a b","ref":1}', ErrorCode.INVALID_CHANNEL),
    ("channel with newline", '{"action":"subscribe","channel":"a\\n","ref":1}', ErrorCode.INVALID_CHANNEL),
    ("channel non-ASCII", '{"action":"subscribe","channel":"caf\u00e9","ref":1}', ErrorCode.INVALID_CHANNEL),
    ("channel empty", '{"action":"subscribe","channel":"","ref":1}', ErrorCode.INVALID_CHANNEL),
    ("publish without name", '{"action":"publish","channel":"a","ref":1}', ErrorCode.BAD_REQUEST),
    ("publish name a number", '{"action":"publish","channel":"a","name":1,"ref":1}', ErrorCode.BAD_REQUEST),
    (
        "publish name 256 chars",
        '{"action":"publish","channel":"a","name":"%s","ref":1}' % ("n" * 256),
        ErrorCode.BAD_REQUEST,
    ),
    ("publish id empty", '{"action":"publish","channel":"a","name":"e","id":"","ref":1}', ErrorCode.BAD_REQUEST),
    ("publish id a number", '{"action":"publish","channel":"a","name":"e","id":7,"ref":1}', ErrorCode.BAD_REQUEST),
    ("auth token a number", '{"action":"auth","token":123,"ref":1}', ErrorCode.BAD_REQUEST),
    ("auth token 8193 chars", '{"action":"auth","token":"%s","ref":1}' % ("t" * 8193), ErrorCode.BAD_REQUEST),
    ("duplicate keys (last wins)", '{"action":"explode","action":"subscribe","channel":"a","ref":1}', None),
    (
        "duplicate keys to invalid",
        '{"action":"subscribe","channel":"a","channel":"a b","ref":1}',
        ErrorCode.INVALID_CHANNEL,
    ),
    ("__proto__ member", '{"action":"subscribe","channel":"a","__proto__":{"x":1},"ref":1}', None),
    (
        "64 KiB + 1",
        '{"action":"pong","pad":"%s"}' % ("p" * (MAX + 1 - len('{"action":"pong","pad":""}'))),
        ErrorCode.MESSAGE_TOO_LARGE,
    ),
    ("64 KiB of multibyte", '{"action":"pong","pad":"%s"}' % ("\u00e9" * (MAX // 2)), ErrorCode.MESSAGE_TOO_LARGE),
    ("huge string", '{"action":"pong","pad":"%s"}' % ("x" * 1_000_000), ErrorCode.MESSAGE_TOO_LARGE),
]


def test_the_64_kib_plus_one_frame_is_exactly_one_byte_over() -> None:
    text = dict((name, text) for name, text, _ in NASTY)["64 KiB + 1"]
    assert len(text.encode()) == MAX + 1
    assert parse_frame(text[:-3] + '"}', MAX).action.value == "pong"  # one byte less parses


@pytest.mark.parametrize(("what", "text", "code"), NASTY, ids=[n[0] for n in NASTY])
def test_nasty_frame_parses_to_its_documented_answer(what: str, text: str, code: ErrorCode | None) -> None:
    outcome = check_parse(text)
    if code is None:
        assert isinstance(outcome, Request), outcome
    else:
        assert isinstance(outcome, PulseError) and outcome.code == code, outcome


def test_non_finite_floats_and_lone_surrogates_never_reach_subscribers() -> None:
    """Regression: these were accepted and relayed as ``NaN``/``Infinity`` (not JSON: browsers' JSON.parse
    rejects the frame) or as a lone surrogate (the UTF-8 encode of the relayed frame failed on every
    subscriber's socket)."""
    for data in ("NaN", "1e999", '"\\udbff"'):
        with pytest.raises(PulseError) as info:
            parse_frame(PUB % data, MAX)
        assert info.value.code == ErrorCode.INVALID_JSON
    with pytest.raises(ValueError, match="surrogate"):
        pulse.publish("posts", "e", "\ud800")
    with pytest.raises(ValueError):
        pulse.publish("posts", "e", math.inf)


# -- through a real consumer ----------------------------------------------------------------------------------


async def send_text(client: Client, text: str) -> None:
    # WebsocketCommunicator.send_to refuses an empty string; a real socket can carry one.
    await client.comm.send_input({"type": "websocket.receive", "text": text})


async def drain_until_marker(client: Client, marker: str, timeout: float = 5) -> list[dict[str, Any]]:
    """Frames received until the ``ok`` reply to the marker request (which is sent last)."""
    await client.send({"action": "unsubscribe", "channel": "marker", "ref": marker})
    seen = []
    while True:
        output = await client.comm.receive_output(timeout)
        assert output["type"] == "websocket.send", f"the connection closed: {output}"
        frame = json.loads(output["text"])  # every frame the server sends is JSON
        if frame.get("ref") == marker and frame["action"] == "ok":
            return seen
        seen.append(frame)


def expected_reply_refs(sent: list[str]) -> list[str]:
    """The refs (JSON-encoded) of the replies ``sent`` must get, in order: one per request with a readable ref
    (except ``pong``, which is never answered)."""
    refs = []
    for text in sent:
        outcome = check_parse(text)
        if outcome.ref is not None and not (isinstance(outcome, Request) and outcome.action.value == "pong"):
            refs.append(json.dumps(outcome.ref))
    return refs


async def assert_answers(client: Client, sent: list[str]) -> None:
    """Each request with a ref got exactly one reply, in request order; every error carries a documented code;
    the connection stayed open."""
    seen = await drain_until_marker(client, "marker-end")
    codes = {code.value for code in ErrorCode}
    for frame in seen:
        assert frame["action"] in ("ok", "error", "message", "ping"), frame
        if frame["action"] == "error":
            assert frame["code"] in codes and frame["message"], frame
    replies = [json.dumps(f["ref"]) for f in seen if f["action"] in ("ok", "error") and "ref" in f]
    assert replies == expected_reply_refs(sent)


async def fuzz_consumer(texts_to_send: list[str]) -> None:
    fuzzer = await connect("fuzzer")
    bystander = await connect("bystander")
    try:
        await bystander.request("subscribe", channel="calm")
        for text in texts_to_send:
            await send_text(fuzzer, text)
        await assert_answers(fuzzer, texts_to_send)
        # The server is fine and so is everybody else.
        await pulse.apublish("calm", "still", 1)
        assert (await bystander.recv())["name"] == "still"
        reply = await fuzzer.request("subscribe", channel="after-fuzz")
        assert reply["action"] == "ok", reply
    finally:
        await fuzzer.close()
        await bystander.close()


@pytest.mark.django_db(transaction=True)
@hsettings(
    max_examples=4,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(texts, min_size=75, max_size=75))
def test_fuzzed_frames_through_a_real_consumer(batch: list[str], settings: Any) -> None:
    settings.PULSE = {"RATE_LIMIT": 0, "PUBLISH_RATE": 0}
    asyncio.run(fuzz_consumer(batch))


@pytest.mark.django_db(transaction=True)
async def test_the_nasty_corpus_through_a_real_consumer(settings: Any) -> None:
    settings.PULSE = {"RATE_LIMIT": 0}
    fuzzer = await connect("fuzzer")
    bystander = await connect("bystander")
    await bystander.request("subscribe", channel="posts")
    await fuzzer.request("subscribe", channel="posts")
    for what, text, code in NASTY:
        await send_text(fuzzer, text)
        frame = await fuzzer.recv()
        while frame["action"] == "message":
            frame = await fuzzer.recv()
        if code is None:
            assert frame["action"] == "ok", (what, frame)
        else:
            assert (frame["action"], frame.get("code")) == ("error", code.value), (what, frame)
    await fuzzer.comm.send_to(bytes_data=b"\x00\xff binary")
    frame = await fuzzer.recv()
    assert (frame["action"], frame["code"]) == ("error", "unsupported_frame")
    await assert_answers(fuzzer, [])
    # The accepted publishes reached the bystander as strict JSON, and nothing else did.
    received = []
    while not await bystander.nothing(0.3):
        received.append(await bystander.recv())
    # 4000-digit integer, surrogate pair, escaped backslash, NUL
    assert [(m["name"], m["serial"]) for m in received] == [("e", 1), ("e", 2), ("e", 3), ("e", 4)]
    await pulse.apublish("posts", "after", None)
    assert (await bystander.recv())["name"] == "after"
    await fuzzer.close()
    await bystander.close()
