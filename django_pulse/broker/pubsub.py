"""The pub/sub side of the Redis brokers: a bare RESP connection and the ``Subscriber`` both brokers use.

``RedisBroker`` holds one pub/sub connection (``SUBSCRIBE``); ``RedisClusterBroker`` one per shard master
(``SSUBSCRIBE``, sharded pub/sub). What they share is here, once: the connection, the futures waiting for
(un)subscribe confirmations, the channels owed a ``discontinuity`` after a reconnect, and the loop that reads a
connection's replies and hands messages to the hub. What differs is a parameter (``sharded``: the commands and
push kinds) or a hook of ``Subscriber.read`` (the cluster broker's placement of channels on shards).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..exceptions import Unavailable
from . import keys
from .base import Delivery
from .connection import SENTINEL_SCHEME, Endpoint, master_endpoint

__all__ = ["CONNECT_ERRORS", "Outage", "ReplyError", "RespConnection", "Subscriber"]

logger = logging.getLogger("django_pulse.broker")


class ReplyError(Exception):
    """An error reply of Redis (``-ERR ...``), returned by ``RespConnection.read`` as a value."""


class RespConnection:
    """A bare RESP2 connection for pub/sub: write commands, read replies and pushes. Not thread-safe."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_rx = time.monotonic()
        self.address: tuple[str, int] | None = None

    @classmethod
    async def open(cls, target: str, timeout: float) -> RespConnection:
        """A connection to ``target``'s master: the URL's host, or the one the sentinels name now."""
        endpoint = await master_endpoint(target, timeout)
        conn = await cls.connect(endpoint, timeout)
        if target.startswith(SENTINEL_SCHEME):
            # A sentinel may still name a master that has just been demoted: subscribing to it would
            # hear nothing that is published on the new master.
            role = await asyncio.wait_for(conn.call("ROLE"), timeout)
            if not role or role[0] != b"master":
                conn.abort()
                raise ConnectionError(f"{endpoint.host}:{endpoint.port} is not the master (yet)")
        return conn

    @classmethod
    async def connect(cls, endpoint: Endpoint, timeout: float) -> RespConnection:
        """A connection to ``endpoint``, authenticated."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.port, ssl=endpoint.ssl), timeout
        )
        conn = cls(reader, writer)
        conn.address = (endpoint.host, endpoint.port)
        try:
            if endpoint.password:
                args = [endpoint.username, endpoint.password] if endpoint.username else [endpoint.password]
                await asyncio.wait_for(conn.call("AUTH", *args), timeout)
        except BaseException:
            conn.abort()
            raise
        return conn

    def write(self, *args: str | bytes) -> None:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.writer.write(b"".join(out))

    async def call(self, *args: str | bytes) -> Any:
        """One command and its reply (only before subscribing)."""
        self.write(*args)
        reply = await self.read()
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def read(self) -> Any:
        value = await self._read_value()
        self.last_rx = time.monotonic()
        return value

    async def _read_value(self) -> Any:
        line = await self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self._read_value() for _ in range(count)]
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            return (await self.reader.readexactly(size + 2))[:-2]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            return ReplyError(rest.decode(errors="replace"))
        raise ConnectionError(f"unexpected RESP type {kind!r}")

    def abort(self) -> None:
        transport = self.writer.transport
        if transport is not None:
            transport.abort()


# What opening a pub/sub connection (connect, AUTH, CLIENT SETNAME) may raise.
CONNECT_ERRORS = (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError, ReplyError)

Waiters = dict[bytes, deque[asyncio.Future[None]]]

# While Redis is down, the subscriber side tries again every FAST_RETRY seconds for FAST_RETRY_WINDOW seconds
# (a failover completes within that: the sooner a process hears the new master, the shorter its subscribers'
# gap), then every MAX_BACKOFF seconds.
FAST_RETRY = 0.25
FAST_RETRY_WINDOW = 30.0
MAX_BACKOFF = 5.0


class Outage:
    """The state of a broker's subscriber side for the log and the retries: one WARNING when it breaks, one
    when it is back (with how long it took), nothing per failed attempt in between; when to try again; and a
    ``wake()`` that ends the wait at once (a topology change: the new master is known)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.since: float | None = None
        self.attempts = 0
        self._wake: asyncio.Event | None = None

    def lost(self, reason: object) -> None:
        """The connection broke (or the first one could not be made): logged once."""
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("%s: %s; reconnecting", self.name, reason)
        else:
            logger.debug("%s: %s; still reconnecting", self.name, reason)

    def back(self, detail: str) -> None:
        """Connected again: logged once, with the outage's length and the attempts it took."""
        if self.since is not None:
            logger.warning(
                "%s: back after %.1f s (%d attempts); %s",
                self.name,
                time.monotonic() - self.since,
                self.attempts,
                detail,
            )
        self.since, self.attempts = None, 0

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def pause(self) -> None:
        """Wait before the next attempt (shorter while the outage is young), or until ``wake()``."""
        self.attempts += 1
        young = self.since is None or time.monotonic() - self.since < FAST_RETRY_WINDOW
        woken = self._wake = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), FAST_RETRY if young else MAX_BACKOFF)
        finally:
            self._wake = None


