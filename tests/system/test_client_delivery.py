"""Real servers, real sockets: the Python client against daphne (and uvicorn, granian), one process or two
daphne processes sharing Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from django_pulse.clients.websocket import PulseClientError, Realtime
from tests.support.servers import LiveServer, live_pair, live_server


async def publish(server: LiveServer, channel: str, event: str, data: Any = None) -> str:
    return await asyncio.to_thread(server.publish, channel, event, data)


async def client_for(server: LiveServer, client_id: str = "tester", **kwargs: Any) -> Realtime:
    token = await asyncio.to_thread(server.token, client_id, **kwargs)
    return await Realtime.connect(token["endpoint"], token["token"])


# daphne's case is the live smoke test of every cell of the CI matrix (noxfile.py): a real server, a message
# end to end.
@pytest.mark.parametrize("server_name", [pytest.param("daphne", marks=pytest.mark.smoke), "uvicorn", "granian"])
async def test_subscribe_and_receive_what_a_view_publishes(server_name: str) -> None:
    with live_server(server=server_name) as server:
        alice = await client_for(server, "alice")
        bob = await client_for(server, "bob")
        assert alice.client_id == "alice"
        assert (await alice.subscribe("posts"))["serial"] == 0
        await bob.subscribe("posts")
        ids = [await publish(server, "posts", "new_post", {"i": i}) for i in range(5)]
        reply = await bob.publish("posts", "from_bob", {"hello": True})
        for client in (alice, bob):
            frames = [await client.next_event(5) for _ in range(6)]
            assert [f["serial"] for f in frames] == [1, 2, 3, 4, 5, 6]
            assert [f["id"] for f in frames[:5]] == ids
            assert frames[5]["clientId"] == "bob" and frames[5]["id"] == reply["id"]
        with pytest.raises(PulseClientError) as info:
            await alice.subscribe("not a channel")
        assert info.value.code == "invalid_channel"
        await alice.close()
        await bob.close()
        assert alice.close_code == 1000


async def test_bad_token_is_refused_with_its_code() -> None:
    with live_server() as server:
        token = await asyncio.to_thread(server.token, "alice")
        with pytest.raises(PulseClientError) as info:
            await Realtime.connect(token["endpoint"], token["token"][:-4] + "AAAA")
        assert info.value.code == "token_invalid"


async def test_slow_consumer_is_closed_and_others_keep_receiving() -> None:
    with live_server(pulse={"OUTBOUND_BUFFER_LIMIT": 256 * 1024}, extra_env={"PULSE_LIVE_LOGLEVEL": "INFO"}) as server:
        fast = await client_for(server, "fast")
        token = await asyncio.to_thread(server.token, "slow")
        import websockets

        # A client that stops reading: websockets stops reading the socket once max_queue frames are queued.
        slow = await websockets.connect(token["endpoint"], max_queue=1, max_size=None, ping_interval=None)
        await slow.send(json.dumps({"action": "auth", "token": token["token"]}))
        assert json.loads(await slow.recv())["action"] == "connected"
        await slow.send(json.dumps({"action": "subscribe", "channel": "firehose", "ref": 1}))
        assert json.loads(await slow.recv())["action"] == "ok"
        await fast.subscribe("firehose")
        blob = "x" * 60000
        count = 0
        received = 0
        while count < 400:
            await publish(server, "firehose", "blob", blob)
            count += 1
            while True:  # the fast client keeps up
                try:
                    await fast.next_event(0.001 if received >= count else 5)
                    received += 1
                except TimeoutError:
                    break
            if count % 10 == 0 and "Closing a slow consumer" in server.log():
                break
        assert "Closing a slow consumer" in server.log()
        # The server closed it with 4010 after the frames already in its buffer; a peer that does not read
        # them in time (daphne waits ~1 s for the close handshake) sees the TCP connection end instead.
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(slow.recv(), 20)
        assert info.value.rcvd is None or info.value.rcvd.code == 4010, info.value
        while received < count:
            await fast.next_event(5)
            received += 1
        await publish(server, "firehose", "after", 1)
        assert (await fast.next_event(5))["name"] == "after"
        await fast.close()


@pytest.mark.slow
@pytest.mark.redis
async def test_two_daphne_processes_share_redis(redis_url: str, redis_prefix: str) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (first, second):
        on_first = await client_for(first, "a")
        on_second = await client_for(second, "b")
        await on_first.subscribe("posts")
        await on_second.subscribe("posts")
        sent = []
        for i in range(10):
            server = first if i % 2 == 0 else second
            sent.append(await publish(server, "posts", "new_post", {"i": i}))
        reply = await on_second.publish("posts", "from_client", None)
        sent.append(reply["id"])
        for client in (on_first, on_second):
            frames = [await client.next_event(5) for _ in range(11)]
            assert [f["id"] for f in frames] == sent
            assert [f["serial"] for f in frames] == list(range(1, 12))
        await on_first.close()
        await on_second.close()


@pytest.mark.slow
@pytest.mark.redis
async def test_a_client_resumes_by_itself_when_its_server_loses_redis(redis_url: str, redis_prefix: str) -> None:
    """The server's ``discontinuity`` notice after its Redis subscriber connection broke: the client resumes the
    channel from its last serial (nothing was missed here) and reports ``resumed``, then carries on live."""
    import redis

    with live_server(redis_url=redis_url, redis_prefix=redis_prefix) as server:
        client = await client_for(server, "a")
        await client.subscribe("posts")
        await publish(server, "posts", "before")
        assert (await client.next_event(5))["serial"] == 1

        def kill() -> int:
            admin = redis.Redis.from_url(redis_url)
            try:
                mine = [
                    c["id"]
                    for c in admin.client_list(_type="pubsub")
                    if c.get("name", "").startswith(f"{redis_prefix}:sub:")
                ]
                for client_id in mine:
                    admin.client_kill_filter(_id=client_id)
                return len(mine)
            finally:
                admin.close()

        assert await asyncio.to_thread(kill) == 1
        frame = await client.next_event(10)
        assert frame == {"action": "resumed", "channel": "posts", "serial": 1, "reason": "broker_unavailable"}
        await publish(server, "posts", "after")
        frame = await client.next_event(5)
        assert (frame["name"], frame["serial"]) == ("after", 2)
        await client.close()
