"""Recovery over the WebSocket (memory|Redis broker, consumer in-process): resume replays the missed messages
exactly once and joins live delivery without gap or duplicate; outside the window or in another epoch the
reply says resumed false; rewind and the history action."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from django_pulse import pulse
from django_pulse.broker import message_topic
from django_pulse.broker.redis import RedisBroker
from django_pulse.server.runtime import get_runtime
from tests.support.wsutil import Client, connect, messages, next_presence, seen_then_gone

pytestmark = pytest.mark.django_db(transaction=True)


async def test_resume_replays_the_gap_exactly_once_then_live(backend: str) -> None:
    serial, epoch = await seen_then_gone()
    missed = [await pulse.apublish("posts", "e", {"i": i}) for i in range(3, 8)]
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume={"serial": serial, "epoch": epoch})
    assert reply == {
        "action": "ok",
        "ref": reply["ref"],
        "channel": "posts",
        "serial": 3,
        "epoch": epoch,
        "resumed": True,
    }
    replayed = await messages(alice, 5)
    assert [f["id"] for f in replayed] == missed
    assert [f["serial"] for f in replayed] == [4, 5, 6, 7, 8]
    await pulse.apublish("posts", "e", "live")
    live = await messages(alice, 1)
    assert (live[0]["serial"], live[0]["data"]) == (9, "live")
    assert await alice.nothing()
    await alice.close()


async def test_resume_seam_has_no_gap_and_no_duplicate_while_publishing(backend: str, settings: Any) -> None:
    """Messages keep being published (from the loop and from a thread) while subscriptions, history reads and
    replays happen."""
    settings.PULSE = {**settings.PULSE, "HISTORY_SIZE": 1000}
    serial, epoch = await seen_then_gone(count=1)
    stop = asyncio.Event()

    async def publisher() -> int:
        sent = 0
        while not stop.is_set():
            if sent % 2:
                await pulse.apublish("posts", "e", sent)
            else:
                await asyncio.to_thread(pulse.publish, "posts", "e", sent)
            sent += 1
            await asyncio.sleep(0.001)
        return sent

    task = asyncio.get_running_loop().create_task(publisher())
    clients = []
    try:
        for _ in range(5):  # several resumes land at different points of the stream
            await asyncio.sleep(0.02)
            client = await connect("alice")
            reply = await client.request("subscribe", channel="posts", resume={"serial": serial, "epoch": epoch})
            assert reply["resumed"] is True and reply["serial"] == serial
            clients.append(client)
    finally:
        stop.set()
        sent = await task
    last = 1 + sent
    for client in clients:
        got = [f["serial"] for f in await messages(client, last - serial)]
        assert got == list(range(serial + 1, last + 1))
    assert all(await asyncio.gather(*(client.nothing() for client in clients)))  # one wait for all of them
    for client in clients:
        await client.close()


async def test_resume_outside_the_window_reports_resumed_false(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "HISTORY_SIZE": 3, "HISTORY_MIN_RETENTION": 0}
    serial, epoch = await seen_then_gone()
    for i in range(5):  # 5 missed, 3 retained
        await pulse.apublish("posts", "e", i)
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume={"serial": serial, "epoch": epoch})
    assert (reply["resumed"], reply["serial"], reply["epoch"]) == (False, 8, epoch)
    assert await alice.nothing()  # nothing replayed: the client reloads its state
    await pulse.apublish("posts", "e", "live")
    assert [f["serial"] for f in await messages(alice, 1)] == [9]
    await alice.close()


async def test_redis_keeps_the_retention_window_past_history_size(pulse_redis: Any, settings: Any) -> None:
    """With Redis, messages younger than HISTORY_MIN_RETENTION stay past HISTORY_SIZE (a failover's backlog
    stays resumable); once older, the channel's history comes back to HISTORY_SIZE."""
    settings.PULSE = {**settings.PULSE, "HISTORY_SIZE": 3, "HISTORY_MIN_RETENTION": 1.0}
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    serial, epoch = await seen_then_gone()
    missed = [await pulse.apublish("posts", "e", i) for i in range(20)]  # 20 missed, more than HISTORY_SIZE
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume={"serial": serial, "epoch": epoch})
    assert (reply["resumed"], reply["serial"]) == (True, serial)
    assert [f["id"] for f in await messages(alice, 20)] == missed
    await alice.close()
    await asyncio.sleep(1.1)  # the window has passed: each publish trims the old entries, 8 at a time
    for i in range(3):
        await pulse.apublish("posts", "e", i)
    store = redis.Redis.from_url(broker.url)
    try:
        assert store.xlen(broker.history_key(message_topic("default", "posts"))) == 3
    finally:
        store.close()
    await broker.aclose()


