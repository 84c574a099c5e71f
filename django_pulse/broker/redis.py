"""The Redis broker: serial, history and broadcast in one Lua script, one pub/sub connection per process.

- Publishing runs one script: ``HINCRBY {prefix}:serial:{topic} s 1``, ``XADD {prefix}:hist:{topic}`` of the
  finished frame ``head..n.."}"`` (trimmed to HISTORY_SIZE, expiring HISTORY_TTL after the last publish) and
  ``PUBLISH {prefix}:bus:{topic}`` of the same frame. Redis runs scripts one at a time, so serial order is
  delivery order in every process, and history holds exactly what was delivered. A publish with a message id
  (``publish_once``) checks and writes the id's record (``idem:{id}``, holding the serial) in the same script.
- Each topic's counter hash also holds its epoch (field ``e``), a random name chosen when the counter is
  created: if the key is lost (it expired ``CHANNEL_TTL`` s after the channel's last publish or read; FLUSHDB,
  eviction, a new Redis without persistence) the next publish or subscribe starts a new epoch and drops any
  history left of the old one, and the publish tells subscribers (``discontinuity``, ``history_lost``).
- Receiving: one pub/sub connection per process (named ``{prefix}:sub:{process_id}`` with CLIENT SETNAME),
  read by one task with a minimal RESP reader, so the broker controls reconnection itself: it reconnects
  with backoff, re-subscribes every topic and, once Redis confirms each, sends its local subscribers a
  ``discontinuity`` frame (messages may have been published while this process was deaf).
- While Redis is unreachable, publishing raises ``Unavailable`` and so does subscribing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis as redis_sync
import redis.asyncio as redis_async
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from .._lua import load_lua
from .._redis import close_with_loop
from ..exceptions import Unavailable
from . import keys
from .base import RESUME_LIMIT, Broker, HistoryRead, new_epoch, topic_channel
from .connection import SENTINEL_SCHEME, async_client, async_no_retry, no_retry, sentinel_endpoints, sync_client
from .pubsub import CONNECT_ERRORS, FAST_RETRY, MAX_BACKOFF, Outage, RespConnection, Subscriber

__all__ = ["RedisBroker"]

logger = logging.getLogger("django_pulse.broker")

PUBLISH_SCRIPT = load_lua("django_pulse.broker", "publish.lua", "failover.lua", "frame.lua")
# Several idempotent publishes of one channel in one script (the outbox relay's rows).
BATCH_SCRIPT = load_lua("django_pulse.broker", "publish_batch.lua", "failover.lua", "frame.lua")

READ_SCRIPT = load_lua("django_pulse.broker", "read.lua", "failover.lua")

CONNECT_TIMEOUT = 3.0
# The subscriber connection sends PING after this many idle seconds and is declared dead (and reconnected)
# after three times as long without any byte from Redis.
HEALTH_INTERVAL = 5.0
SUBSCRIBE_BATCH = 500


def _serial_of(reply: Any) -> int:
    """The serial in a publish script's reply: the serial, or ``[serial, repeated]`` for an idempotent publish."""
    return int(reply[0]) if isinstance(reply, list) else int(reply)


# What a failed Redis call raises: redis-py's errors, a socket's, and the cluster client's "no node serves this
# slot" (RedisClusterException is not a RedisError).
_FAILURES = (RedisError, OSError, RedisClusterException)


