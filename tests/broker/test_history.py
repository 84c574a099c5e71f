"""Per-channel history in the brokers (memory|Redis): retention by count and time, epochs, the pure replay
plan, and the server SDK's pulse.history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async

from django_pulse import pulse
from django_pulse.broker import Broker, HistoryRead, message_topic
from django_pulse.broker.redis import RedisBroker
from django_pulse.exceptions import ProtocolViolation
from django_pulse.protocol import discontinuity_frame
from django_pulse.server.recovery import plan_subscribe
from django_pulse.server.runtime import get_runtime
from tests.broker.test_broker import Collect, attach, head

TOPIC = message_topic("default", "posts")


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest, settings: Any) -> AsyncIterator[Broker]:
    if request.param == "redis":
        settings.PULSE = {
            "REDIS_URL": request.getfixturevalue("redis_url"),
            "REDIS_PREFIX": request.getfixturevalue("redis_prefix"),
        }
    else:
        settings.PULSE = {}
    instance = get_runtime().broker
    yield instance
    await instance.aclose()


def serials(read: HistoryRead) -> list[int]:
    return [s for s, _ in read.frames]


async def test_history_keeps_the_delivered_frames_with_their_serials(broker: Broker) -> None:
    sink = Collect()
    await attach(TOPIC, sink)
    for i in range(5):
        await broker.publish_message(TOPIC, head(i))
    await sink.wait_for(5)
    delivered = sink.texts
    read = await broker.history(TOPIC, limit=100)
    assert read.serial == 5
    assert serials(read) == [1, 2, 3, 4, 5]
    # History holds exactly the text every subscriber received.
    assert [f for _, f in read.frames] == delivered
    assert serials(await broker.history(TOPIC, limit=2)) == [4, 5]
    assert serials(await broker.history(TOPIC, after=3, limit=100)) == [4, 5]
    assert serials(await broker.history(TOPIC, before=4, limit=2)) == [2, 3]
    assert serials(await broker.history(TOPIC, before=1, limit=10)) == []
    assert (await broker.history(TOPIC)).frames == []  # limit 0: the counter only
    sync = await asyncio.to_thread(broker.history_sync, TOPIC, after=1, limit=3)
    assert serials(sync) == [3, 4, 5] and sync.epoch == read.epoch


async def test_history_is_trimmed_to_history_size(broker: Broker, settings: Any) -> None:
    broker.history_size = 3  # type: ignore[attr-defined]
    broker.min_retention_ms = 0  # type: ignore[attr-defined]  # Redis: else the last 30 s stay too
    for i in range(8):
        await asyncio.to_thread(broker.publish_message_sync, TOPIC, head(i))
    read = await broker.history(TOPIC, limit=100)
    assert read.serial == 8
    assert serials(read) == [6, 7, 8]


async def test_history_older_than_history_ttl_is_not_returned(broker: Broker) -> None:
    broker.history_ttl_ms = 300  # type: ignore[attr-defined]
    await broker.publish_message(TOPIC, head(1))
    await asyncio.sleep(0.5)
    await broker.publish_message(TOPIC, head(2))
    read = await broker.history(TOPIC, limit=10)
    assert read.serial == 2
    assert serials(read) == [2]
    await asyncio.sleep(0.5)
    assert serials(await broker.history(TOPIC, limit=10)) == []
    # The counter and its epoch outlive the retained messages.
    later = await broker.history(TOPIC)
    assert (later.serial, later.epoch) == (2, read.epoch)


async def test_history_size_zero_keeps_nothing(broker: Broker) -> None:
    broker.history_size = 0  # type: ignore[attr-defined]
    await broker.publish_message(TOPIC, head(1))
    read = await broker.history(TOPIC, limit=10)
    assert (read.serial, read.frames) == (1, [])


async def test_each_channel_has_its_own_stable_epoch(broker: Broker) -> None:
    other = message_topic("default", "other")
    first = await broker.history(TOPIC)
    assert first.serial == 0 and first.epoch
    await broker.publish_message(TOPIC, head(1))
    await broker.publish_message(other, head(1, "other"))
    # Created by the read, kept by the publishes; another channel's counter has another epoch.
    assert (await broker.history(TOPIC)).epoch == first.epoch
    assert (await broker.history(other)).epoch != first.epoch


@pytest.mark.redis
async def test_redis_losing_the_counter_starts_a_new_epoch_and_tells_subscribers(
    pulse_redis: str, redis_prefix: str
) -> None:
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    sink = Collect()
    try:
        await attach(TOPIC, sink)
        for i in range(3):
            await broker.publish_message(TOPIC, head(i))
        before = await broker.history(TOPIC, limit=10)
        assert serials(before) == [1, 2, 3]
        admin = redis.Redis.from_url(pulse_redis)
        try:
            assert admin.type(broker.history_key(TOPIC)) == b"stream"
            assert 0 < admin.pttl(broker.history_key(TOPIC)) <= 120_000
            # An idle channel's counter expires CHANNEL_TTL after its last publish or read (idle channels must not
            # hold Redis memory forever).
            assert 86_000 < admin.ttl(broker.serial_key(TOPIC)) <= 86_400
            admin.delete(broker.serial_key(TOPIC))  # what FLUSHDB or eviction does to this channel
        finally:
            admin.close()
        assert await broker.publish_message(TOPIC, head("new")) == 1
        frames = await sink.wait_for(5)
        assert frames[3] == {"action": "discontinuity", "channel": "posts", "reason": "history_lost"}
        assert frames[4]["serial"] == 1
        after = await broker.history(TOPIC, limit=10)
        assert after.epoch != before.epoch
        assert serials(after) == [1]  # the old epoch's history is gone with it
    finally:
        await broker.aclose()


@pytest.mark.redis
async def test_redis_history_is_shared_by_processes(pulse_redis: str, redis_prefix: str) -> None:
    here = get_runtime().broker
    other = RedisBroker(pulse_redis, redis_prefix)
    try:
        await other.publish_message(TOPIC, head(1))
        await asyncio.to_thread(other.publish_message_sync, TOPIC, head(2))
        mine, theirs = await here.history(TOPIC, limit=5), await other.history(TOPIC, limit=5)
        assert mine == theirs and serials(mine) == [1, 2]
    finally:
        await other.aclose()
        await here.aclose()


# -- the replay plan (pure) --------------------------------------------------------------------------


def read(serial: int, frames: range, epoch: str = "E", fork: tuple[str, int] | None = None) -> HistoryRead:
    return HistoryRead(serial, epoch, [(s, f"m{s}") for s in frames], fork=fork)


def test_plan_resume_replays_exactly_the_missed_messages() -> None:
    plan = plan_subscribe(read(7, range(5, 8)), resume=(4, "E"), rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (4, True, ["m5", "m6", "m7"])


def test_plan_resume_with_nothing_missed() -> None:
    plan = plan_subscribe(read(7, range(8, 8)), resume=(7, "E"), rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (7, True, [])


@pytest.mark.parametrize(
    ("server", "resume"),
    [
        (read(9, range(6, 10)), (4, "E")),  # 5 is no longer retained
        (read(9, range(5, 10), "F", fork=("D", 3)), (4, "E")),  # another epoch, forked from an epoch not the client's
        (read(9, range(0), "F"), (4, "E")),  # another epoch, with nothing retained
        (read(3, range(1, 4)), (4, "E")),  # the client is ahead of the counter: it was reset
        (read(9, range(0)), (4, "E")),  # nothing retained (HISTORY_SIZE 0, or all expired)
    ],
)
def test_plan_resume_fails_when_the_gap_cannot_be_filled(server: HistoryRead, resume: tuple[int, str]) -> None:
    plan = plan_subscribe(server, resume=resume, rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (server.serial, False, [])


def test_plan_resume_into_a_channel_that_began_afresh_replays_all_of_its_new_epoch() -> None:
    """The client was at 4 in "E"; the channel's counter was lost (a restarted in-memory server, a Redis without
    its data) and began again in "F", where 1..3 were published since: the resume is refused (what "E" had after 4
    is gone), and all of "F" follows the refusal, since none of it can have reached the client."""
    plan = plan_subscribe(read(3, range(1, 4), "F"), resume=(4, "E"), rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (0, False, ["m1", "m2", "m3"])
    plan = plan_subscribe(read(9, range(6, 10), "F"), resume=(4, "E"), rewind=0)  # 1..5 no longer retained
    assert (plan.serial, plan.resumed, plan.frames) == (5, False, ["m6", "m7", "m8", "m9"])


def test_plan_resume_across_a_failover_from_a_position_the_new_master_holds() -> None:
    """After a failover the channel is in a new epoch "F" that forked from "E" at serial 6 (the last serial the
    promoted replica received): a client at or below 6 in "E" resumes exactly, into "F"; one past it saw a
    serial the new master never had, and reloads."""

    def after_failover(after: int) -> HistoryRead:  # a read made with ``after`` = the resume serial
        return HistoryRead(9, "F", [(s, f"m{s}") for s in range(after + 1, 10)], fork=("E", 6))

    plan = plan_subscribe(after_failover(4), resume=(4, "E"), rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (4, True, [f"m{s}" for s in range(5, 10)])
    assert plan_subscribe(after_failover(6), resume=(6, "E"), rewind=0).resumed is True
    plan = plan_subscribe(after_failover(7), resume=(7, "E"), rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (9, False, [])
    assert plan_subscribe(after_failover(4), resume=(4, "D"), rewind=0).resumed is False


def test_plan_rewind_and_plain() -> None:
    plan = plan_subscribe(read(9, range(7, 10)), resume=None, rewind=5)
    assert (plan.serial, plan.resumed, plan.frames) == (6, None, ["m7", "m8", "m9"])
    plan = plan_subscribe(read(9, range(0)), resume=None, rewind=0)
    assert (plan.serial, plan.resumed, plan.frames) == (9, None, [])


# -- pulse.history ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_sdk_history(backend: str, request: pytest.FixtureRequest, settings: Any) -> None:
    if backend == "redis":
        request.getfixturevalue("pulse_redis")
    ids = [await pulse.apublish("posts", "new_post", {"i": i}) for i in range(4)]
    await sync_to_async(pulse.publish)("other", "x", 1)
    messages = await pulse.ahistory("posts")
    assert [m["id"] for m in messages] == ids
    assert messages[0] == {
        "channel": "posts",
        "name": "new_post",
        "data": {"i": 0},
        "id": ids[0],
        "timestamp": messages[0]["timestamp"],
        "serial": 1,
    }
    page = await sync_to_async(pulse.history)("posts", limit=2)
    assert [m["serial"] for m in page] == [3, 4]
    older = await sync_to_async(pulse.history)("posts", limit=2, before=page[0]["serial"])
    assert [m["serial"] for m in older] == [1, 2]
    assert await pulse.ahistory("never-used") == []
    with pytest.raises(ProtocolViolation):
        await pulse.ahistory("bad channel")
    with pytest.raises(ValueError, match="limit"):
        await pulse.ahistory("posts", limit=0)
    with pytest.raises(ValueError, match="before"):
        await pulse.ahistory("posts", before=-1)
    await get_runtime().broker.aclose()


# -- the seam (ReplaySink) ---------------------------------------------------------------------------


def frame(serial: int) -> dict[str, Any]:
    from django_pulse.protocol import message_frame

    return {"type": "websocket.send", "text": message_frame(head(serial), serial)}


NOTICE = {"type": "websocket.send", "text": discontinuity_frame("posts", "broker_unavailable")}
LOST = {"type": "websocket.send", "text": discontinuity_frame("posts", "history_lost")}


async def test_replay_sink_holds_then_drops_what_the_replay_covered_until_live_passes_it() -> None:
    from django_pulse.server.recovery import ReplaySink

    out = Collect()
    caught_up: list[ReplaySink] = []
    sink = ReplaySink(out, caught_up.append)
    for message in (frame(4), NOTICE, frame(5), frame(6)):
        sink.push(message, 1)
    assert out.texts == []  # held while the reply and the replay are queued
    sink.release(5)  # the replay went up to 5
    assert [json.loads(t).get("serial") for t in out.texts] == [None, 6]
    # The broker delivers in serial order: once 6 passed, nothing older can come, so the sink is swapped out.
    await asyncio.sleep(0)
    assert caught_up == [sink]
    sink.push(frame(7), 1)
    assert json.loads(out.texts[-1])["serial"] == 7


async def test_replay_sink_filters_late_frames_below_the_read() -> None:
    from django_pulse.server.recovery import ReplaySink

    out = Collect()
    caught_up: list[ReplaySink] = []
    sink = ReplaySink(out, caught_up.append)
    sink.release(10)
    sink.push(frame(9), 1)  # published before the read, delivered after it: in the replay already
    sink.push(frame(10), 1)
    assert out.texts == [] and caught_up == []
    sink.push(frame(11), 1)
    assert [json.loads(t)["serial"] for t in out.texts] == [11]
    await asyncio.sleep(0)
    assert caught_up == [sink]


async def test_replay_sink_stops_filtering_when_the_counter_starts_again() -> None:
    from django_pulse.server.recovery import ReplaySink

    out = Collect()
    caught_up: list[ReplaySink] = []
    sink = ReplaySink(out, caught_up.append)
    sink.release(57)
    sink.push(LOST, 1)
    sink.push(frame(1), 1)  # serial 1 of the new epoch: delivered, not mistaken for an old one
    assert [json.loads(t).get("serial") for t in out.texts] == [None, 1]
    await asyncio.sleep(0)
    assert caught_up == [sink]


async def test_replay_sink_released_settled_hands_over_at_once_and_still_forwards_what_it_held() -> None:
    """The broker has nothing on its way (``settled``): no frame at or below the read can come any more, so the
    subscription hands over to the outbox right after the release, not at its first live message."""
    from django_pulse.server.recovery import ReplaySink

    out = Collect()
    caught_up: list[ReplaySink] = []
    sink = ReplaySink(out, caught_up.append)
    sink.push(frame(5), 1)  # dispatched between the read (5) and the release: in the replay already
    sink.push(frame(6), 1)
    sink.release(5, settled=True)
    assert [json.loads(t)["serial"] for t in out.texts] == [6]
    await asyncio.sleep(0)
    assert caught_up == [sink]
    idle = ReplaySink(out, caught_up.append)
    idle.release(6, settled=True)
    await asyncio.sleep(0)
    assert caught_up == [sink, idle]
    unsettled = ReplaySink(out, caught_up.append)
    unsettled.release(6, settled=False)
    await asyncio.sleep(0)
    assert caught_up == [sink, idle]  # waits for a live frame above 6, as before


async def test_the_memory_broker_is_settled_only_when_nothing_published_is_on_its_way() -> None:
    """A publish from another thread is queued for the loop: until the loop has dispatched it the broker is not
    settled (a subscription reading now must keep filtering); once dispatched it is."""
    from django_pulse.broker.memory import MemoryBroker

    broker = MemoryBroker()
    received: list[str] = []

    class Hub:
        def dispatch(self, topic: str, text: str) -> None:
            received.append(text)

        def discontinuity(self, topic: str, reason: str) -> None:
            pass

    broker.delivery = Hub()  # type: ignore[assignment]
    await broker.subscribe("m:kb:posts")
    assert broker.settled()
    import threading

    publisher = threading.Thread(target=broker.publish_message_sync, args=("m:kb:posts", head(1)))
    publisher.start()
    publisher.join()  # the loop does not run meanwhile: the frame waits for it
    assert not broker.settled() and received == []
    await asyncio.sleep(0.05)
    assert broker.settled() and len(received) == 1
    await broker.publish_message("m:kb:posts", head(2))  # on the loop: dispatched before it returns
    assert broker.settled() and len(received) == 2
    await broker.aclose()


@pytest.mark.django_db(transaction=True)
async def test_an_idle_subscription_keeps_nothing_of_its_subscribe_in_memory() -> None:
    """Subscribed with nothing on its way (in-memory broker): the connection's outbox is the topic's sink right
    after the reply, and no ReplaySink or catching_up map is left; live messages still arrive once, in order."""
    from django_pulse.server.consumer import PulseConsumer
    from tests.support.wsutil import connect

    await pulse.apublish("idle", "before", {"i": 0})
    client = await connect("ann")
    reply = await client.request("subscribe", channel="idle")
    assert reply["action"] == "ok" and reply["serial"] == 1, reply
    await asyncio.sleep(0.05)
    (conn,) = [c for c in get_runtime().connections if isinstance(c, PulseConsumer)]
    assert conn.catching_up is None
    assert get_runtime().hub.topics[conn.subscriptions["idle"]] == {conn.outbox}
    await pulse.apublish("idle", "after", {"i": 1})
    message = await client.recv()
    assert (message["name"], message["serial"]) == ("after", 2), message
    assert await client.nothing(0.1)
    await client.close()
