"""Idempotent publishing: a message id is published once, recorded by the publish itself (memory and Redis).

The bug these tests pin down (found by the rolling-restart test): the id used to be claimed by a separate
command before the publish and released when the publish raised, so a publish whose reply was lost AFTER Redis
had run the script released its claim, and the publisher's retry with the same id was delivered a second time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async

from django_pulse import pulse
from django_pulse.broker import Broker, message_topic
from django_pulse.broker.memory import MemoryBroker
from django_pulse.broker.redis import RedisBroker
from django_pulse.exceptions import Unavailable
from django_pulse.protocol import ErrorCode, message_head
from django_pulse.server.runtime import get_runtime
from tests.support.servers import free_port
from tests.support.tcpproxy import CuttableProxy
from tests.support.wsutil import connect

TOPIC = message_topic("default", "posts")


def fresh_id() -> str:
    return f"m-{secrets.token_hex(6)}"


def head(n: int, message_id: str) -> str:
    return message_head(channel="posts", name="e", data_json=json.dumps({"n": n}), id=message_id, timestamp=1)


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest, settings: Any) -> Any:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.PULSE = {"REDIS_URL": url, "REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    else:
        settings.PULSE = {}
    instance = get_runtime().broker
    assert isinstance(instance, RedisBroker if request.param == "redis" else MemoryBroker)
    yield instance
    await instance.aclose()


async def test_a_repeated_id_returns_the_first_serial_and_publishes_nothing(broker: Broker) -> None:
    mid = fresh_id()
    assert await broker.publish_once(TOPIC, head(1, mid), mid, 60_000) == (1, False)
    assert await broker.publish_once(TOPIC, head(2, mid), mid, 60_000) == (1, True)
    assert await asyncio.to_thread(broker.publish_once_sync, TOPIC, head(3, mid), mid, 60_000) == (1, True)
    other = fresh_id()
    assert await broker.publish_once(TOPIC, head(4, other), other, 60_000) == (2, False)  # no serial was used
    read = await broker.history(TOPIC, limit=10)
    assert [json.loads(frame)["data"] for _, frame in read.frames] == [{"n": 1}, {"n": 4}]


async def test_the_record_is_per_channel(broker: Broker) -> None:
    mid = fresh_id()
    assert await broker.publish_once(TOPIC, head(1, mid), mid, 60_000) == (1, False)
    assert await broker.publish_once(message_topic("default", "other"), head(1, mid), mid, 60_000) == (1, False)
    assert await broker.publish_once(message_topic("shop", "posts"), head(1, mid), mid, 60_000) == (1, False)


async def test_the_record_expires_after_the_window(broker: Broker) -> None:
    mid = fresh_id()
    assert await broker.publish_once(TOPIC, head(1, mid), mid, 300) == (1, False)
    assert await broker.publish_once(TOPIC, head(2, mid), mid, 300) == (1, True)
    await asyncio.sleep(0.6)
    assert await broker.publish_once(TOPIC, head(3, mid), mid, 300) == (2, False)


@pytest.mark.redis
@pytest.mark.django_db
def test_the_redis_record_is_in_the_channel_slot_with_the_window(
    pulse_redis: str, redis_prefix: str, settings: Any
) -> None:
    settings.PULSE = {**settings.PULSE, "IDEMPOTENCY_WINDOW": 30}
    mid = fresh_id()
    assert pulse.publish("posts", "e", {}, id=mid) == mid
    client = redis.Redis.from_url(pulse_redis)
    try:
        key = f"{redis_prefix}:{{default:posts}}:idem:{mid}"
        assert 0 < client.pttl(key) <= 30_000
        assert client.get(key) == b"1"  # the serial of the message published under that id
    finally:
        client.close()


def test_redis_down_is_unavailable_not_a_duplicate(settings: Any) -> None:
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    mid = fresh_id()
    with pytest.raises(Unavailable) as info:
        get_runtime().broker.publish_once_sync(TOPIC, head(1, mid), mid, 60_000)
    assert info.value.code is ErrorCode.UNAVAILABLE


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["sync", "async"])
async def test_a_retry_after_a_lost_reply_is_delivered_once(
    path: str, redis_url: str, redis_prefix: str, settings: Any
) -> None:
    """Redis runs the publish script; its reply never reaches the publisher, which retries with the same id.

    A proxy between the server process and Redis forwards the script and resets the connection when the reply
    comes back. Before the fix, the failed call released the id's claim and the retry was delivered again.
    """
    publish = pulse.apublish if path == "async" else sync_to_async(pulse.publish)
    host_port, _, db = redis_url.removeprefix("redis://").partition("/")
    with CuttableProxy(int(host_port.rpartition(":")[2])) as proxy:
        settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/{db}", "REDIS_PREFIX": redis_prefix}
        alice = await connect()
        await alice.request("subscribe", channel="posts")
        # A first publish loads the script: the reply to lose must be the one of a script that ran.
        await publish("posts", "e", "before", id=fresh_id())
        assert (await alice.recv())["data"] == "before"

        mid = fresh_id()
        proxy.lose_next_reply(b"EVALSHA")
        with pytest.raises(Unavailable):
            await publish("posts", "e", {"try": 1}, id=mid)
        assert proxy.lost == 1
        first = await alice.recv(timeout=5)  # it was published: only the reply was lost
        assert (first["id"], first["data"]) == (mid, {"try": 1})

        assert await publish("posts", "e", {"try": 2}, id=mid) == mid  # the publisher's retry
        await publish("posts", "e", "after")
        assert (await alice.recv(timeout=5))["data"] == "after"  # not the retry: it was not delivered
        assert await alice.nothing()
        assert [m["data"] for m in await pulse.ahistory("posts")] == ["before", {"try": 1}, "after"]
        await alice.close()
        await get_runtime().broker.aclose()