async def test_resume_from_another_epoch_reports_resumed_false_then_all_of_the_channels_epoch(backend: str) -> None:
    """The client's epoch is not the channel's, which began afresh (no failover's fork): none of the channel's
    messages can have reached it, so they follow the refusal, once, in order."""
    serial, _ = await seen_then_gone()
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume={"serial": serial, "epoch": "gone"})
    assert (reply["resumed"], reply["serial"]) == (False, 0)
    assert [(f["serial"], f["data"]) for f in await messages(alice, 3)] == [(1, {"i": 0}), (2, {"i": 1}), (3, {"i": 2})]
    assert await alice.nothing()
    await alice.close()


@pytest.mark.redis
async def test_resume_after_redis_lost_the_counter_reports_resumed_false(pulse_redis: str) -> None:
    serial, epoch = await seen_then_gone()
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    admin = redis.Redis.from_url(pulse_redis)
    try:
        admin.delete(broker.serial_key(message_topic("default", "posts")))  # a flush, for this channel
    finally:
        admin.close()
    await pulse.apublish("posts", "e", "after the flush")
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume={"serial": serial, "epoch": epoch})
    assert reply["resumed"] is False and reply["epoch"] != epoch and reply["serial"] == 0
    # What was published since the counter started again cannot have reached the client: it follows, once.
    assert [(f["serial"], f["data"]) for f in await messages(alice, 1)] == [(1, "after the flush")]
    assert await alice.nothing()
    await alice.close()
    await broker.aclose()


@pytest.mark.redis
async def test_a_live_subscriber_is_told_when_the_counter_is_lost(pulse_redis: str) -> None:
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    alice = await connect("alice")
    await alice.request("subscribe", channel="posts")
    await pulse.apublish("posts", "e", 1)
    await messages(alice, 1)
    admin = redis.Redis.from_url(pulse_redis)
    try:
        admin.delete(broker.serial_key(message_topic("default", "posts")))
    finally:
        admin.close()
    await pulse.apublish("posts", "e", 2)
    assert await alice.recv() == {"action": "discontinuity", "channel": "posts", "reason": "history_lost"}
    assert (await alice.recv())["serial"] == 1
    await alice.close()
    await broker.aclose()


async def test_rewind_delivers_the_newest_messages_then_live(backend: str) -> None:
    for i in range(6):
        await pulse.apublish("posts", "e", i)
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", rewind=4)
    assert (reply["serial"], "resumed" in reply) == (2, False)
    assert [f["data"] for f in await messages(alice, 4)] == [2, 3, 4, 5]
    await pulse.apublish("posts", "e", 6)
    assert [f["serial"] for f in await messages(alice, 1)] == [7]
    # Subscribing again replays nothing: the connection has been receiving all along.
    again = await alice.request("subscribe", channel="posts", rewind=4)
    assert again["serial"] == 7 and await alice.nothing()
    await alice.close()


async def test_history_action(backend: str) -> None:
    ids = [await pulse.apublish("posts", "e", i) for i in range(5)]
    alice = await connect("alice")
    reply = await alice.request("history", channel="posts", limit=3)
    assert [m["id"] for m in reply["messages"]] == ids[2:]
    assert reply["messages"][0]["action"] == "message" and reply["serial"] == 5
    older = await alice.request("history", channel="posts", before=3)
    assert [m["serial"] for m in older["messages"]] == [1, 2]
    empty = await alice.request("history", channel="nothing-here")
    assert (empty["messages"], empty["serial"]) == ([], 0)
    for bad in ({"limit": 0}, {"limit": "3"}, {"before": 0}, {"limit": True}):
        error = await alice.request("history", channel="posts", **bad)
        assert error["code"] == "bad_request", bad
    await alice.close()


@pytest.mark.parametrize(
    "resume",
    [{"serial": -1, "epoch": "e"}, {"serial": 1}, {"serial": 1, "epoch": ""}, "1", {"serial": True, "epoch": "e"}],
)
async def test_bad_resume_or_rewind_is_a_bad_request(resume: Any) -> None:
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume=resume)
    assert reply["code"] == "bad_request" and "resume" in reply["message"]
    reply = await alice.request("subscribe", channel="posts", rewind=-1)
    assert reply["code"] == "bad_request" and "rewind" in reply["message"]
    await alice.close()


