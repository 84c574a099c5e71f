"""The loopback proof (that the Redis Cluster and Sentinel set-ups hold under load, on one machine): 4 daphne processes
on a Redis Cluster (3 masters + 3 replicas), and on Redis Sentinel (1 master, 1 replica, 3 sentinels), started by the
test; thousands of WebSocket connections on hundreds of channels; messages published at a steady rate, a share through
the servers' HTTP endpoint and the rest with ``pulse.apublish`` from a fifth process of the site (as a worker would:
tests/support/proof_publisher.py).

1. Steady traffic: every message answered 200 is delivered to every subscriber of its channel once, in order.
2. ``kill -9`` of a master (the cluster: the master of one third of the slots; Sentinel: the master) while
   traffic runs: its replica is promoted; the killed node is restarted once that happened (it rejoins as the
   new master's replica, so ``REDIS_WAIT_REPLICAS: 1`` can be satisfied again). What clients see:
   - every subscriber either carries on exactly (each message once, in order) or gets a ``discontinuity``
     and then live messages again (serials increasing after it);
   - no message answered 200 is lost: it reached every subscriber that had no discontinuity, and it is in its
     channel's history;
   - presence is right again (every member that entered, on every channel) within its documented time
     (``PROCESS_TIMEOUT + PROCESS_HEARTBEAT``: docs/presence.md).

The size is a parameter: ``PULSE_PROOF_CONNECTIONS`` (default 500), ``PULSE_PROOF_CHANNELS`` (125),
``PULSE_PROOF_RATE`` (messages/s, 100); the issue's 2,000 / 500 / 200 is run by hand. The figures of the runs
are printed (``pytest -s``) and recorded in docs/scaling.md, "The loopback proof".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.rawws import RawWebSocket
from tests.support.redis_topology import RedisCluster, redis_cluster, sentinel_group, wait_until
from tests.support.servers import ROOT, LiveServer, live_server

# Bounded: about 2 minutes per topology at the default size on the shared 2-core machine (docs/scaling.md).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# The default size keeps each topology near a minute on a shared 2-core machine (CI); the size (2,000
# connections, 500 channels, 200 messages/s) is PULSE_PROOF_CONNECTIONS=2000 PULSE_PROOF_CHANNELS=500
# PULSE_PROOF_RATE=200, run by hand: figures in docs/scaling.md.
CONNECTIONS = int(os.environ.get("PULSE_PROOF_CONNECTIONS", "500"))
CHANNELS = int(os.environ.get("PULSE_PROOF_CHANNELS", "125"))
RATE = float(os.environ.get("PULSE_PROOF_RATE", "100"))
SERVERS = 4
# Publishers: HTTP_RATE messages/s through the servers' HTTP endpoint (threads, each waiting for its answer),
# the rest of RATE with the SDK from this process (tasks). Each lane publishes on its own share of channels.
HTTP_RATE = 20.0
# HTTP lanes wait for each answer (a publish with WAIT is several round trips): enough of them to keep the rate
# when an answer takes up to ~400 ms on a loaded machine (2.5 messages/s each). The SDK lanes are open loop
# (tests/support/proof_publisher.py): they only spread the channels.
HTTP_LANES = 8
SDK_LANES = 32
SDK_PROCESSES = 1  # worker processes sharing the SDK lanes
LANES = HTTP_LANES + SDK_LANES
STEADY_SECONDS = 8.0
# Presence heals within PROCESS_TIMEOUT + PROCESS_HEARTBEAT (docs/presence.md), counted from the promotion.
PRESENCE_BOUND = 12.0 + 3.0


@dataclass
class Client:
    ws: RawWebSocket
    channel: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass
class Publishes:
    ok: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> message id -> k
    failed: set[str] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)
    answered: list[tuple[float, bool]] = field(default_factory=list)
    via_http: list[bool] = field(default_factory=list)  # beside answered: through the HTTP endpoint


def _record(
    published: Publishes, channel: str, message_id: str, k: int, error: BaseException | None, at: float | None = None
) -> None:
    """One publish's outcome, answered at ``at`` (``time.monotonic()``, the same clock in every process of the
    machine: the publishing process's answers are timed there, not when this busy process reads them)."""
    if error is not None:
        published.reasons.append(f"{type(error).__name__}: {error}"[-600:])
        published.failed.add(message_id)
    else:
        published.ok.setdefault(channel, {})[message_id] = k
    published.answered.append((time.monotonic() if at is None else at, error is None))
    published.via_http.append(at is None)