class Subscriber:
    """The subscriptions of one broker: the topics this process wants, the futures waiting for (un)subscribe
    confirmations per Redis channel, and the channels re-subscribed after a reconnect that still owe their
    subscribers a discontinuity.

    ``sharded``: the Redis Cluster's sharded pub/sub (``SSUBSCRIBE``, ``SUNSUBSCRIBE``, ``smessage``), where a
    channel is subscribed by one command on one shard, so the confirmation that answers a ``subscribe()`` is also
    the channel's re-subscription (it owes no discontinuity after it). Else plain pub/sub, where a reconnect
    re-subscribes every channel in batches ahead of any new ``subscribe()``.
    """

    def __init__(self, *, sharded: bool) -> None:
        self.sharded = sharded
        prefix = b"s" if sharded else b""  # the push kinds of sharded pub/sub: smessage, ssubscribe, sunsubscribe
        self._message = prefix + b"message"
        self._subscribed = prefix + b"subscribe"
        self._unsubscribed = prefix + b"unsubscribe"
        self.topics: set[str] = set()
        self.sub_waiters: Waiters = {}
        self.unsub_waiters: Waiters = {}
        self.resubscribed: set[bytes] = set()

    def clear(self) -> None:
        """Forget the waiters and owed discontinuities (a new event loop: they belonged to the old one)."""
        self.sub_waiters.clear()
        self.unsub_waiters.clear()
        self.resubscribed.clear()

    @staticmethod
    def expect(table: Waiters, channel: bytes) -> asyncio.Future[None]:
        """A future answered by ``channel``'s next confirmation of that kind (``table``)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        table.setdefault(channel, deque()).append(future)
        return future

    @staticmethod
    def _answer(table: Waiters, channel: bytes) -> bool:
        """Answer the oldest future waiting in ``table`` for ``channel``; False when none waits."""
        waiters = table.get(channel)
        if not waiters:
            return False
        waiter = waiters.popleft()
        if not waiters:
            del table[channel]
        if not waiter.done():
            waiter.set_result(None)
        return True

    @staticmethod
    async def confirmed(future: asyncio.Future[None], timeout: float) -> None:
        """Wait for a subscription's confirmation; ``Unavailable`` when Redis does not confirm it in time."""
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise Unavailable("Redis did not confirm a subscription in time.") from None

    async def unsubscribe(self, channel: bytes, send: Callable[[], None], timeout: float) -> None:
        """``send()`` the unsubscribe command of ``channel`` and wait (at most ``timeout``) for its confirmation."""
        future = self.expect(self.unsub_waiters, channel)
        send()
        with contextlib.suppress(TimeoutError, Unavailable):
            await asyncio.wait_for(asyncio.shield(future), timeout)

    def fail_waiters(self) -> None:
        """The connection is lost: every future waiting for a confirmation fails with ``Unavailable``."""
        for table in (self.sub_waiters, self.unsub_waiters):
            for waiters in table.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(Unavailable("Redis connection lost."))
                        waiter.exception()
            table.clear()

    async def read(
        self,
        conn: RespConnection,
        hub: Delivery,
        bus: bytes,
        *,
        owns: Callable[[bytes], bool] | None = None,
        subscribed: Callable[[bytes], bool] | None = None,
        refused: Callable[[ReplyError], None] | None = None,
        dropped: Callable[[bytes], None] | None = None,
    ) -> None:
        """Read ``conn``'s replies until it breaks: messages on the ``bus`` channels go to ``hub``, confirmations
        answer their futures, a re-subscribed channel's first confirmation tells the hub of the gap.

        The hooks (a broker with several connections): ``owns(channel)``, whether this connection holds the
        channel now (False: its messages are ignored); ``subscribed(channel)``, told of each subscribe confirmation
        (False: ignore it, the channel moved on meanwhile); ``refused(error)``, an
        error reply (else logged); ``dropped(channel)``, an unsubscribe nobody asked for (the node gave the
        channel away)."""
        bus_len = len(bus)
        bus_topic = keys.bus_topic
        while True:
            reply = await conn.read()
            if isinstance(reply, ReplyError):
                if refused is not None:
                    refused(reply)
                else:
                    logger.error("Redis refused a pub/sub command: %s", reply)
                continue
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == self._message and len(reply) == 3:
                channel, data = reply[1], reply[2]
                if channel.startswith(bus) and (owns is None or owns(channel)):
                    hub.dispatch(bus_topic(channel[bus_len:]), data.decode())
            elif kind == self._subscribed:
                channel = reply[1]
                if subscribed is not None and not subscribed(channel):
                    continue
                if self._answer(self.sub_waiters, channel):
                    if self.sharded:
                        self.resubscribed.discard(channel)
                elif channel in self.resubscribed:
                    self.resubscribed.discard(channel)
                    hub.discontinuity(bus_topic(channel[bus_len:]), "broker_unavailable")
            elif kind == self._unsubscribed:
                channel = reply[1]
                if not self._answer(self.unsub_waiters, channel) and dropped is not None:
                    dropped(channel)
