"""State that ages out (docs/security.md): an idle channel's state (serial counter and epoch, history,
presence serial and counts) is forgotten ``CHANNEL_TTL`` seconds after its last activity, in Redis and in the
in-memory broker, so a site with one channel per order does not keep a key per order for ever. A resume across
the expiry gets ``resumed: false`` and a new epoch: an old position is never taken for one of the new channel.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from django_pulse import pulse
from django_pulse.broker import message_topic
from django_pulse.broker.redis import RedisBroker
from django_pulse.server.runtime import get_runtime
from tests.support.wsutil import connect, next_presence, seen_then_gone

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

# Short, so that the tests wait little for state to age out; every wait here is one-sided (longer only helps).
TTL = 0.5
# Where something must keep the state alive within the TTL (a publish, a heartbeat), so that a loaded machine's
# delay of up to 0.6 s (not 0.3) is not taken for an expiry.
KEPT_TTL = 1.0


@pytest.fixture
def backend(backend: str, settings: Any) -> str:
    """Both brokers (tests/server/conftest.py), with the short TTL."""
    settings.PULSE = {**settings.PULSE, "CHANNEL_TTL": TTL}
    return backend


def admin() -> redis.Redis:
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    return redis.Redis.from_url(broker.url)


async def until_gone(keys: list[str], timeout: float = 10.0) -> float:
    """Seconds until none of ``keys`` exists in Redis (Redis expires them; there is no event to await)."""
    client = admin()
    started = time.monotonic()
    try:
        while client.exists(*keys):
            assert time.monotonic() - started < timeout, f"still there: {keys}"
            await asyncio.sleep(0.05)
    finally:
        client.close()
    return time.monotonic() - started


async def idle_past_the_ttl(backend: str, channel: str) -> None:
    if backend == "redis":
        broker = get_runtime().broker
        assert isinstance(broker, RedisBroker)
        topic = message_topic("default", channel)
        # The history stream has its own expiry (HISTORY_TTL); a counter created anew drops what is left of it.
        await until_gone([broker.serial_key(topic)])
    else:
        await asyncio.sleep(TTL + 0.2)  # the in-memory broker forgets lazily, at its next use after the TTL


async def test_a_resume_across_the_expiry_of_an_idle_channel_gets_a_new_epoch(backend: str) -> None:
    serial, epoch = await seen_then_gone("order-17")
    await idle_past_the_ttl(backend, "order-17")
    bob = await connect("bob")
    reply = await bob.request("subscribe", channel="order-17", resume={"serial": serial, "epoch": epoch})
    assert reply["action"] == "ok", reply
    assert reply["resumed"] is False and reply["epoch"] != epoch and reply["serial"] == 0, reply
    await pulse.apublish("order-17", "status", {"i": "new"})
    frame = await bob.recv(timeout=5)
    assert (frame["serial"], frame["data"]) == (1, {"i": "new"})
    await bob.close()


async def test_activity_keeps_a_channel_alive(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "CHANNEL_TTL": KEPT_TTL}
    serial, epoch = await seen_then_gone("order-17")
    for i in range(3):  # 1.2 s of activity (past the TTL), each publish 0.4 s after the one before
        await asyncio.sleep(KEPT_TTL / 2.5)
        await pulse.apublish("order-17", "status", {"more": i})
    bob = await connect("bob")
    reply = await bob.request("subscribe", channel="order-17", resume={"serial": serial, "epoch": epoch})
    assert reply["resumed"] is True and reply["epoch"] == epoch, reply
    await bob.close()


async def test_a_channel_with_a_subscriber_here_is_kept_by_the_memory_broker(settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "CHANNEL_TTL": TTL}
    alice = await connect("alice")
    first = await alice.request("subscribe", channel="lobby")
    await pulse.apublish("lobby", "hello", 1)
    assert (await alice.recv(timeout=5))["serial"] == 1
    await asyncio.sleep(TTL + 0.2)
    await pulse.apublish("elsewhere", "x", 0)  # the broker forgets idle topics at its next use
    await pulse.apublish("lobby", "hello", 2)
    frame = await alice.recv(timeout=5)
    assert (frame["action"], frame["serial"]) == ("message", 2), frame  # no new epoch under a live subscriber
    assert (await get_runtime().broker.history(message_topic("default", "lobby"))).epoch == first["epoch"]
    await alice.close()


@pytest.mark.redis
async def test_presence_keys_live_while_members_are_present_then_age_out(
    pulse_redis: str, settings: Any, runtime_stopped: None
) -> None:
    settings.PULSE = {**settings.PULSE, "CHANNEL_TTL": TTL}
    presence = get_runtime().presence
    names = [presence.channel_key("default", "room", kind) for kind in ("pres", "pserial", "pclients")]  # type: ignore[attr-defined]
    client = admin()
    try:
        alice = await connect("alice")
        assert (await alice.request("presence.enter", channel="room", data={"n": 1}))["action"] == "ok"
        assert [client.pttl(n) for n in names] == [-1, -1, -1]  # no expiry while a member is present
        await asyncio.sleep(TTL + 0.3)
        assert [m["clientId"] for m in (await alice.request("presence.get", channel="room"))["members"]] == ["alice"]
        assert (await alice.request("presence.leave", channel="room"))["action"] == "ok"
        assert not client.exists(names[0], names[2])  # empty hashes are gone at once
        assert 0 < client.pttl(names[1]) <= TTL * 1000  # the serial ages out
        await until_gone(names)
        assert client.keys(f"{presence.prefix}:{{default:room}}:*") == []  # type: ignore[attr-defined]
        await alice.close()
    finally:
        client.close()


@pytest.mark.redis
async def test_a_presence_subscriber_keeps_the_serial_its_snapshot_is_at(
    pulse_redis: str, settings: Any, runtime_stopped: None
) -> None:
    # Were the serial of an empty channel to expire under a subscriber (snapshot at serial 2), the next enter
    # would be serial 1 and the subscriber would drop it. Its process keeps the serial while it subscribes.
    settings.PULSE = {**settings.PULSE, "CHANNEL_TTL": KEPT_TTL, "PROCESS_HEARTBEAT": 0.1, "PROCESS_TIMEOUT": 1.0}
    alice = await connect("alice")
    await alice.request("presence.enter", channel="room")
    await alice.request("presence.leave", channel="room")
    watcher = await connect("watcher")
    assert (await watcher.request("presence.subscribe", channel="room"))["members"] == []  # at serial 2
    await asyncio.sleep(2 * KEPT_TTL)  # unkept, the serial would have expired a whole TTL ago
    await alice.request("presence.enter", channel="room")
    event = await next_presence(watcher, timeout=5)
    assert (event["event"], event["serial"], event["member"]["clientId"]) == ("enter", 3, "alice")
    await alice.close()
    await watcher.close()