async def test_history_needs_the_history_capability() -> None:
    for i in range(3):
        await pulse.apublish("posts", "e", i)
    bob = await connect("bob", capabilities={"posts": ["subscribe"]})
    assert (await bob.request("history", channel="posts"))["code"] == "forbidden"
    assert (await bob.request("subscribe", channel="posts", rewind=2))["code"] == "forbidden"
    # Recovery replays history: without the capability only a resume that missed nothing succeeds.
    ok = await bob.request("subscribe", channel="posts", resume={"serial": 1, "epoch": "x"})
    assert ok["resumed"] is False and await bob.nothing()  # not even the messages of an epoch it never knew
    epoch = ok["epoch"]
    await bob.request("unsubscribe", channel="posts")
    assert (await bob.request("subscribe", channel="posts", resume={"serial": 1, "epoch": epoch}))["resumed"] is False
    await bob.request("unsubscribe", channel="posts")
    exact = await bob.request("subscribe", channel="posts", resume={"serial": 3, "epoch": epoch})
    assert exact["resumed"] is True
    await bob.close()


# -- continuing a connection (auth recover) ------------------------------------------------------------


async def auth_recover(client_id: str, key: Any) -> Client:
    from tests.support.wsutil import open_client, token

    client = await open_client()
    await client.send({"action": "auth", "token": await token(client_id), "recover": key})
    frame = await client.recv()
    assert frame["action"] == "connected", frame
    client.connected = frame
    return client


async def test_a_new_connection_continues_an_earlier_connection_id(backend: str) -> None:
    from django_pulse import signals

    recovered: list[dict[str, Any]] = []

    async def receiver(**kwargs: Any) -> None:
        recovered.append(kwargs)

    signals.connection_recovered.connect(receiver)
    try:
        first = await connect("alice")
        key = first.connected["connectionKey"]
        assert "recovered" not in first.connected
        # The old socket is still open as far as the server knows (the client abandoned it): it is closed 4006.
        second = await auth_recover("alice", key)
        assert second.connected["recovered"] is True
        assert second.connected["connectionId"] == first.connected["connectionId"]
        assert second.connected["connectionKey"] == key
        assert await first.closed() == 4006
        for _ in range(50):
            if recovered:
                break
            await asyncio.sleep(0.01)
        assert recovered == [
            {
                "signal": signals.connection_recovered,
                "sender": "django_pulse.server.hub",
                "kb_id": "default",
                "client_id": "alice",
                "connection_id": first.connected["connectionId"],
                "process_id": get_runtime().broker.process_id,
                "previous_process_id": get_runtime().broker.process_id,
            }
        ]
        # The continued connection works as any other.
        await second.request("subscribe", channel="posts")
        await pulse.apublish("posts", "e", 1)
        assert (await second.recv())["data"] == 1
        await second.close()
        await first.close()
    finally:
        signals.connection_recovered.disconnect(receiver)


@pytest.mark.parametrize("forged", ["other-client", "garbage", "tampered"])
async def test_a_connection_key_of_another_client_or_forged_is_not_continued(forged: str) -> None:
    first = await connect("alice")
    key = first.connected["connectionKey"]
    if forged == "other-client":
        client = await auth_recover("mallory", key)
    elif forged == "garbage":
        client = await auth_recover("alice", "c_abc:def")
    else:
        client = await auth_recover("alice", "c_" + key[2:-1] + ("A" if key[-1] != "A" else "B"))
    assert client.connected["recovered"] is False
    assert client.connected["connectionId"] != first.connected["connectionId"]
    assert await first.nothing()  # nobody was closed
    await client.close()
    await first.close()


async def test_recover_must_be_a_string() -> None:
    from tests.support.wsutil import open_client, token

    client = await open_client()
    await client.send({"action": "auth", "token": await token("alice"), "recover": 5, "ref": 1})
    frame = await client.recv()
    assert (frame["code"], frame["ref"]) == ("bad_request", 1) and "recover" in frame["message"]
    await client.close()


# -- presence continuity ---------------------------------------------------------------------------------