def _lane(k: int, index: int) -> tuple[str, str]:
    channel = f"room{(k * LANES + index) % CHANNELS}"
    return channel, f"{channel}-{index}-{k}"


def _http_publisher(servers: list[LiveServer], published: Publishes, stop: threading.Event, index: int) -> None:
    """A thread publishing through the servers' HTTP endpoint (round-robin), HTTP_RATE / HTTP_LANES per second."""
    interval = HTTP_LANES / HTTP_RATE
    k = 0
    next_at = time.monotonic()
    while not stop.is_set():
        channel, message_id = _lane(k, index)
        error: BaseException | None = None
        try:
            servers[(k + index) % len(servers)].publish(channel, "e", {"k": k}, id=message_id)
        except Exception as exc:
            error = exc
        _record(published, channel, message_id, k, error)
        k += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()


def _sdk_publisher(server: LiveServer, published: Publishes, stop: threading.Event, index: int) -> None:
    """Worker process ``index`` of the site (tests/support/proof_publisher.py) publishing with ``pulse.apublish``: its
    share of the rest of RATE, over its share of SDK_LANES lanes. Its answers are read here, line by line."""
    import subprocess
    import sys

    lanes = SDK_LANES // SDK_PROCESSES
    rate = (RATE - HTTP_RATE) / SDK_PROCESSES
    command = [sys.executable, "-m", "tests.support.proof_publisher", str(rate), str(lanes)]
    command += [str(HTTP_LANES + index * lanes), str(LANES), str(CHANNELS)]
    proc = subprocess.Popen(
        command, env=server.env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdin is not None and proc.stdout is not None
    threading.Thread(target=lambda: (stop.wait(), proc.stdin.close()), daemon=True).start()  # type: ignore[union-attr]
    with proc, proc.stdout:  # closes the pipes and waits for the process, which ends when its stdin closes
        for line in proc.stdout:
            outcome, channel, message_id, at, *reason = line.rstrip("\n").split(" ", 4)
            k = int(message_id.rsplit("-", 1)[1])
            error = None if outcome == "ok" else RuntimeError(" ".join(reason))
            _record(published, channel, message_id, k, error, float(at))


def _progress(label: str, what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {what}", flush=True)


async def _read(client: Client) -> None:
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
        while True:
            opcode, payload = await client.ws.recv()
            if opcode == 0x9:
                client.ws.send(0xA, payload)
            if opcode != 0x1:
                continue
            frame = json.loads(payload)
            if frame["action"] == "ping":
                client.ws.send_json({"action": "pong"})
            else:
                client.frames.append(frame)


async def _connect(server: LiveServer, token: str, channel: str, *, enter: bool) -> Client:
    ws = await RawWebSocket.open(server.port)
    ws.send_json({"action": "auth", "token": token})
    reply = await asyncio.wait_for(ws.recv_json(), 30)
    assert reply["action"] == "connected", reply
    ws.send_json({"action": "subscribe", "channel": channel, "ref": 1})
    reply = await asyncio.wait_for(ws.recv_json(), 30)
    assert (reply["action"], reply["ref"]) == ("ok", 1), reply
    if enter:
        ws.send_json({"action": "presence.enter", "channel": channel, "data": {"c": channel}, "ref": 2})
        reply = await asyncio.wait_for(ws.recv_json(), 30)
        assert (reply["action"], reply["ref"]) == ("ok", 2), reply
    client = Client(ws, channel)
    client.task = asyncio.ensure_future(_read(client))
    return client


@contextlib.contextmanager
def _servers(pulse: dict[str, Any]) -> Iterator[list[LiveServer]]:
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(live_server(pulse=pulse))
        servers = [first]
        for _ in range(SERVERS - 1):
            servers.append(stack.enter_context(live_server(pulse=pulse, database=first.database)))
        yield servers


def _messages(client: Client) -> list[dict[str, Any]]:
    return [f for f in client.frames if f["action"] == "message"]


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} not within {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def _reply(ws: RawWebSocket) -> dict[str, Any]:
    """The next JSON frame that is not a heartbeat, answering daphne's WebSocket pings and Pulse's on the way."""
    while True:
        opcode, payload = await asyncio.wait_for(ws.recv(), 10)
        if opcode == 0x9:
            ws.send(0xA, payload)
        elif opcode == 0x1:
            frame: dict[str, Any] = json.loads(payload)
            if frame["action"] == "ping":
                ws.send_json({"action": "pong"})
            else:
                return frame


async def _presence_counts(ws: RawWebSocket, channels: list[str]) -> dict[str, int]:
    """Members per channel (-1: the read failed), asked all at once on one connection."""
    refs = {1000 + i: channel for i, channel in enumerate(channels)}
    for ref, channel in refs.items():
        ws.send_json({"action": "presence.get", "channel": channel, "ref": ref})
    counts: dict[str, int] = {}
    while len(counts) < len(refs):
        frame = await _reply(ws)
        channel = refs.get(frame.get("ref", 0))
        if channel is not None:
            counts[channel] = len(frame["members"]) if frame["action"] == "ok" else -1
    return counts


async def _history_ids(ws: RawWebSocket, channel: str, ref: int) -> set[str]:
    ws.send_json({"action": "history", "channel": channel, "ref": ref, "limit": 10_000})
    while True:
        frame = await _reply(ws)
        if frame.get("ref") == ref:
            assert frame["action"] == "ok", frame
            return {m["id"] for m in frame["messages"]}


async def _prove(pulse: dict[str, Any], kill: Callable[[], float], label: str) -> None:
    clients: list[Client] = []
    try:
        await _prove_with(pulse, kill, label, clients)
    finally:
        for client in clients:
            if client.task is not None:
                client.task.cancel()
            client.ws.abort()


async def _prove_with(pulse: dict[str, Any], kill: Callable[[], float], label: str, clients: list[Client]) -> None:
    channels = [f"room{i}" for i in range(CHANNELS)]
    with _servers(pulse) as servers:
        tokens = [servers[0].token(f"user{i}")["token"] for i in range(50)]
        started = time.monotonic()
        entered: set[str] = set()
        for batch in range(0, CONNECTIONS, 100):
            jobs = []
            for i in range(batch, min(batch + 100, CONNECTIONS)):
                # One subscriber of each channel on each server in turn; the first of each channel enters presence.
                channel = channels[i % CHANNELS]
                enter = channel not in entered
                entered.add(channel)
                jobs.append(_connect(servers[(i // CHANNELS + i) % SERVERS], tokens[i % 50], channel, enter=enter))
            clients.extend(await asyncio.gather(*jobs))
        connect_seconds = time.monotonic() - started
        _progress(label, f"{len(clients)} connections open after {connect_seconds:.1f} s")
        by_channel: dict[str, list[Client]] = {}
        for client in clients[:CONNECTIONS]:
            by_channel.setdefault(client.channel, []).append(client)
        probe = await RawWebSocket.open(servers[1].port)
        clients.append(Client(probe, ""))  # closed with the others
        probe.send_json({"action": "auth", "token": tokens[0]})
        assert (await asyncio.wait_for(probe.recv_json(), 30))["action"] == "connected"

        published = Publishes()
        stop = threading.Event()
        threads = [
            threading.Thread(target=_http_publisher, args=(servers, published, stop, i), daemon=True)
            for i in range(HTTP_LANES)
        ]
        publishing_from = time.monotonic()
        for thread in threads:
            thread.start()
        for i in range(SDK_PROCESSES):
            threads.append(threading.Thread(target=_sdk_publisher, args=(servers[0], published, stop, i), daemon=True))
            threads[-1].start()
        switch_seconds = presence_seconds = 0.0
        try:
            # 1. Steady traffic (counted from the first answers: the publishing process takes a while to start).
            # Both kinds: the publishing process starts (Django set-up) well after the HTTP threads' first answers.
            await _until(
                lambda: sum(published.via_http) >= 20 and len(published.via_http) - sum(published.via_http) >= 20,
                60,
                "the publishers' first answers",
            )
            publishing_from = time.monotonic()
            await asyncio.sleep(STEADY_SECONDS)
            steady_reasons = published.reasons[:2]
            # 2. The failover, while traffic runs.
            killed_at = time.monotonic()
            _progress(label, "steady phase done; killing the master")
            switch_seconds = await asyncio.to_thread(kill)
            _progress(label, f"promoted after {switch_seconds:.1f} s")
            promoted_at = killed_at + switch_seconds
            # Presence: every channel has its one member again (reads answer, nothing lost), within the
            # documented bound of the promotion; polled while traffic goes on.
            while True:
                counts = await _presence_counts(probe, channels)
                wrong = {c: n for c, n in counts.items() if n != 1}
                if not wrong:
                    break
                assert time.monotonic() < promoted_at + PRESENCE_BOUND, (
                    f"presence not healed: {list(wrong.items())[:5]}"
                )
                await asyncio.sleep(0.5)
            presence_seconds = time.monotonic() - promoted_at
            _progress(label, f"presence right {presence_seconds:.1f} s after the promotion")
            mark = len(published.answered)
            await _until(
                lambda: sum(ok for _t, ok in published.answered[mark:]) >= RATE * 3, 60, "publishing after failover"
            )
        finally:
            stop.set()
            for thread in threads:
                await asyncio.to_thread(thread.join, 15)
        elapsed = published.answered[-1][0] - publishing_from if published.answered else 0
        # The steady phase's figures, from the answers' own times (read once every answer is in: the publishing
        # process's lines reach this busy process late).
        steady = [
            (ok, http)
            for (t, ok), http in zip(published.answered, published.via_http, strict=True)
            if publishing_from <= t < killed_at
        ]
        steady_seconds = killed_at - publishing_from
        steady_ok = sum(ok for ok, _http in steady)
        steady_failed = len(steady) - steady_ok
        steady_http = sum(ok and http for ok, http in steady)
        failed_during = [t for t, ok in published.answered if not ok]
        publish_gap = (max(failed_during) - killed_at) if failed_during else 0.0

        # Every subscriber hears the last success of its channel (live: no message reported published is lost).
        def all_heard() -> bool:
            for channel, ids in published.ok.items():
                for client in by_channel[channel]:
                    if not ids.keys() <= {m["id"] for m in _messages(client)} and not any(
                        f["action"] == "discontinuity" for f in client.frames
                    ):
                        return False
            return True

        _progress(label, "publishing stopped")

        def unheard() -> str:
            for channel, ids in published.ok.items():
                for client in by_channel[channel]:
                    got = {m["id"] for m in _messages(client)}
                    if not ids.keys() <= got and not any(f["action"] == "discontinuity" for f in client.frames):
                        return f"{channel}: missing {sorted(ids.keys() - got)[:5]}; last frames {client.frames[-3:]}"
            return ""

        try:
            await _until(all_heard, 60, "delivery of every published message")
        except AssertionError:
            raise AssertionError(f"not delivered: {unheard()}") from None
        _progress(label, "every message delivered")

        exact = disrupted = 0
        for channel, subscribers in by_channel.items():
            ok_ids = published.ok.get(channel, {})
            history: set[str] | None = None
            for client in subscribers:
                messages = _messages(client)
                ids = [m["id"] for m in messages]
                assert len(ids) == len(set(ids)), f"{channel}: a message delivered twice"
                stretch: list[int] = []
                for frame in client.frames:
                    if frame["action"] == "discontinuity":
                        stretch = []
                    elif frame["action"] == "message":
                        assert not stretch or frame["serial"] > stretch[-1], f"{channel}: out of order"
                        stretch.append(frame["serial"])
                # Nothing delivered that was not published (a failed publish may have gone through: allowed).
                assert set(ids) <= ok_ids.keys() | published.failed, channel
                if any(f["action"] == "discontinuity" for f in client.frames):
                    disrupted += 1
                    missing = ok_ids.keys() - set(ids)
                    if missing:
                        if history is None:
                            history = await _history_ids(probe, channel, 5000 + len(channel))
                        assert missing <= history, f"{channel}: {sorted(missing - history)[:5]} lost"
                else:
                    exact += 1
                    # Every success, in publish order per publisher thread (k grows), exactly once.
                    assert ok_ids.keys() <= set(ids), f"{channel}: {sorted(ok_ids.keys() - set(ids))[:5]} missing"

        # And still right after the traffic.
        assert set((await _presence_counts(probe, channels)).values()) == {1}
        total_ok = sum(len(ids) for ids in published.ok.values())
        print(
            f"\n{label}: {CONNECTIONS} connections on {CHANNELS} channels over {SERVERS} daphne processes "
            f"(opened in {connect_seconds:.1f} s); {total_ok} messages answered 200 and {len(published.failed)} "
            f"failed over {elapsed:.0f} s (target {RATE:.0f}/s); steady phase: {steady_ok} ok "
            f"({steady_ok / steady_seconds:.0f}/s: {steady_http / steady_seconds:.0f}/s through HTTP, "
            f"{(steady_ok - steady_http) / steady_seconds:.0f}/s with the SDK), {steady_failed} "
            f"failed {steady_reasons}; replica promoted after {switch_seconds:.2f} s; "
            f"publishes failed until {publish_gap:.2f} s "
            f"after the kill; subscribers exact: {exact}, with a discontinuity: {disrupted}; presence right "
            f"{presence_seconds:.1f} s after the promotion (every channel read); 0 messages lost"
        )


async def test_loopback_proof_on_a_redis_cluster() -> None:
    with redis_cluster(masters=3, replicas=1) as cluster:
        pulse = {
            "REDIS_CLUSTER": {"nodes": cluster.startup_nodes},
            "REDIS_PREFIX": "proof-cluster",
            # The probe connection reads the presence of every channel at once, twice a second.
            "RATE_LIMIT": 100_000,
            "RATE_BURST": 100_000,
            "REDIS_WAIT_REPLICAS": 1,
            "REDIS_WAIT_TIMEOUT": 0.5,
            "HISTORY_SIZE": 10_000,
        }

        def kill() -> float:
            return _kill_cluster_master(cluster)

        await _prove(pulse, kill, "cluster")


async def test_loopback_proof_on_redis_sentinel() -> None:
    with sentinel_group(replicas=1) as group:
        pulse = {
            "REDIS_SENTINEL": {"service": group.service, "sentinels": group.sentinel_addresses},
            "REDIS_PREFIX": "proof-sentinel",
            # The probe connection reads the presence of every channel at once, twice a second.
            "RATE_LIMIT": 100_000,
            "RATE_BURST": 100_000,
            "REDIS_WAIT_REPLICAS": 1,
            "REDIS_WAIT_TIMEOUT": 0.5,
            "HISTORY_SIZE": 10_000,
        }

        def kill() -> float:
            old = group.master_address()
            node = group.node(old)
            node.kill()
            took = group.wait_for_new_master(old)
            node.restart()  # Sentinel makes it the new master's replica: WAIT 1 can be satisfied again
            return took

        await _prove(pulse, kill, "sentinel")


def _kill_cluster_master(cluster: RedisCluster) -> float:
    victim = cluster.masters[0]
    slot = _a_slot_of(cluster, victim.port)
    victim.kill()
    took = wait_until(lambda: cluster.node_for_slot(slot).port != victim.port, 30, "promotion")
    victim.restart()  # rejoins as the promoted node's replica
    return took


def _a_slot_of(cluster: RedisCluster, port: int) -> int:
    for slot in range(0, 16384, 64):
        if cluster.node_for_slot(slot).port == port:
            return slot
    raise AssertionError("the master serves no slot")
