"""The presence actions over the WebSocket (in-process consumer, memory and Redis backends)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from django_pulse import pulse
from tests.support.wsutil import Client, connect, next_presence

pytestmark = pytest.mark.django_db(transaction=True)


async def test_enter_get_update_leave(backend: str) -> None:
    alice = await connect("alice")
    reply = await alice.request("presence.enter", channel="posts", data={"name": "Alice"})
    assert reply["action"] == "ok", reply
    member = reply["member"]
    assert member["clientId"] == "alice" and member["connectionId"] == alice.connected["connectionId"]
    assert member["data"] == {"name": "Alice"} and abs(member["timestamp"] - time.time() * 1000) < 10_000
    reply = await alice.request("presence.get", channel="posts")
    assert reply.get("channel") == "posts" and reply["members"] == [member], reply
    reply = await alice.request("presence.update", channel="posts", data={"name": "Alice B."})
    assert reply["member"]["data"] == {"name": "Alice B."} and reply["member"]["timestamp"] == member["timestamp"]
    assert (await alice.request("presence.leave", channel="posts")) == {"action": "ok", "ref": 4, "channel": "posts"}
    assert (await alice.request("presence.get", channel="posts"))["members"] == []
    await alice.close()


async def test_errors(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_MAX_DATA": 50, "PRESENCE_MAX_MEMBERS": 1}
    alice = await connect("alice")
    reply = await alice.request("presence.update", channel="posts", data=1)
    assert (reply["action"], reply["code"]) == ("error", "not_present")
    assert (await alice.request("presence.leave", channel="posts"))["code"] == "not_present"
    reply = await alice.request("presence.enter", channel="posts", data="x" * 60)
    assert reply["code"] == "presence_data_too_large" and "50" in reply["message"]
    assert (await alice.request("presence.enter", channel="bad channel"))["code"] == "invalid_channel"
    assert (await alice.request("presence.enter", channel="posts"))["action"] == "ok"
    bob = await connect("bob")
    assert (await bob.request("presence.enter", channel="posts"))["code"] == "presence_full"
    reader = await connect("reader", capabilities={"posts": ["subscribe"]})
    assert (await reader.request("presence.enter", channel="posts"))["code"] == "forbidden"
    assert (await reader.request("presence.get", channel="posts"))["action"] == "ok"
    assert (await reader.request("presence.subscribe", channel="posts"))["action"] == "ok"
    assert (await reader.request("presence.get", channel="other"))["code"] == "forbidden"
    for client in (alice, bob, reader):
        await client.close()


async def test_subscribe_gets_the_snapshot_then_events(backend: str) -> None:
    alice = await connect("alice")
    await alice.request("presence.enter", channel="posts", data={"name": "Alice"})
    bob = await connect("bob")
    reply = await bob.request("presence.subscribe", channel="posts")
    assert [m["clientId"] for m in reply["members"]] == ["alice"]
    carol = await connect("carol")
    await carol.request("presence.enter", channel="posts", data={"name": "Carol"})
    event = await next_presence(bob)
    assert event["event"] == "enter" and event["member"]["data"] == {"name": "Carol"} and event["channel"] == "posts"
    await alice.request("presence.update", channel="posts", data={"name": "Al"})
    event = await next_presence(bob)
    assert (event["event"], event["member"]["data"]) == ("update", {"name": "Al"})
    await alice.request("presence.leave", channel="posts")
    event = await next_presence(bob)
    assert (event["event"], event["member"]["clientId"], event["member"]["data"]) == ("leave", "alice", {"name": "Al"})
    assert (await bob.request("presence.unsubscribe", channel="posts"))["action"] == "ok"
    await carol.request("presence.leave", channel="posts")
    assert await bob.nothing(0.3)
    for client in (alice, bob, carol):
        await client.close()


async def test_no_gap_and_no_duplicate_while_members_storm_in(backend: str) -> None:
    """A subscriber arriving in the middle of a burst of enters sees every member exactly once."""
    clients = [await connect(f"user{i}") for i in range(30)]
    watcher = await connect("watcher")

    async def enter(client: Client, i: int) -> None:
        await client.send({"action": "presence.enter", "channel": "busy", "data": {"i": i}})

    burst = [asyncio.create_task(enter(c, i)) for i, c in enumerate(clients)]
    await asyncio.sleep(0)
    reply = await watcher.request("presence.subscribe", channel="busy")
    await asyncio.gather(*burst)
    seen = [m["connectionId"] for m in reply["members"]]
    deadline = time.monotonic() + 10
    while len(seen) < 30 and time.monotonic() < deadline:
        event = await next_presence(watcher)
        assert event["event"] == "enter"
        seen.append(event["member"]["connectionId"])
    assert sorted(seen) == sorted(c.connected["connectionId"] for c in clients)
    assert await watcher.nothing(0.3)
    for client in [*clients, watcher]:
        await client.close()


async def test_clean_close_leaves_at_once_abrupt_drop_after_grace(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_GRACE": 1.0}
    watcher = await connect("watcher")
    await watcher.request("presence.subscribe", channel="room")
    alice, bob = await connect("alice"), await connect("bob")
    await alice.request("presence.enter", channel="room")
    await bob.request("presence.enter", channel="room")
    for _ in range(2):
        await next_presence(watcher)
    started = time.monotonic()
    await alice.comm.disconnect(code=1000)
    event = await next_presence(watcher)
    assert (event["event"], event["member"]["clientId"]) == ("leave", "alice")
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    await bob.comm.disconnect(code=1006)  # no close frame: the socket just went away
    assert await watcher.nothing(0.6)  # kept during the grace period
    assert [m["clientId"] for m in (await pulse.apresence("room"))["members"]] == ["bob"]
    event = await next_presence(watcher, timeout=5)
    assert (event["event"], event["member"]["clientId"]) == ("leave", "bob")
    assert 0.9 <= time.monotonic() - started < 4
    assert (await pulse.apresence("room"))["count"] == 0
    await watcher.close()


async def test_250_members_then_a_late_subscriber_gets_exactly_250(backend: str) -> None:
    clients = [await connect(f"u{i % 50}") for i in range(250)]
    await asyncio.gather(*(c.request("presence.enter", channel="crowd", data={"i": i}) for i, c in enumerate(clients)))
    late = await connect("late")
    reply = await late.request("presence.subscribe", channel="crowd")
    assert len(reply["members"]) == 250
    assert len({m["connectionId"] for m in reply["members"]}) == 250
    result = await pulse.apresence("crowd")
    assert (result["count"], result["clientCount"]) == (250, 50)
    for client in [*clients, late]:
        await client.close()


async def test_sdk_presence_and_channels(backend: str) -> None:
    alice = await connect("alice")
    await alice.request("subscribe", channel="posts")
    await alice.request("presence.enter", channel="posts", data={"name": "Alice"})
    await alice.request("presence.enter", channel="lobby")
    result = await pulse.apresence("posts")
    assert result["channel"] == "posts" and result["count"] == 1 and result["clientCount"] == 1
    assert result["members"][0]["clientId"] == "alice" and result["members"][0]["data"] == {"name": "Alice"}
    if backend == "redis":  # subscriber counts travel with the heartbeat
        from django_pulse.server.runtime import get_runtime

        await get_runtime().liveness.beat()  # type: ignore[attr-defined]
    assert await pulse.achannels() == [
        {"name": "lobby", "subscribers": 0, "presence": 1},
        {"name": "posts", "subscribers": 1, "presence": 1},
    ]
    await alice.close()
    assert (await pulse.apresence("posts"))["count"] == 0


def test_sync_sdk(broker_kind: str) -> None:
    assert pulse.presence("posts") == {"channel": "posts", "count": 0, "clientCount": 0, "members": []}
    assert pulse.channels() == []
    from django_pulse.exceptions import AppError, ProtocolViolation

    with pytest.raises(ProtocolViolation):
        pulse.presence("no spaces")
    with pytest.raises(AppError):
        pulse.presence("posts", kb_id="nope")


async def test_authorize_hook_decides_and_sets_member_data(runtime_stopped: None) -> None:
    from django_pulse.authorization import unregister

    @pulse.authorize("team.{team}")
    def team(user: Any, team: str) -> Any:
        return {"role": "captain"} if team == "red" else False

    try:
        alice = await connect("alice")
        reply = await alice.request("presence.enter", channel="team.red", data={"role": "forged"})
        assert reply["member"]["data"] == {"role": "captain"}
        reply = await alice.request("presence.update", channel="team.red", data={"role": "forged"})
        assert reply["member"]["data"] == {"role": "captain"}
        assert (await alice.request("presence.enter", channel="team.blue"))["code"] == "forbidden"
        assert (await alice.request("presence.subscribe", channel="team.blue"))["code"] == "forbidden"
        assert (await alice.request("presence.leave", channel="team.red"))["action"] == "ok"
        await alice.close()
    finally:
        unregister("team.{team}")


@pytest.mark.redis
async def test_broker_outage_tells_presence_subscribers(pulse_redis: str, runtime_stopped: None) -> None:
    """The pub/sub connection drops: presence subscribers get a discontinuity, then events flow again and a
    fresh presence.subscribe gives the true set."""
    from django_pulse.server.runtime import get_runtime
    from tests.broker.test_broker import kill_subscriber

    watcher = await connect("watcher")
    await watcher.request("presence.subscribe", channel="room")
    alice = await connect("alice")
    await alice.request("presence.enter", channel="room")
    assert (await next_presence(watcher))["event"] == "enter"
    await asyncio.to_thread(kill_subscriber, pulse_redis, get_runtime().broker.client_name)  # type: ignore[attr-defined]
    frame = await watcher.recv(10)
    assert frame == {"action": "discontinuity", "channel": "room", "reason": "broker_unavailable"}
    bob = await connect("bob")
    await bob.request("presence.enter", channel="room")
    event = await next_presence(watcher)
    assert (event["event"], event["member"]["clientId"]) == ("enter", "bob")
    reply = await watcher.request("presence.subscribe", channel="room")
    assert sorted(m["clientId"] for m in reply["members"]) == ["alice", "bob"]
    for client in (watcher, alice, bob):
        await client.close()


async def test_heartbeat_timeout_keeps_members_for_the_grace_period(settings: Any, runtime_stopped: None) -> None:
    settings.PULSE = {**settings.PULSE, "HEARTBEAT_INTERVAL": 0.2, "HEARTBEAT_GRACE": 0.2, "PRESENCE_GRACE": 1.0}
    alice = await connect("alice")  # never answers pings
    await alice.request("presence.enter", channel="room")
    assert await alice.closed(timeout=3) == 4011
    closed_at = time.monotonic()
    await alice.comm.disconnect(code=1006)
    assert (await pulse.apresence("room"))["count"] == 1  # kept: the client may come back
    deadline = closed_at + 5
    while (await pulse.apresence("room"))["count"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await pulse.apresence("room"))["count"] == 0
    assert time.monotonic() - closed_at >= 0.9


async def test_too_many_presence_subscriptions(settings: Any, runtime_stopped: None) -> None:
    settings.PULSE = {**settings.PULSE, "MAX_SUBSCRIPTIONS": 1}
    alice = await connect("alice")
    assert (await alice.request("presence.subscribe", channel="a"))["action"] == "ok"
    assert (await alice.request("presence.subscribe", channel="a"))["action"] == "ok"  # idempotent
    assert (await alice.request("presence.subscribe", channel="b"))["code"] == "too_many_subscriptions"
    await alice.request("presence.unsubscribe", channel="a")
    assert (await alice.request("presence.subscribe", channel="b"))["action"] == "ok"
    await alice.close()