async def test_a_recovered_connection_keeps_its_presence_without_leave_or_enter(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_GRACE": 0.5}
    watcher = await connect("watcher")
    await watcher.request("presence.subscribe", channel="room")
    alice = await connect("alice")
    entered = await alice.request("presence.enter", channel="room", data={"name": "Alice"})
    assert (await next_presence(watcher))["event"] == "enter"
    await alice.comm.disconnect(code=1006)  # the network went away: members kept for the grace period
    again = await auth_recover("alice", alice.connected["connectionKey"])
    assert again.connected["recovered"] is True
    assert await watcher.nothing(1.0)  # past the grace period: no leave, no enter
    members = (await pulse.apresence("room"))["members"]
    assert members == [entered["member"]]
    # The member belongs to the new socket: it updates it, and its clean close leaves.
    await again.request("presence.update", channel="room", data={"name": "Alice 2"})
    assert (await next_presence(watcher))["event"] == "update"
    await again.comm.disconnect(code=1000)
    event = await next_presence(watcher)
    assert (event["event"], event["member"]["connectionId"]) == ("leave", alice.connected["connectionId"])
    await watcher.close()


async def test_an_unnoticed_old_socket_is_superseded_without_leaving(backend: str) -> None:
    watcher = await connect("watcher")
    await watcher.request("presence.subscribe", channel="room")
    alice = await connect("alice")
    await alice.request("presence.enter", channel="room")
    await next_presence(watcher)
    again = await auth_recover("alice", alice.connected["connectionKey"])
    assert await alice.closed() == 4006
    await alice.comm.disconnect(code=4006)
    assert await watcher.nothing(0.5)
    assert (await pulse.apresence("room"))["count"] == 1
    await again.request("presence.leave", channel="room")
    assert (await next_presence(watcher))["event"] == "leave"
    await again.close()
    await watcher.close()


async def test_without_recovery_the_member_leaves_after_the_grace_period(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_GRACE": 0.3}
    watcher = await connect("watcher")
    await watcher.request("presence.subscribe", channel="room")
    alice = await connect("alice")
    await alice.request("presence.enter", channel="room")
    await next_presence(watcher)
    await alice.comm.disconnect(code=1006)
    fresh = await connect("alice")  # reconnects without recover: a new member, the old one leaves
    assert (await next_presence(watcher, timeout=3))["event"] == "leave"
    await fresh.close()
    await watcher.close()


# -- idempotent publish and history ----------------------------------------------------------------------


async def test_the_same_id_published_three_times_is_delivered_and_kept_once(backend: str) -> None:
    import secrets

    from asgiref.sync import sync_to_async

    oid = f"order-{secrets.token_hex(4)}"  # the in-memory id record is per process, shared by every test
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts")
    bob = await connect("bob")
    assert await pulse.apublish("posts", "e", {"try": 1}, id=oid) == oid
    assert await sync_to_async(pulse.publish)("posts", "e", {"try": 2}, id=oid) == oid
    repeat = await bob.request("publish", channel="posts", name="e", data={"try": 3}, id=oid)
    assert repeat["id"] == oid
    await pulse.apublish("posts", "e", "next")
    frames = await messages(alice, 2)
    assert [(f["id"], f["data"], f["serial"]) for f in frames] == [(oid, {"try": 1}, 1), (frames[1]["id"], "next", 2)]
    assert await alice.nothing()
    assert [m["id"] for m in await pulse.ahistory("posts")] == [oid, frames[1]["id"]]
    # A client that resumes from before the first try gets it once too.
    again = await connect("alice")
    resumed = await again.request("subscribe", channel="posts", resume={"serial": 0, "epoch": reply["epoch"]})
    assert resumed["resumed"] is True
    assert [f["id"] for f in await messages(again, 2)] == [oid, frames[1]["id"]]
    assert await again.nothing()
    for client in (alice, bob, again):
        await client.close()


async def test_a_connection_of_a_restarted_process_is_continued_only_with_shared_state(backend: str) -> None:
    from django_pulse.server.runtime import reset_runtime

    alice = await connect("alice")
    key = alice.connected["connectionKey"]
    await alice.comm.disconnect(code=1006)
    old = get_runtime().broker
    reset_runtime()  # this process now has a new runtime (broker, presence...): as if the server had restarted
    await old.aclose()
    again = await auth_recover("alice", key)
    # Memory: the old process's state is gone, so this is a new connection. Redis: the state is shared.
    assert again.connected["recovered"] is (backend == "redis")
    assert (again.connected["connectionId"] == alice.connected["connectionId"]) is (backend == "redis")
    await again.close()


@pytest.mark.parametrize("retention", [30.0, 0.0], ids=["retention 30 s", "HISTORY_SIZE only"])
async def test_a_process_deaf_for_more_than_history_size_is_resumed_within_the_retention_window(
    retention: float, redis_url: str, redis_prefix: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """This process's Redis subscriber connection is cut while 250 messages (2.5 times HISTORY_SIZE: 5 s at 50 per
    second) are published from elsewhere. Its subscriber is told (``broker_unavailable``) and resumes: all 250
    are replayed while they are younger than HISTORY_MIN_RETENTION; with 0 (count only) the resume fails."""
    from urllib.parse import urlsplit

    from django_pulse.protocol import message_head
    from tests.support.tcpproxy import CuttableProxy

    parts = urlsplit(redis_url)
    with CuttableProxy(parts.port or 6379) as proxy:
        settings.PULSE = {
            "REDIS_URL": f"redis://127.0.0.1:{proxy.port}{parts.path}",
            "REDIS_PREFIX": redis_prefix,
            "HISTORY_SIZE": 100,
            "HISTORY_MIN_RETENTION": retention,
        }
        alice = await connect("alice")
        epoch = (await alice.request("subscribe", channel="posts"))["epoch"]
        elsewhere = RedisBroker(url=redis_url, prefix=redis_prefix)  # another process, not behind the proxy
        topic = message_topic("default", "posts")

        def head(n: int) -> str:
            return message_head(channel="posts", name="e", data_json=str(n), id=f"m{n}", timestamp=1)

        await elsewhere.publish_message(topic, head(0))
        assert (await alice.recv(timeout=5))["serial"] == 1
        proxy.cut()
        for n in range(1, 251):
            await elsewhere.publish_message(topic, head(n))
        proxy.restore()
        notice = await alice.recv(timeout=10)
        assert notice == {"action": "discontinuity", "channel": "posts", "reason": "broker_unavailable"}
        await alice.request("unsubscribe", channel="posts")
        reply = await alice.request("subscribe", channel="posts", resume={"serial": 1, "epoch": epoch})
        if retention:
            assert (reply["resumed"], reply["serial"]) == (True, 1)
            assert [f["id"] for f in await messages(alice, 250)] == [f"m{n}" for n in range(1, 251)]
        else:
            assert (reply["resumed"], reply["serial"]) == (False, 251)
        assert await alice.nothing()
        # The operator's log: the connection lost, then back; not a line per failed reconnect attempt.
        said = [r.getMessage() for r in caplog.records if r.name == "django_pulse.broker" and r.levelname != "DEBUG"]
        assert len(said) == 2 and "reconnecting" in said[0] and "back after" in said[1], said
        await alice.close()
        await elsewhere.aclose()
        await get_runtime().broker.aclose()


async def test_a_resume_crosses_the_epoch_a_promoted_replica_forks(pulse_redis: Any) -> None:
    """Under Sentinel or Cluster, the channel's counter remembers which master last wrote it. Served by another
    one (here: the record says another replication id wrote it, as after a promotion), the channel forks a new
    epoch at its last serial: a client that saw up to there resumes exactly into the new epoch; a client of an
    unrelated epoch reloads."""
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    broker.failover_check = "1"  # on under Sentinel and Cluster (replicas can be promoted)
    serial, epoch = await seen_then_gone()  # serials 1..3 on "the old master"
    store = redis.Redis.from_url(broker.url)
    try:
        store.hset(broker.serial_key(message_topic("default", "posts")), "r", "0" * 40)  # another master wrote it
    finally:
        store.close()
    missed = [await pulse.apublish("posts", "e", i) for i in range(3, 6)]  # the first forks the epoch at 3
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel="posts", resume={"serial": serial, "epoch": epoch})
    assert (reply["resumed"], reply["serial"]) == (True, 3) and reply["epoch"] != epoch
    assert [f["id"] for f in await messages(alice, 3)] == missed
    bob = await connect("bob")
    reply = await bob.request("subscribe", channel="posts", resume={"serial": 2, "epoch": "another"})
    assert (reply["resumed"], reply["serial"]) == (False, 6)
    for client in (alice, bob):
        await client.close()
    await broker.aclose()
