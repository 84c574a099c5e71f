"""Recovery against real daphne processes with the Python client: a client that dropped reconnects (to the same
process, or to another one sharing Redis) and receives what it missed, once, in order, then live."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import InvalidHandshake

from django_pulse.clients.websocket import Realtime
from tests.support.servers import LiveServer, live_pair, live_server


async def client_for(server: LiveServer, client_id: str = "tester", **kwargs: Any) -> Realtime:
    token = await asyncio.to_thread(server.token, client_id)
    return await Realtime.connect(token["endpoint"], token["token"], **kwargs)


async def publish_many(server: LiveServer, channel: str, count: int, start: int = 0) -> list[str]:
    return [await asyncio.to_thread(server.publish, channel, "e", {"i": i}) for i in range(start, start + count)]


async def drop(client: Realtime) -> None:
    """End the connection without a close frame, as a lost network does."""
    transport = client.ws.transport
    transport.abort()
    await client.wait_closed()


async def gets_missed_then_live(client: Realtime, missed: list[str], serials: list[int], server: LiveServer) -> None:
    """``client`` (recovered) receives exactly the ``missed`` messages with ``serials``, then a live one published
    through ``server``, and nothing else; then it is closed."""
    frames = [await client.next_event(5) for _ in missed]
    assert [f["id"] for f in frames] == missed
    assert [f["serial"] for f in frames] == serials
    live = await publish_many(server, "posts", 1, start=serials[-1])
    assert (await client.next_event(5))["id"] == live[0]
    with pytest.raises(TimeoutError):
        await client.next_event(0.3)
    await client.close()


async def test_reconnect_recovers_what_was_missed_in_memory_mode() -> None:
    with live_server() as server:
        alice = await client_for(server, "alice")
        await alice.subscribe("posts")
        await alice.subscribe("other")
        first = await publish_many(server, "posts", 3)
        assert [(await alice.next_event(5))["id"] for _ in range(3)] == first
        await drop(alice)
        missed = await publish_many(server, "posts", 5, start=3)
        again = await client_for(server, "alice", recover=alice)
        assert again.connected["recovered"] is True
        assert again.connection_id == alice.connection_id
        assert again.resumed == {"posts": True, "other": True}
        await gets_missed_then_live(again, missed, [4, 5, 6, 7, 8], server)


@pytest.mark.slow
@pytest.mark.redis
async def test_a_client_recovers_on_the_other_process(redis_url: str, redis_prefix: str) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (first, second):
        alice = await client_for(first, "alice")
        await alice.subscribe("posts")
        seen = await publish_many(first, "posts", 2)
        assert [(await alice.next_event(5))["id"] for _ in range(2)] == seen
        await drop(alice)
        # Published on both processes while alice is away.
        missed = await publish_many(first, "posts", 3, start=2) + await publish_many(second, "posts", 3, start=5)
        again = await client_for(second, "alice", recover=alice)
        assert again.resumed == {"posts": True}
        assert again.connection_id == alice.connection_id
        await gets_missed_then_live(again, missed, [3, 4, 5, 6, 7, 8], first)


@pytest.mark.slow
@pytest.mark.redis
async def test_outside_the_window_the_client_is_told_to_reload(redis_url: str, redis_prefix: str) -> None:
    # Trimmed by count only: with Redis, HISTORY_MIN_RETENTION would keep these 8 messages past HISTORY_SIZE.
    pulse = {"HISTORY_SIZE": 5, "HISTORY_MIN_RETENTION": 0}
    with live_server(redis_url=redis_url, redis_prefix=redis_prefix, pulse=pulse) as server:
        alice = await client_for(server, "alice")
        await alice.subscribe("posts")
        await publish_many(server, "posts", 1)
        await alice.next_event(5)
        await drop(alice)
        await publish_many(server, "posts", 8, start=1)
        again = await client_for(server, "alice", recover=alice)
        assert again.resumed == {"posts": False}
        with pytest.raises(TimeoutError):
            await again.next_event(0.3)  # nothing replayed: the application reloads instead
        await publish_many(server, "posts", 1, start=9)
        assert (await again.next_event(5))["serial"] == 10
        await again.close()


async def next_presence(client: Realtime, timeout: float = 5) -> dict[str, Any]:
    while True:
        frame = await client.next_event(timeout)
        if frame["action"] == "presence":
            return frame


@pytest.mark.slow
@pytest.mark.redis
async def test_presence_follows_a_connection_recovered_on_the_other_process(redis_url: str, redis_prefix: str) -> None:
    settings = {"PRESENCE_GRACE": 1.5}
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix, pulse=settings) as (first, second):
        watcher = await client_for(second, "watcher")
        await watcher.request("presence.subscribe", channel="room")
        alice = await client_for(first, "alice")
        await alice.request("presence.enter", channel="room", data={"name": "Alice"})
        assert (await next_presence(watcher))["event"] == "enter"
        await drop(alice)
        again = await client_for(second, "alice", recover=alice)
        assert again.connected["recovered"] is True
        with pytest.raises(TimeoutError):
            await next_presence(watcher, timeout=3)  # the first process's grace period passed: no leave
        members = (await watcher.request("presence.get", channel="room"))["members"]
        assert [(m["clientId"], m["connectionId"]) for m in members] == [("alice", alice.connection_id)]
        # The second process holds the member now: the recovered socket's clean close leaves it at once.
        await again.close()
        event = await next_presence(watcher)
        assert (event["event"], event["member"]["clientId"]) == ("leave", "alice")
        await watcher.close()


async def test_a_network_cut_is_recovered_through_a_proxy() -> None:
    """The connection dies in the network (a TCP reset between client and server), not by the client's hand."""
    from tests.support.tcpproxy import CuttableProxy

    with live_server(pulse={"PRESENCE_GRACE": 5}) as server, CuttableProxy(server.port) as proxy:
        token = await asyncio.to_thread(server.token, "alice")
        endpoint = f"ws://127.0.0.1:{proxy.port}/pulse/ws/"
        alice = await Realtime.connect(endpoint, token["token"])
        await alice.subscribe("posts")
        await alice.request("presence.enter", channel="posts", data={"name": "Alice"})
        watcher = await client_for(server, "watcher")
        await watcher.request("presence.subscribe", channel="posts")
        proxy.cut()
        assert await alice.wait_closed() == 1006
        missed = await publish_many(server, "posts", 20)
        with pytest.raises((OSError, InvalidHandshake)):
            await Realtime.connect(endpoint, token["token"], open_timeout=2)  # still cut
        proxy.restore()
        again = await Realtime.connect(endpoint, token["token"], recover=alice)
        assert again.resumed == {"posts": True}
        frames = [await again.next_event(5) for _ in range(20)]
        assert [f["id"] for f in frames] == missed
        members = (await watcher.request("presence.get", channel="posts"))["members"]
        assert [m["connectionId"] for m in members] == [alice.connection_id]
        with pytest.raises(TimeoutError):  # no leave, no enter
            await watcher.next_event(0.5)
        await again.close()
        await watcher.close()


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_flushed_while_away_means_a_new_epoch_resumed_false_then_the_new_epoch(
    redis_url: str, redis_prefix: str
) -> None:
    import redis

    with live_server(redis_url=redis_url, redis_prefix=redis_prefix) as server:
        alice = await client_for(server, "alice")
        reply = await alice.subscribe("posts")
        await publish_many(server, "posts", 3)
        for _ in range(3):
            await alice.next_event(5)
        await drop(alice)

        def flush() -> int:  # FLUSHDB, restricted to this test's keys (the Redis is shared)
            admin = redis.Redis.from_url(redis_url)
            try:
                keys = list(admin.scan_iter(f"{redis_prefix}:*"))
                return int(admin.delete(*keys)) if keys else 0
            finally:
                admin.close()

        assert await asyncio.to_thread(flush) > 0
        await publish_many(server, "posts", 2, start=3)
        again = await client_for(server, "alice", recover=alice)
        assert again.resumed == {"posts": False}
        assert again.positions["posts"][1] != reply["epoch"]  # a new epoch
        # The counter started again: the new epoch's messages cannot have reached the client, so they follow the
        # refused resume, once, in order.
        replayed = [await again.next_event(5) for _ in range(2)]
        assert [(f["serial"], f["data"]) for f in replayed] == [(1, {"i": 3}), (2, {"i": 4})]
        assert again.positions["posts"][0] == 2
        with pytest.raises(TimeoutError):
            await again.next_event(0.3)
        await again.close()


@pytest.mark.slow
@pytest.mark.redis
async def test_the_same_id_published_on_two_processes_three_times_is_delivered_once(
    redis_url: str, redis_prefix: str
) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (first, second):
        alice = await client_for(second, "alice")
        await alice.subscribe("posts")
        for server in (first, second, first):  # a publisher retrying, its retries landing anywhere
            assert await asyncio.to_thread(server.publish, "posts", "e", {"n": 1}, id="retry-me") == "retry-me"
        await asyncio.to_thread(first.publish, "posts", "e", "after")
        frames = [await alice.next_event(5) for _ in range(2)]
        assert [(f["id"], f["serial"]) for f in frames] == [("retry-me", 1), (frames[1]["id"], 2)]
        with pytest.raises(TimeoutError):
            await alice.next_event(0.3)
        assert [m["id"] for m in await alice.history("posts")] == ["retry-me", frames[1]["id"]]
        await alice.close()
