"""Presence backends (memory | Redis): members, serials, events, limits, concurrency, dead-process sweeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from django_pulse import signals
from django_pulse.exceptions import LimitExceeded, ProtocolViolation
from django_pulse.presence import NotPresent, PresenceBackend, presence_topic
from django_pulse.protocol import ErrorCode, PresenceEvent, presence_frame, presence_frame_serial
from django_pulse.server.runtime import get_runtime, reset_runtime

KB = "default"


@pytest.fixture(params=["memory", "redis"])
def presence_mode(request: pytest.FixtureRequest, settings: Any) -> str:
    if request.param == "redis":
        request.getfixturevalue("pulse_redis")
    reset_runtime()
    return str(request.param)


@pytest.fixture
async def backend(presence_mode: str) -> AsyncIterator[PresenceBackend]:
    from django_pulse.server.runtime import get_runtime

    instance = get_runtime().presence
    yield instance
    await instance.aclose()
    reset_runtime()
    await get_runtime().broker.aclose()


class Collector:
    """A hub sink that records the presence frames delivered to this process."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        self.frames.append(json.loads(message["text"]))
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.frames


async def collect(channel: str, kb_id: str = KB) -> Collector:
    from django_pulse.server.runtime import get_runtime

    collector = Collector()
    await get_runtime().hub.subscribe(presence_topic(kb_id, channel), collector)
    return collector


async def test_enter_lists_the_member_with_its_identity_data_and_entry_time(backend: PresenceBackend) -> None:
    change = await backend.enter(KB, "posts", client_id="alice", connection_id="c_1", data={"name": "Alice"})
    assert change.event is PresenceEvent.ENTER and change.serial == 1 and change.count == 1 and change.occupied
    snapshot = await backend.snapshot(KB, "posts")
    assert snapshot.serial == 1
    assert [m.to_dict() for m in snapshot.members] == [
        {"clientId": "alice", "connectionId": "c_1", "data": {"name": "Alice"}, "timestamp": change.member.timestamp}
    ]
    assert json.loads(change.frame) == {
        "action": "presence",
        "channel": "posts",
        "event": "enter",
        "serial": 1,
        "member": {
            "clientId": "alice",
            "connectionId": "c_1",
            "data": {"name": "Alice"},
            "timestamp": change.member.timestamp,
        },
    }
    assert presence_frame_serial(change.frame) == 1
    # Memory (Python) and Redis (Lua) build byte-identical frames, also for non-ASCII text.
    uni = await backend.enter(KB, "posts", client_id="zoë", connection_id="c_2", data={"n": "Ünïcode ✓", "q": '"\\'})
    assert uni.frame == presence_frame(channel="posts", event="enter", member=uni.member.to_dict(), serial=2)
    assert uni.member.client_id == "zoë" and uni.member.data == {"n": "Ünïcode ✓", "q": '"\\'}


async def test_two_tabs_of_one_client_are_two_members_and_one_client(backend: PresenceBackend) -> None:
    await backend.enter(KB, "posts", client_id="alice", connection_id="c_1", data=1)
    await backend.enter(KB, "posts", client_id="alice", connection_id="c_2", data=2)
    await backend.enter(KB, "posts", client_id="bob", connection_id="c_3", data=3)
    assert await backend.count(KB, "posts") == 3
    assert await backend.client_ids(KB, "posts") == {"alice", "bob"}
    assert [m.connection_id for m in await backend.members(KB, "posts")] == ["c_1", "c_2", "c_3"]
    assert backend.snapshot_sync(KB, "posts").to_dict()["clientCount"] == 2


async def test_update_replaces_data_and_keeps_entry_time(backend: PresenceBackend) -> None:
    entered = await backend.enter(KB, "posts", client_id="alice", connection_id="c_1", data={"v": 1})
    await asyncio.sleep(0.01)
    updated = await backend.update(KB, "posts", connection_id="c_1", data={"v": 2})
    assert updated.event is PresenceEvent.UPDATE and updated.serial == 2
    assert updated.member.data == {"v": 2} and updated.member.timestamp == entered.member.timestamp
    assert updated.member.client_id == "alice"
    again = await backend.enter(KB, "posts", client_id="alice", connection_id="c_1", data={"v": 3})
    assert again.event is PresenceEvent.UPDATE and again.member.timestamp == entered.member.timestamp
    assert [m.data for m in await backend.members(KB, "posts")] == [{"v": 3}]


