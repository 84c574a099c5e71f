"""pulse.publish / apublish / publish_batch / disconnect / close_app_connections, seen by a subscriber."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from django_pulse import pulse, signals
from django_pulse.exceptions import AppError, LimitExceeded, ProtocolViolation
from django_pulse.models import PulseApp
from django_pulse.protocol import ErrorCode
from tests.support.wsutil import connect

pytestmark = pytest.mark.django_db(transaction=True)


async def test_publish_encodes_dates_decimals_uuids() -> None:
    alice = await connect()
    await alice.request("subscribe", channel="posts")
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    data = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "price": decimal.Decimal("9.90"),
        "id": uid,
        "day": datetime.date(2026, 1, 2),
        "text": "héllo",
    }
    message_id = await sync_to_async(pulse.publish)("posts", "new_post", data, id="order-1")
    assert message_id == "order-1"
    frame = await alice.recv()
    assert frame["data"] == {
        "when": "2026-01-02T03:04:05Z",
        "price": "9.90",
        "id": str(uid),
        "day": "2026-01-02",
        "text": "héllo",
    }
    assert frame["id"] == "order-1" and frame["name"] == "new_post"
    assert abs(frame["timestamp"] / 1000 - datetime.datetime.now().timestamp()) < 60
    await alice.close()


def test_data_that_is_not_json_names_the_type() -> None:
    with pytest.raises(TypeError, match="set"):
        pulse.publish("posts", "e", {"tags": {1, 2}})
    with pytest.raises(TypeError, match="object"):
        pulse.publish("posts", "e", object())
    with pytest.raises(ValueError, match="JSON"):
        pulse.publish("posts", "e", float("nan"))


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("bad channel", "e"), ErrorCode.INVALID_CHANNEL),
        (("", "e"), ErrorCode.INVALID_CHANNEL),
        (("posts", ""), ErrorCode.BAD_REQUEST),
        (("posts", "x" * 256), ErrorCode.BAD_REQUEST),
        (("posts", 5), ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_channel_or_event(args: tuple[Any, Any], code: ErrorCode) -> None:
    with pytest.raises(ProtocolViolation) as info:
        pulse.publish(*args)
    assert info.value.code is code


def test_message_too_large(settings: Any) -> None:
    settings.PULSE = {"MAX_MESSAGE_SIZE": 1000}
    pulse.publish("posts", "e", "x" * 800)
    with pytest.raises(LimitExceeded) as info:
        pulse.publish("posts", "e", "x" * 1000)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE


def test_unknown_and_disabled_apps() -> None:
    with pytest.raises(AppError) as info:
        pulse.publish("posts", "e", kb_id="nope")
    assert info.value.code is ErrorCode.APP_UNKNOWN
    app, _ = PulseApp.objects.ensure("off")
    app.enabled = False
    app.save()
    with pytest.raises(AppError) as info:
        pulse.publish("posts", "e", kb_id="off")
    assert info.value.code is ErrorCode.APP_DISABLED


async def test_publish_batch_in_order_and_all_or_nothing() -> None:
    alice = await connect()
    await alice.request("subscribe", channel="a")
    await alice.request("subscribe", channel="b")
    messages = [
        {"channel": "a", "event": "e", "data": 1},
        {"channel": "b", "event": "e", "data": 2},
        {"channel": "a", "event": "e", "data": 3, "id": "three"},
    ]
    ids = await sync_to_async(pulse.publish_batch)(messages)
    assert len(ids) == 3 and ids[2] == "three"
    frames = [await alice.recv() for _ in range(3)]
    assert [f["id"] for f in frames] == ids and [f["data"] for f in frames] == [1, 2, 3]
    assert [(f["channel"], f["serial"]) for f in frames] == [("a", 1), ("b", 1), ("a", 2)]
    with pytest.raises(ProtocolViolation, match=r"messages\[1\]"):
        await pulse.apublish_batch([{"channel": "a", "event": "e"}, {"channel": "a b", "event": "e"}])
    with pytest.raises(TypeError, match=r"messages\[0\]"):
        await pulse.apublish_batch([{"channel": "a", "event": "e", "data": {1}}])
    assert await alice.nothing()  # nothing of a rejected batch was published
    assert await pulse.apublish_batch([{"channel": "a", "event": "e"}]) != []
    assert (await alice.recv())["serial"] == 3
    await alice.close()


def test_batch_limit(settings: Any) -> None:
    settings.PULSE = {"MAX_BATCH": 2}
    with pytest.raises(ProtocolViolation, match="MAX_BATCH"):
        pulse.publish_batch([{"channel": "a", "event": "e"}] * 3)


def test_message_published_signal() -> None:
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.message_published.connect(receiver)
    try:
        message_id = pulse.publish("posts", "e", {"x": 1})
    finally:
        signals.message_published.disconnect(receiver)
    assert len(seen) == 1
    assert {k: seen[0][k] for k in ("kb_id", "channel", "event", "id", "serial", "client_id", "data")} == {
        "kb_id": "default",
        "channel": "posts",
        "event": "e",
        "id": message_id,
        "serial": 1,
        "client_id": None,
        "data": {"x": 1},
    }


def test_control_calls_validate() -> None:
    with pytest.raises(ValueError, match="client_id"):
        pulse.disconnect("")
    with pytest.raises(AppError):
        pulse.close_app_connections("nope")


@pytest.mark.django_db
def test_publish_checks_the_app_once_then_follows_changes(django_assert_num_queries: Any) -> None:
    """Publishing costs no query per message, and a disabled app is refused at once (no stale cache)."""
    pulse.publish("posts", "warm", {})
    with django_assert_num_queries(0):
        for n in range(20):
            pulse.publish("posts", "tick", {"n": n})
    app = PulseApp.objects.get(kb_id="default")
    app.enabled = False
    app.save()
    with pytest.raises(AppError) as info:
        pulse.publish("posts", "tick", {})
    assert info.value.code is ErrorCode.APP_DISABLED