class RedisBroker(Broker):
    """The broker for several server processes sharing Redis (``PULSE["REDIS_URL"]``)."""

    shared = True
    # Whether a batch of publishes of several channels goes out in one pipeline (one round trip); not on a
    # cluster, whose channels live on several masters.
    _batch_in_one_pipeline = True

    # Since when calls fail (None: they succeed), and how many failed.
    _refusing_since: float | None
    _refused: int

    def _unavailable(self, message: str, exc: BaseException, *, published: bool | None = False) -> Unavailable:
        """The error callers (and through them HTTP and WebSocket clients) see: no host, port or driver detail,
        which would tell a client where the infrastructure is. The detail goes to the log as one WARNING when
        calls start failing (an outage fails every call: they are counted, not logged), and one when they
        succeed again (``_accepted``)."""
        self.errors += 1
        if self._refusing_since is None:
            self._refusing_since, self._refused = time.monotonic(), 0
            logger.warning("Redis broker: calls fail: %s (%s: %s)", message, type(exc).__name__, exc)
        self._refused += 1
        return Unavailable(message, published=published)

    def _accepted(self) -> None:
        """A call succeeded: if calls were failing, say once that they no longer do."""
        since = self._refusing_since
        if since is not None:
            self._refusing_since = None
            logger.warning(
                "Redis broker: calls succeed again after %.1f s; %d failed meanwhile",
                time.monotonic() - since,
                self._refused,
            )

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        from .._conf import pulse_settings

        super().__init__()
        self.url = url or pulse_settings.REDIS_URL or "redis://127.0.0.1:6379/0"
        self.prefix = keys.check_prefix(prefix if prefix is not None else pulse_settings.REDIS_PREFIX)
        self._bus = f"{self.prefix}:bus:"
        self._bus_bytes = self._bus.encode()
        self.client_name = f"{self.prefix}:sub:{self.process_id}".replace(" ", "_")
        self._refusing_since = None
        self._refused = 0
        self.history_size = pulse_settings.HISTORY_SIZE
        self.history_ttl_ms = int(pulse_settings.HISTORY_TTL * 1000)
        # Entries younger than this stay past HISTORY_SIZE (what a failover's subscribers resume from).
        self.min_retention_ms = int(min(pulse_settings.HISTORY_MIN_RETENTION, pulse_settings.HISTORY_TTL) * 1000)
        # A channel's counter (serial, epoch) expires this long after its last publish or read.
        self.channel_ttl_ms = max(1, int(pulse_settings.CHANNEL_TTL * 1000))
        # The command that broadcasts inside the scripts ("SPUBLISH" for a sharded cluster broker).
        self.publish_command = "PUBLISH"
        # "1": each publish checks whether the master changed since the channel's last publish (a new epoch
        # if so). Costs one INFO inside the script; on when replicas can be promoted (Sentinel).
        self.failover_check = "1" if self.url.startswith(SENTINEL_SCHEME) else ""
        self.wait_replicas = pulse_settings.REDIS_WAIT_REPLICAS
        self.wait_timeout_ms = max(1, int(pulse_settings.REDIS_WAIT_TIMEOUT * 1000))
        self._sync_client: redis_sync.Redis | None = None
        self._sync_lock = threading.Lock()
        self._sync_script: Any = None
        self._sync_read: Any = None
        self._sync_batch: Any = None
        # Per event loop state (rebuilt if the broker is used from another loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: redis_async.Redis | None = None
        self._script: Any = None
        self._read_script: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._guard: asyncio.Task[None] | None = None
        self._conn: RespConnection | None = None
        self._connected: asyncio.Event | None = None
        # Set while the last connection attempt failed (so subscribers fail fast during an outage).
        self._down: asyncio.Event | None = None
        self._closed = False
        # The topics this process wants and the (un)subscribe confirmations awaited on its pub/sub connection.
        self._subs = Subscriber(sharded=False)
        self._outage = Outage("Redis broker")

    # -- names ------------------------------------------------------------------------------------------

    def redis_channel(self, topic: str) -> str:
        """The pub/sub channel of ``topic`` (in its channel's hash slot: ``broker.keys``)."""
        return keys.bus_channel(self.prefix, topic)

    def key(self, topic: str, kind: str) -> str:
        """The one naming function of this backend's keys: ``kind`` of the topic's channel (``broker.keys``)."""
        return keys.topic_key(self.prefix, topic, kind)

    def serial_key(self, topic: str) -> str:
        """The hash holding the topic's last serial (field ``s``) and epoch (field ``e``)."""
        return self.key(topic, "serial")

    def idempotency_key(self, topic: str, message_id: str) -> str:
        """The record of ``message_id`` published on the topic (its serial), kept for the idempotency window."""
        return self.key(topic, f"idem:{message_id}")

    def history_key(self, topic: str) -> str:
        """The stream of the topic's retained frames; entry ids are ``{serial}-0``."""
        return self.key(topic, "hist")

    # -- publishing -------------------------------------------------------------------------------------

    def _sync(self) -> tuple[redis_sync.Redis, Any]:
        if self._sync_client is None:
            # Sync views publish from several threads at once: the client is published last, with its scripts.
            with self._sync_lock:
                if self._sync_client is None:
                    client = sync_client(
                        self.url,
                        retry=no_retry(),
                        socket_connect_timeout=CONNECT_TIMEOUT,
                        socket_timeout=CONNECT_TIMEOUT,
                        health_check_interval=30,
                    )
                    self._sync_script = client.register_script(PUBLISH_SCRIPT)
                    self._sync_read = client.register_script(READ_SCRIPT)
                    self._sync_batch = client.register_script(BATCH_SCRIPT)
                    self._sync_client = client
        return self._sync_client, self._sync_script

    def _async(self) -> tuple[redis_async.Redis, Any]:
        self._bind_loop()
        assert self._client is not None
        return self._client, self._script

    def _publish_args(
        self, topic: str, head: str, once: tuple[str, int] | None = None
    ) -> tuple[list[str], list[str | int]]:
        keys = [self.serial_key(topic), self.redis_channel(topic), self.history_key(topic)]
        args: list[str | int] = [
            head,
            new_epoch(),
            int(time.time() * 1000),
            self.history_size,
            self.history_ttl_ms,
            topic_channel(topic),
            self.publish_command,
            self.failover_check,
            self.channel_ttl_ms,
            self.min_retention_ms,
            RESUME_LIMIT,
        ]
        if once is not None:
            message_id, window_ms = once
            keys.append(self.idempotency_key(topic, message_id))
            args.append(max(1, int(window_ms)))
        return keys, args

    @contextlib.contextmanager
    def _publishing(self) -> Iterator[None]:
        """Around one publish, sync or async alike: a Redis failure becomes ``Unavailable`` (saying whether the
        message may have been published), and a publish that went through ends a refusal period."""
        try:
            yield
        except _FAILURES as exc:
            message, published = _publish_failed(exc)
            raise self._unavailable(message, exc, published=published) from None
        if self._refusing_since is not None:
            self._accepted()

    async def _apublish(self, topic: str, head: str, once: tuple[str, int] | None) -> Any:
        client, script = self._async()
        keys, args = self._publish_args(topic, head, once)
        with self._publishing():
            if not self.wait_replicas:
                reply = await script(keys=keys, args=args)
            else:
                reply, acked = await self._publish_and_wait(client, keys, args)
                self._replicated(_serial_of(reply), int(acked))
        return reply

    def _publish_sync(self, topic: str, head: str, once: tuple[str, int] | None) -> Any:
        client, script = self._sync()
        keys, args = self._publish_args(topic, head, once)
        with self._publishing():
            if not self.wait_replicas:
                reply = script(keys=keys, args=args)
            else:
                reply, acked = self._publish_and_wait_sync(client, keys, args)
                self._replicated(_serial_of(reply), int(acked))
        return reply

    async def publish_message(self, topic: str, head: str) -> int:
        return int(await self._apublish(topic, head, None))

    def publish_message_sync(self, topic: str, head: str) -> int:
        return int(self._publish_sync(topic, head, None))

    async def publish_once(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        serial, repeat = await self._apublish(topic, head, (message_id, window_ms))
        return int(serial), bool(repeat)

    def publish_once_sync(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        serial, repeat = self._publish_sync(topic, head, (message_id, window_ms))
        return int(serial), bool(repeat)

    def publish_once_batch_sync(
        self, messages: Sequence[tuple[str, str, str]], window_ms: int
    ) -> list[tuple[int, bool]]:
        """One script per channel (``publish_batch.lua``: its messages in order, each once per id), all of them in
        one pipeline: one round trip for the batch instead of one per message."""
        if len(messages) < 2 or (self.wait_replicas and not self._batch_in_one_pipeline):
            # One message (a writer's own row after its commit): the single publish, with no pipeline to build.
            return super().publish_once_batch_sync(messages, window_ms)
        client, _script = self._sync()
        groups: dict[str, list[int]] = {}
        for index, (topic, _head, _id) in enumerate(messages):
            groups.setdefault(topic, []).append(index)
        calls = []
        for topic, indexes in groups.items():
            keys, args = self._publish_args(topic, "")
            keys.extend(self.idempotency_key(topic, messages[i][2]) for i in indexes)
            args.append(max(1, int(window_ms)))
            args.extend(messages[i][1] for i in indexes)
            calls.append((keys, args))
        with self._publishing():
            replies = self._run_batch_sync(client, calls)
        results: list[tuple[int, bool]] = [(0, False)] * len(messages)
        for indexes, reply in zip(groups.values(), replies, strict=True):
            for k, index in enumerate(indexes):
                results[index] = (int(reply[2 * k]), bool(reply[2 * k + 1]))
        return results

    def _run_batch_sync(self, client: Any, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        """The batch script's reply for each ``(keys, args)`` of ``calls``, with ``WAIT`` after them when
        replicas must confirm."""
        script = self._sync_batch
        if not self._batch_in_one_pipeline:
            return [script(keys=keys, args=args) for keys, args in calls]
        for attempt in range(2):
            try:
                with client.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    if self.wait_replicas:
                        pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                    replies = pipe.execute()
                break
            except NoScriptError:
                # Redis lost its scripts (a restart, SCRIPT FLUSH): nothing of the batch ran.
                if attempt:
                    raise
                client.script_load(BATCH_SCRIPT)
        if self.wait_replicas:
            acked = replies.pop()
            self._replicated(int(replies[-1][-2]), int(acked))
        return list(replies)

    async def _publish_and_wait(self, client: Any, keys: list[str], args: list[str | int]) -> tuple[Any, Any]:
        """The publish script and ``WAIT`` on one connection of ``client`` (WAIT counts the replicas holding that
        connection's last write): (the script's reply, replicas that acknowledged)."""
        async with client.pipeline(transaction=False) as pipe:
            await self._script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, acked = await pipe.execute()
        return reply, acked

    def _publish_and_wait_sync(self, client: Any, keys: list[str], args: list[str | int]) -> tuple[Any, Any]:
        with client.pipeline(transaction=False) as pipe:
            self._sync_script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, acked = pipe.execute()
        return reply, acked

    def _replicated(self, serial: int, acked: int) -> int:
        if acked < self.wait_replicas:
            raise self._unavailable(
                "Redis replicas did not confirm the message in time: it was published and its id is consumed "
                "(a retry with the same id is not delivered again), but a failover may still lose it.",
                RedisError(f"WAIT: {acked} of {self.wait_replicas} replicas acknowledged serial {serial}"),
                published=True,
            )
        return serial

    def _read_args(self, topic: str, after: int, before: int | None, limit: int) -> tuple[list[str], list[str | int]]:
        keys = [self.serial_key(topic), self.history_key(topic)]
        args: list[str | int] = [
            new_epoch(),
            max(0, int(after)),
            "" if before is None else max(1, int(before)),
            max(0, int(limit)),
            self.channel_ttl_ms,
            self.failover_check,
        ]
        return keys, args

    def _history_read(self, reply: Any) -> HistoryRead:
        serial, epoch, entries, fork_epoch, fork_serial = reply
        horizon = int(time.time() * 1000) - self.history_ttl_ms
        frames: list[tuple[int, str]] = []
        for entry_id, fields in entries:  # newest first
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            if int(values[b"t"]) < horizon:
                break
            frames.append((int(entry_id.split(b"-", 1)[0]), values[b"f"].decode()))
        frames.reverse()
        fork = (_text(fork_epoch), int(fork_serial)) if fork_epoch and fork_serial else None
        return HistoryRead(int(serial or 0), _text(epoch), frames, fork)

    async def history(self, topic: str, *, after: int = 0, before: int | None = None, limit: int = 0) -> HistoryRead:
        self._async()
        keys, args = self._read_args(topic, after, before, limit)
        try:
            reply = await self._read_script(keys=keys, args=args)
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None
        return self._history_read(reply)

    def history_sync(self, topic: str, *, after: int = 0, before: int | None = None, limit: int = 0) -> HistoryRead:
        self._sync()
        keys, args = self._read_args(topic, after, before, limit)
        try:
            reply = self._sync_read(keys=keys, args=args)
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None
        return self._history_read(reply)

    async def broadcast(self, topic: str, text: str) -> None:
        client, _ = self._async()
        try:
            await client.execute_command(self.publish_command, self.redis_channel(topic), text)  # type: ignore[no-untyped-call]
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None

    async def deliver(self, topic: str, text: str) -> bool:
        client, _ = self._async()
        try:
            receivers = await client.execute_command(self.publish_command, self.redis_channel(topic), text)  # type: ignore[no-untyped-call]
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None
        return int(receivers) > 0

    async def put_once(self, key: str, value: str, ttl: float) -> None:
        client, _ = self._async()
        try:
            await client.set(f"{self.prefix}:once:{key}", value, px=max(1, int(ttl * 1000)))
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None

    async def take_once(self, key: str) -> str | None:
        client, _ = self._async()
        try:
            value = await client.getdel(f"{self.prefix}:once:{key}")
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def broadcast_sync(self, topic: str, text: str) -> None:
        client, _ = self._sync()
        try:
            client.execute_command(self.publish_command, self.redis_channel(topic), text)  # type: ignore[no-untyped-call]
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None

    async def last_serial(self, topic: str) -> int:
        client, _ = self._async()
        try:
            value = await client.hget(self.serial_key(topic), "s")
        except _FAILURES as exc:
            raise self._unavailable("Redis is unreachable.", exc) from None
        return int(value or 0)

    # -- the subscriber connection ----------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        # First use, or a new event loop (tests): state bound to the old loop is dropped, not awaited.
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.abort()
        self._loop = loop
        self._client = async_client(
            self.url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT, retry=async_no_retry()
        )
        self._script = self._client.register_script(PUBLISH_SCRIPT)
        self._read_script = self._client.register_script(READ_SCRIPT)
        # The async client's connections belong to this loop: close them when the loop winds down (its tasks
        # are cancelled then), so nothing is left for the garbage collector to warn about.
        self._guard = close_with_loop(self._client)
        self._conn = None
        self._runner = None
        if self._watcher is not None:
            self._watcher.cancel()
        self._watcher = None
        self._connected = asyncio.Event()
        self._down = asyncio.Event()
        self._subs.clear()

    def _ensure_running(self) -> asyncio.Event:
        self._bind_loop()
        assert self._connected is not None
        if self._runner is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._runner = loop.create_task(self._run(), name="django-pulse redis subscriber")
            if self.url.startswith(SENTINEL_SCHEME):
                self._watcher = loop.create_task(self._watch_master(), name="django-pulse sentinel watcher")
        return self._connected

    async def _wait_connected(self) -> RespConnection:
        connected = self._ensure_running()
        down = self._down
        assert down is not None
        if self._conn is None and not down.is_set():
            # First use: wait for the first attempt to succeed or fail.
            waits = [asyncio.ensure_future(connected.wait()), asyncio.ensure_future(down.wait())]
            try:
                await asyncio.wait(waits, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
        if self._conn is None:
            raise Unavailable("Redis is unreachable; cannot subscribe.")
        return self._conn

    async def subscribe(self, topic: str) -> None:
        conn = await self._wait_connected()
        channel = self.redis_channel(topic).encode()
        self._subs.topics.add(topic)
        future = self._subs.expect(self._subs.sub_waiters, channel)
        conn.write(b"SUBSCRIBE", channel)
        try:
            await self._subs.confirmed(future, CONNECT_TIMEOUT)
        except BaseException:
            self._subs.topics.discard(topic)
            if self._conn is conn:
                conn.write(b"UNSUBSCRIBE", channel)
            raise

    async def unsubscribe(self, topic: str) -> None:
        self._subs.topics.discard(topic)
        conn = self._conn
        if conn is None or self._loop is not asyncio.get_running_loop():
            return  # not subscribed anywhere now; a reconnect subscribes only the topics still wanted
        channel = self.redis_channel(topic).encode()
        await self._subs.unsubscribe(channel, lambda: conn.write(b"UNSUBSCRIBE", channel), CONNECT_TIMEOUT)

    async def _run(self) -> None:
        ever_connected = False
        while not self._closed:
            opened: RespConnection | None = None
            try:
                conn = opened = await RespConnection.open(self.url, CONNECT_TIMEOUT)
                await asyncio.wait_for(conn.call("CLIENT", "SETNAME", self.client_name), CONNECT_TIMEOUT)
            except CONNECT_ERRORS as exc:
                if opened is not None:
                    opened.abort()  # it broke between connecting and naming itself: no socket left behind
                self.errors += 1
                assert self._down is not None
                self._outage.lost(f"cannot connect to {_safe_url(self.url)}: {exc}")
                self._down.set()
                await self._outage.pause()
                continue
            assert self._down is not None
            self._down.clear()
            channels = [self.redis_channel(topic).encode() for topic in sorted(self._subs.topics)]
            if ever_connected:
                self.reconnects += 1
                self._subs.resubscribed = set(channels)
            self._outage.back(f"re-subscribing {len(channels)} topics")
            for start in range(0, len(channels), SUBSCRIBE_BATCH):
                conn.write(b"SUBSCRIBE", *channels[start : start + SUBSCRIBE_BATCH])
            ever_connected = True
            self._conn = conn
            assert self._connected is not None
            self._connected.set()
            health = asyncio.get_running_loop().create_task(self._health(conn))
            try:
                await self._subs.read(conn, self.delivery, self._bus_bytes)
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                if not self._closed:
                    self._outage.lost(f"lost its subscriber connection ({exc})")
            finally:
                health.cancel()
                self._conn = None
                self._connected.clear()
                conn.abort()
                self._subs.fail_waiters()

    async def _watch_master(self) -> None:
        """Under Sentinel: listen to ``+switch-master`` on one sentinel at a time, so this process moves its
        subscriber connection to a new master as soon as the sentinels name it (not at its next retry)."""
        service, sentinels = sentinel_endpoints(self.url)
        turn = 0
        while not self._closed:
            endpoint = sentinels[turn % len(sentinels)]
            turn += 1
            try:
                conn = await RespConnection.connect(endpoint, CONNECT_TIMEOUT)
            except CONNECT_ERRORS:
                await asyncio.sleep(FAST_RETRY if turn % len(sentinels) else MAX_BACKOFF)
                continue
            try:
                conn.write(b"SUBSCRIBE", b"+switch-master")
                while True:
                    reply = await conn.read()
                    if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                        # "<service> <old ip> <old port> <new ip> <new port>"
                        parts = reply[2].decode(errors="replace").split()
                        if len(parts) == 5 and parts[0] == service:
                            self._master_switched((parts[1], int(parts[2])), (parts[3], int(parts[4])))
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                conn.abort()

    def _master_switched(self, old: tuple[str, int], new: tuple[str, int]) -> None:
        logger.warning("Redis Sentinel: the master moved from %s:%d to %s:%d", *old, *new)
        conn = self._conn
        if conn is not None and conn.address != new:
            conn.abort()  # subscribed to the old master: it hears nothing published on the new one
        self._outage.wake()

    async def _health(self, conn: RespConnection) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            idle = time.monotonic() - conn.last_rx
            if idle > 3 * HEALTH_INTERVAL:
                logger.warning("Redis broker: no reply for %.0f s; reconnecting", idle)
                conn.abort()
                return
            if idle > HEALTH_INTERVAL:
                conn.write(b"PING")

    # -- shutdown ---------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        for task in (self._runner, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._runner = self._watcher = None
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await guard
        if self._sync_client is not None:
            self._sync_client.close()

    def close_nowait(self) -> None:
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            for task in (self._runner, self._watcher, self._guard):
                if task is not None:
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(task.cancel)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.abort()
        if self._sync_client is not None:
            self._sync_client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _publish_failed(exc: BaseException) -> tuple[str, bool | None]:
    """What a failed publish tells its caller, and whether it was published (``Unavailable.published``). A refused
    connection means nothing was sent; a connection that broke or timed out after the script was sent (a master
    killed mid-command) leaves the outcome unknown."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
        return "Redis is unreachable; the message was not published.", False
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return "Redis did not confirm the publish; the message may or may not have been delivered.", None
    return "Redis is unreachable; the message was not published.", False


def _safe_url(url: str) -> str:
    """The URL without its password (never log credentials)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}:{parts.port or 6379}"
        return parts._replace(netloc=netloc).geturl()
    return url