async def test_leave_carries_the_last_data_and_vacates(backend: PresenceBackend) -> None:
    await backend.enter(KB, "posts", client_id="alice", connection_id="c_1", data={"name": "Alice"})
    assert backend.channel_counts_sync(KB) == {"posts": 1}
    left = await backend.leave(KB, "posts", connection_id="c_1")
    assert left.event is PresenceEvent.LEAVE and left.vacated and left.serial == 2
    assert left.member.data == {"name": "Alice"} and left.member.client_id == "alice"
    snapshot = await backend.snapshot(KB, "posts")
    assert snapshot.members == [] and snapshot.serial == 2
    assert await backend.channel_counts(KB) == {}


async def test_update_or_leave_without_enter_is_not_present(backend: PresenceBackend) -> None:
    with pytest.raises(NotPresent) as info:
        await backend.update(KB, "posts", connection_id="c_x", data=1)
    assert info.value.code is ErrorCode.NOT_PRESENT
    with pytest.raises(NotPresent):
        await backend.leave(KB, "posts", connection_id="c_x")
    assert (await backend.snapshot(KB, "posts")).serial == 0


async def test_limits_and_bad_input(backend: PresenceBackend, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_MAX_DATA": 20, "PRESENCE_MAX_MEMBERS": 2}
    backend = get_runtime().presence  # rebuilt for the new settings
    try:
        with pytest.raises(LimitExceeded) as info:
            await backend.enter(KB, "posts", client_id="a", connection_id="c_1", data="x" * 30)
        assert info.value.code is ErrorCode.PRESENCE_DATA_TOO_LARGE
        # Multi-byte characters count in UTF-8 bytes: 7 x 3 bytes + quotes > 20.
        with pytest.raises(LimitExceeded):
            await backend.enter(KB, "posts", client_id="a", connection_id="c_1", data="€" * 7)
        await backend.enter(KB, "posts", client_id="a", connection_id="c_1", data="ok")
        await backend.enter(KB, "posts", client_id="b", connection_id="c_2", data="ok")
        with pytest.raises(LimitExceeded) as info:
            await backend.enter(KB, "posts", client_id="c", connection_id="c_3", data="ok")
        assert info.value.code is ErrorCode.PRESENCE_FULL
        # A present member may still update when the channel is full.
        assert (await backend.enter(KB, "posts", client_id="a", connection_id="c_1", data="ok2")).event == "update"
        with pytest.raises(ProtocolViolation) as bad:
            await backend.enter(KB, "posts", client_id="a", connection_id="c_1", data=float("nan"))
        assert bad.value.code is ErrorCode.BAD_REQUEST
        with pytest.raises(ProtocolViolation) as bad:
            await backend.enter(KB, "no spaces", client_id="a", connection_id="c_1", data=1)
        assert bad.value.code is ErrorCode.INVALID_CHANNEL
        assert await backend.count(KB, "posts") == 2
    finally:
        await backend.aclose()


async def test_anonymous_visitors_fill_their_own_slots_never_those_of_signed_in_clients(
    backend: PresenceBackend, settings: Any
) -> None:
    settings.PULSE = {
        **settings.PULSE,
        "PRESENCE_MAX_MEMBERS": 2,
        "PRESENCE_MAX_ANONYMOUS_MEMBERS": 3,
        "PRESENCE_MAX_MEMBERS_PER_CLIENT": 2,
    }
    backend = get_runtime().presence  # rebuilt for the new settings
    try:
        # Cheap identities, two tabs each: the anonymous slots are full after three members...
        entered = 0
        for n in range(4):
            for tab in range(2):
                try:
                    await backend.enter(KB, "posts", client_id=f"anon-{n:016d}", connection_id=f"c_a{n}{tab}")
                    entered += 1
                except LimitExceeded as exc:
                    assert exc.code is ErrorCode.PRESENCE_FULL and "anonymous" in exc.message
        assert entered == 3
        with pytest.raises(LimitExceeded) as info:  # a session-less SSE stream's id is anonymous too
            await backend.enter(KB, "posts", client_id="anonymous-x", connection_id="c_sse")
        assert info.value.code is ErrorCode.PRESENCE_FULL
        # ... and the signed-in clients still have both of theirs.
        await backend.enter(KB, "posts", client_id="alice", connection_id="c_1")
        await backend.enter(KB, "posts", client_id="bob", connection_id="c_2")
        with pytest.raises(LimitExceeded) as info:
            await backend.enter(KB, "posts", client_id="carol", connection_id="c_3")
        assert info.value.code is ErrorCode.PRESENCE_FULL and "anonymous" not in info.value.message
        assert await backend.count(KB, "posts") == 5
        # An anonymous member leaving frees an anonymous slot, not a signed-in one.
        await backend.leave(KB, "posts", connection_id="c_a00")
        with pytest.raises(LimitExceeded):
            await backend.enter(KB, "posts", client_id="carol", connection_id="c_3")
        await backend.enter(KB, "posts", client_id="anon-0000000000000009", connection_id="c_a9")
        # A client id that only looks similar is a signed-in one.
        await backend.leave(KB, "posts", connection_id="c_2")
        await backend.enter(KB, "posts", client_id="anonymized_bob", connection_id="c_2")
        assert await backend.count(KB, "posts") == 5
    finally:
        await backend.aclose()


async def test_a_wrongly_swept_anonymous_member_is_restored(backend: PresenceBackend) -> None:
    """``reassert`` (a process that was taken for dead enters its members again) restores anonymous members
    within their own slots too."""
    from django_pulse.presence.memory import MemoryPresence

    await backend.enter(KB, "posts", client_id="anon-0000000000000001", connection_id="c_1")
    await backend.enter(KB, "posts", client_id="alice", connection_id="c_2")
    if isinstance(backend, MemoryPresence):
        backend._channels.clear()
    else:
        backend.client.delete(*backend._channel_keys(KB, "posts")[:2], backend._channel_keys(KB, "posts")[3])  # type: ignore[attr-defined]
    assert await backend.count(KB, "posts") == 0
    assert len(await backend.reassert()) == 2
    assert sorted(m.client_id for m in await backend.members(KB, "posts")) == ["alice", "anon-0000000000000001"]


async def test_no_anonymous_member_when_their_slots_are_zero(backend: PresenceBackend, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_MAX_ANONYMOUS_MEMBERS": 0}
    backend = get_runtime().presence
    try:
        with pytest.raises(LimitExceeded) as info:
            await backend.enter(KB, "posts", client_id="anon-0000000000000001", connection_id="c_1")
        assert info.value.code is ErrorCode.PRESENCE_FULL
        await backend.enter(KB, "posts", client_id="alice", connection_id="c_2")
    finally:
        await backend.aclose()


async def test_apps_never_see_each_others_members(backend: PresenceBackend) -> None:
    await backend.enter("app1", "posts", client_id="a", connection_id="c_1")
    await backend.enter("app2", "posts", client_id="b", connection_id="c_2")
    assert [m.client_id for m in await backend.members("app1", "posts")] == ["a"]
    assert await backend.channel_counts("app2") == {"posts": 1}


async def test_events_reach_subscribers_in_serial_order(backend: PresenceBackend) -> None:
    collector = await collect("posts")
    await backend.enter(KB, "posts", client_id="a", connection_id="c_1", data={"n": 1})
    await backend.update(KB, "posts", connection_id="c_1", data={"n": 2})
    await backend.enter(KB, "posts", client_id="b", connection_id="c_2")
    await backend.leave(KB, "posts", connection_id="c_1")
    frames = await collector.wait_for(4)
    assert [(f["event"], f["member"]["connectionId"], f["serial"]) for f in frames] == [
        ("enter", "c_1", 1),
        ("update", "c_1", 2),
        ("enter", "c_2", 3),
        ("leave", "c_1", 4),
    ]
    assert frames[3]["member"]["data"] == {"n": 2}


async def test_leave_connection_leaves_every_channel(backend: PresenceBackend) -> None:
    for channel in ("a", "b", "c"):
        await backend.enter(KB, channel, client_id="alice", connection_id="c_1")
    await backend.enter(KB, "a", client_id="bob", connection_id="c_2")
    changes = await backend.leave_connection("c_1")
    assert sorted(c.channel for c in changes) == ["a", "b", "c"]
    assert await backend.channel_counts(KB) == {"a": 1}
    assert await backend.leave_connection("c_1") == []


async def test_grace_leave_fires_later_and_can_be_cancelled(backend: PresenceBackend) -> None:
    await backend.enter(KB, "posts", client_id="alice", connection_id="c_1")
    await backend.enter(KB, "posts", client_id="bob", connection_id="c_2")
    backend.leave_connection_later("c_1", 0.2)
    backend.leave_connection_later("c_2", 0.2)
    assert backend.cancel_pending_leave("c_2") is True  # c_2 "resumed"
    assert await backend.count(KB, "posts") == 2  # still there during the grace period
    async with asyncio.timeout(5):
        while await backend.count(KB, "posts") != 1:
            await asyncio.sleep(0.05)
    assert [m.connection_id for m in await backend.members(KB, "posts")] == ["c_2"]
    assert backend.cancel_pending_leave("c_1") is False


async def test_signals(backend: PresenceBackend) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def receiver(name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            seen.append((name, kwargs))

        return receive

    receivers = {
        name: receiver(name)
        for name in ("member_entered", "member_updated", "member_left", "channel_occupied", "channel_vacated")
    }
    for name, fn in receivers.items():
        getattr(signals, name).connect(fn)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken receiver")

    signals.member_entered.connect(broken)
    try:
        await backend.enter(KB, "posts", client_id="alice", connection_id="c_1", data=1)
        await backend.enter(KB, "posts", client_id="bob", connection_id="c_2", data=2)
        await backend.update(KB, "posts", connection_id="c_1", data=3)
        await backend.leave(KB, "posts", connection_id="c_1")
        await backend.leave(KB, "posts", connection_id="c_2")
    finally:
        for name, fn in receivers.items():
            getattr(signals, name).disconnect(fn)
        signals.member_entered.disconnect(broken)
    assert [(name, kw.get("member", {}).get("connectionId")) for name, kw in seen] == [
        ("member_entered", "c_1"),
        ("channel_occupied", None),
        ("member_entered", "c_2"),
        ("member_updated", "c_1"),
        ("member_left", "c_1"),
        ("member_left", "c_2"),
        ("channel_vacated", None),
    ]
    assert all(kw["kb_id"] == KB and kw["channel"] == "posts" for _name, kw in seen)
    assert seen[4][1]["member"]["data"] == 3


async def test_250_members_then_a_late_snapshot_has_exactly_250(backend: PresenceBackend) -> None:
    for i in range(250):
        await backend.enter(KB, "crowd", client_id=f"u{i % 100}", connection_id=f"c_{i}", data={"i": i})
    snapshot = await backend.snapshot(KB, "crowd")
    assert snapshot.count == 250 and snapshot.serial == 250
    assert len({m.connection_id for m in snapshot.members}) == 250
    assert len(snapshot.client_ids) == 100
    assert backend.channel_counts_sync(KB) == {"crowd": 250}


async def test_concurrent_storm_leaves_a_consistent_set(backend: PresenceBackend) -> None:
    """Many concurrent enters, updates and leaves: the final set is exactly the members whose last operation
    was an enter/update, counts agree, and the serial counted every change once."""
    collector = await collect("storm")
    rng = random.Random(7)
    connections = [f"c_{i}" for i in range(40)]
    scripts = {c: [rng.choice(["enter", "enter", "update", "leave"]) for _ in range(12)] for c in connections}

    async def run(connection_id: str) -> tuple[bool, int]:
        present, changes = False, 0
        for op in scripts[connection_id]:
            try:
                if op == "enter":
                    await backend.enter(KB, "storm", client_id=connection_id[:3], connection_id=connection_id, data=op)
                    present = True
                elif op == "update":
                    await backend.update(KB, "storm", connection_id=connection_id, data=op)
                else:
                    await backend.leave(KB, "storm", connection_id=connection_id)
                    present = False
                changes += 1
            except NotPresent:
                assert not present
        return present, changes

    results = await asyncio.gather(*(run(c) for c in connections))
    expected = {c for c, (present, _n) in zip(connections, results, strict=True) if present}
    total = sum(n for _present, n in results)
    snapshot = await backend.snapshot(KB, "storm")
    assert {m.connection_id for m in snapshot.members} == expected
    assert snapshot.serial == total
    assert backend.channel_counts_sync(KB).get("storm", 0) == len(expected)
    frames = await collector.wait_for(total)
    assert [f["serial"] for f in frames] == list(range(1, total + 1))
    # Replaying the events gives the same set as the snapshot.
    replay: set[str] = set()
    for frame in frames:
        (replay.discard if frame["event"] == "leave" else replay.add)(frame["member"]["connectionId"])
    assert replay == expected


# --- Redis only: several processes sharing one store ---------------------------------------------------------


@pytest.mark.redis
def test_many_processes_storm_in_threads(pulse_redis: str, redis_prefix: str) -> None:
    """Backends of four "processes" (own clients and process ids) hammer one channel from threads."""
    from django_pulse.presence.redis import RedisPresence

    backends = [RedisPresence(process_id=f"proc-{i}", broker=get_runtime().broker) for i in range(4)]
    outcome: dict[str, bool] = {}
    lock = threading.Lock()

    def worker(index: int) -> None:
        backend = backends[index]
        rng = random.Random(index)
        for n in range(60):
            conn = f"c_{index}_{n % 15}"
            member = backend.snapshot_sync(KB, "storm")  # interleave reads too
            assert member.serial >= 0
            if rng.random() < 0.6:
                asyncio.run(backend.enter(KB, "storm", client_id=f"u{index}", connection_id=conn, data=n))
                with lock:
                    outcome[conn] = True
            else:
                with contextlib.suppress(NotPresent):
                    asyncio.run(backend.leave(KB, "storm", connection_id=conn))
                with lock:
                    outcome[conn] = False

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snapshot = backends[0].snapshot_sync(KB, "storm")
    assert {m.connection_id for m in snapshot.members} == {c for c, present in outcome.items() if present}
    assert backends[0].channel_counts_sync(KB) == {"storm": snapshot.count}
    for backend in backends:
        backend.close()


@pytest.mark.redis
async def test_only_the_owning_process_removes_a_member(pulse_redis: str) -> None:
    """A late leave from a process the connection moved away from (recovery) leaves the member alone."""
    from django_pulse.presence.redis import RedisPresence

    owner, former = (
        RedisPresence(process_id="owner", broker=get_runtime().broker),
        RedisPresence(process_id="former", broker=get_runtime().broker),
    )
    try:
        await owner.enter(KB, "room", client_id="ada", connection_id="c_1", data={"n": 1})
        with pytest.raises(NotPresent):
            await former.leave(KB, "room", connection_id="c_1")
        assert [m.connection_id for m in (await owner.snapshot(KB, "room")).members] == ["c_1"]
        await owner.leave(KB, "room", connection_id="c_1")
        assert (await owner.snapshot(KB, "room")).members == []
    finally:
        owner.close()
        former.close()


@pytest.mark.redis
async def test_sweep_removes_a_dead_process_members_exactly_once(pulse_redis: str) -> None:
    import redis

    from django_pulse.presence.redis import RedisPresence

    dead, alive, other = (RedisPresence(process_id=p, broker=get_runtime().broker) for p in ("dead", "alive", "other"))
    client = redis.Redis.from_url(pulse_redis, decode_responses=True)
    try:
        client.set(alive.process_key("proc", "alive"), "{}")
        for i in range(450):  # more than one sweep batch
            await dead.enter(KB, f"ch{i % 3}", client_id=f"u{i}", connection_id=f"c_d{i}", data={"i": i})
        for i in range(3):
            await alive.enter(KB, "ch0", client_id="live", connection_id=f"c_a{i}")
        before = {ch: (await alive.snapshot(KB, ch)).serial for ch in ("ch0", "ch1", "ch2")}
        # "dead" never wrote its liveness key: it counts as dead. Two sweepers race.
        results = await asyncio.gather(
            asyncio.to_thread(alive.sweep_process_sync, "dead"), asyncio.to_thread(other.sweep_process_sync, "dead")
        )
        removed = [c for r in results for c in (r or [])]
        assert len(removed) == 450
        assert len({(c.channel, c.member.connection_id) for c in removed}) == 450
        assert all(c.event is PresenceEvent.LEAVE for c in removed)
        assert [m.connection_id for m in await alive.members(KB, "ch0")] == ["c_a0", "c_a1", "c_a2"]
        assert await alive.channel_counts(KB) == {"ch0": 3}
        after = {ch: (await alive.snapshot(KB, ch)).serial for ch in ("ch0", "ch1", "ch2")}
        assert sum(after.values()) - sum(before.values()) == 450
        assert not client.sismember(alive.key("procs"), "dead")
        assert not client.exists(alive.process_key("procmembers", "dead"))
        # The living process is not swept.
        assert alive.sweep_process_sync("alive") is None
        assert await alive.count(KB, "ch0") == 3
    finally:
        client.close()
        for backend in (dead, alive, other):
            backend.close()
