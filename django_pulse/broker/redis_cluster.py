"""The Redis Cluster broker: the Redis broker's scripts on the channel's shard, sharded pub/sub per shard.

``PULSE["REDIS_CLUSTER"]`` (docs/scaling.md, "Redis Cluster") selects it. What differs from ``RedisBroker``:

- **Publishing** runs the same ``publish.lua`` through redis-py's cluster client, on the master of the
  channel's hash slot (every key of a channel shares the slot: ``broker.keys``), and the script broadcasts
  with ``SPUBLISH`` on the channel's shard channel, which only that shard carries. The script's failover check
  is on: the first publish of a channel on a promoted replica starts a new epoch (as under Sentinel). With
  ``REDIS_WAIT_REPLICAS``, the script and ``WAIT`` go on one connection of that master (redis-py's cluster
  pipeline would send the keyless ``WAIT`` anywhere); MOVED and ASK are followed there (a node that answers
  MOVED or ASK ran nothing).
- **Receiving**: one pub/sub connection per shard master (``_Shard``), each ``SSUBSCRIBE``d to the channels
  of its slots that this process wants (one ``SSUBSCRIBE`` per channel, since a command's channels must
  share a slot). The slot map comes from ``CLUSTER SLOTS`` (any node that answers), re-read every
  ``TOPOLOGY_INTERVAL`` s and at once when a shard connection breaks, a node answers ``-MOVED``, or a node
  drops a channel by itself (Redis sends ``sunsubscribe`` when its slot leaves the node). Each channel that
  had to move (failover: the replica promoted; resharding) is ``SSUBSCRIBE``d on its new master and, once
  confirmed, its local subscribers get a ``discontinuity`` (``broker_unavailable``), as after a reconnect
  to one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisError

from ..exceptions import Unavailable
from .connection import CLUSTER_TARGET, async_no_retry, cluster_config, no_retry, node_endpoint
from .pubsub import CONNECT_ERRORS, Outage, ReplyError, RespConnection, Subscriber
from .redis import CONNECT_TIMEOUT, RedisBroker

__all__ = ["RedisClusterBroker"]

logger = logging.getLogger("django_pulse.broker")

SLOTS = 16384
# Seconds between two readings of the slot map while nothing happens (a failover or a slot migration that no
# connection of this process noticed is found by then).
TOPOLOGY_INTERVAL = 5.0
# Redirections a publish with WAIT follows before it gives up (each one means the node ran nothing).
MAX_REDIRECTS = 5

Address = tuple[str, int]


class _Shard:
    """One pub/sub connection to a shard master and the channels ``SSUBSCRIBE``d on it."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.conn: RespConnection | None = None
        self.channels: set[bytes] = set()
        # SSUBSCRIBEs sent and not answered yet, in order: an error reply answers the oldest.
        self.pending: deque[bytes] = deque()
        self.task: asyncio.Task[None] | None = None
        self.opened: asyncio.Future[None] | None = None

    @property
    def alive(self) -> bool:
        return self.conn is not None and self.task is not None and not self.task.done()

    def ssubscribe(self, channel: bytes) -> None:
        assert self.conn is not None
        self.channels.add(channel)
        self.pending.append(channel)
        self.conn.write(b"SSUBSCRIBE", channel)

    def sunsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        if self.conn is not None:
            self.conn.write(b"SUNSUBSCRIBE", channel)

    def confirm(self, channel: bytes) -> None:
        """``channel``'s SSUBSCRIBE was answered."""
        with contextlib.suppress(ValueError):
            self.pending.remove(channel)


class RedisClusterBroker(RedisBroker):
    """The broker for server processes sharing a Redis Cluster (``PULSE["REDIS_CLUSTER"]``)."""

    # A batch's channels live on several masters: one script per channel, each routed to its slot's master.
    _batch_in_one_pipeline = False

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        super().__init__(url or CLUSTER_TARGET, prefix)
        self.publish_command = "SPUBLISH"
        # A replica can be promoted: a publish on a new master starts a new epoch of the channel (publish.lua).
        self.failover_check = "1"
        self._subs = Subscriber(sharded=True)
        self._outage = Outage("Redis cluster broker")
        self._owners: list[Address | None] = [None] * SLOTS
        self._known: list[Address] = []
        self._shards: dict[Address, _Shard] = {}
        self._placement: dict[bytes, _Shard] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._dirty: asyncio.Event | None = None
        self._mapped: asyncio.Event | None = None
        self._nodes: dict[Address, Any] = {}
        self._node_guards: list[asyncio.Task[None]] = []
        self._sync_nodes: dict[Address, Any] = {}

    # -- publishing with WAIT: the script and WAIT on one connection of the slot's master -------------------

    def _slot(self, key: str) -> int:
        return int(key_slot(key.encode()))

    async def _publish_and_wait(self, client: Any, keys: list[str], args: list[str | int]) -> tuple[Any, Any]:
        slot = self._slot(keys[0])
        asking = False
        node = client.get_node_from_key(keys[0]) if client.get_default_node() else None
        if node is None:
            await client.initialize()
            node = client.get_node_from_key(keys[0])
        address: Address = (node.host, node.port)
        for _attempt in range(MAX_REDIRECTS):
            redis_node = self._node_client(address)
            try:
                async with redis_node.pipeline(transaction=False) as pipe:
                    if asking:
                        pipe.execute_command("ASKING")
                    await self._script(keys=keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                    replies = await pipe.execute()
            except MovedError as exc:
                asking, address = False, (exc.host, int(exc.port))
                await client.nodes_manager.initialize()
                continue
            except AskError as exc:
                asking, address = True, (exc.host, int(exc.port))
                continue
            except RedisError:
                # The slot map may be stale (a failover): the cluster client reads it again on its next command.
                client._initialize = True
                raise
            return replies[-2], replies[-1]
        raise RedisError(f"slot {slot}: still redirected after {MAX_REDIRECTS} attempts")

    def _publish_and_wait_sync(self, client: Any, keys: list[str], args: list[str | int]) -> tuple[Any, Any]:
        asking = False
        node = client.get_node_from_key(keys[0])
        address: Address = (node.host, node.port)
        for _attempt in range(MAX_REDIRECTS):
            redis_node = self._sync_node_client(address)
            try:
                with redis_node.pipeline(transaction=False) as pipe:
                    if asking:
                        pipe.execute_command("ASKING")
                    self._sync_script(keys=keys, args=args, client=pipe)
                    pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                    replies = pipe.execute()
            except MovedError as exc:
                asking, address = False, (exc.host, int(exc.port))
                client.nodes_manager.initialize()
                continue
            except AskError as exc:
                asking, address = True, (exc.host, int(exc.port))
                continue
            except RedisError:
                client.nodes_manager.initialize()
                raise
            return replies[-2], replies[-1]
        raise RedisError(f"still redirected after {MAX_REDIRECTS} attempts")

    def _node_client(self, address: Address) -> Any:
        client = self._nodes.get(address)
        if client is None:
            import redis.asyncio as redis_async

            from .._redis import close_with_loop

            client = self._nodes[address] = redis_async.Redis(**_node_options(address), retry=async_no_retry())
            self._node_guards.append(close_with_loop(client))
        return client

    def _sync_node_client(self, address: Address) -> Any:
        client = self._sync_nodes.get(address)
        if client is None:
            with self._sync_lock:
                return self._sync_nodes.get(address) or self._new_sync_node_client(address)
        return client

    def _new_sync_node_client(self, address: Address) -> Any:
        import redis as redis_sync

        client = self._sync_nodes[address] = redis_sync.Redis(**_node_options(address), retry=no_retry())
        return client

    # -- the slot map -------------------------------------------------------------------------------------------

    async def _read_slots(self) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers with every slot served; ConnectionError if
        none does."""
        config = cluster_config()
        assert config is not None
        candidates = list(dict.fromkeys([*self._known, *config.nodes]))
        last: BaseException | None = None
        for host, port in candidates:
            try:
                conn = await RespConnection.connect(node_endpoint(host, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ReplyError) as exc:
                last = exc
                continue
            try:
                reply = await asyncio.wait_for(conn.call("CLUSTER", "SLOTS"), CONNECT_TIMEOUT)
            except CONNECT_ERRORS as exc:
                last = exc
                continue
            finally:
                conn.abort()
            owners: list[Address | None] = [None] * SLOTS
            known: list[Address] = []
            for start, end, master, *replicas in reply:
                address = (master[0].decode() or host, int(master[1]))
                owners[int(start) : int(end) + 1] = [address] * (int(end) - int(start) + 1)
                known.append(address)
                known.extend((r[0].decode() or host, int(r[1])) for r in replicas)
            if any(owner is None for owner in owners):
                last = ConnectionError(f"{host}:{port} reports slots without a master")
                continue
            self._owners = owners
            self._known = list(dict.fromkeys(known))
            assert self._mapped is not None
            self._mapped.set()
            return
        raise ConnectionError(f"no node of the cluster serves every slot: {last!r}")

    def _owner(self, channel: bytes) -> Address:
        owner = self._owners[int(key_slot(channel))]
        assert owner is not None
        return owner

    # -- shards -------------------------------------------------------------------------------------------------

    async def _shard(self, address: Address) -> _Shard:
        """The open pub/sub connection to ``address``; opened if needed (``Unavailable`` if it cannot be)."""
        shard = self._shards.get(address)
        if shard is None or (shard.task is not None and shard.task.done()):
            shard = self._shards[address] = _Shard(address)
            shard.opened = asyncio.get_running_loop().create_future()
            shard.task = asyncio.get_running_loop().create_task(
                self._run_shard(shard), name=f"django-pulse redis shard {address[0]}:{address[1]}"
            )
        assert shard.opened is not None
        try:
            await asyncio.wait_for(asyncio.shield(shard.opened), CONNECT_TIMEOUT * 2)
        except (TimeoutError, OSError, ConnectionError, ReplyError, asyncio.IncompleteReadError) as exc:
            raise Unavailable(f"Redis shard unreachable: {exc!r}") from None
        return shard

    async def _run_shard(self, shard: _Shard) -> None:
        assert shard.opened is not None
        try:
            conn = await RespConnection.connect(node_endpoint(*shard.address), CONNECT_TIMEOUT)
            await asyncio.wait_for(conn.call("CLIENT", "SETNAME", self.client_name), CONNECT_TIMEOUT)
        except CONNECT_ERRORS as exc:
            self.errors += 1
            if not shard.opened.done():
                shard.opened.set_exception(ConnectionError(f"{shard.address}: {exc!r}"))
                shard.opened.exception()
            self._orphan(shard)
            return
        shard.conn = conn
        shard.opened.set_result(None)
        health = asyncio.get_running_loop().create_task(self._health(conn))
        try:
            await self._read_shard(shard, conn)
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
            if not self._closed:
                self._outage.lost(f"lost its connection to shard {shard.address[0]}:{shard.address[1]} ({exc})")
        finally:
            health.cancel()
            conn.abort()
            shard.conn = None
            self._orphan(shard)

    def _orphan(self, shard: _Shard) -> None:
        """``shard`` is gone: its channels are re-placed (on the new owner of their slot) by the supervisor."""
        if self._shards.get(shard.address) is shard:
            del self._shards[shard.address]
        for channel in shard.channels:
            if self._placement.get(channel) is shard:
                del self._placement[channel]
                self._subs.resubscribed.add(channel)
        shard.channels.clear()
        shard.pending.clear()
        if not self._closed and self._dirty is not None:
            self._dirty.set()

    async def _read_shard(self, shard: _Shard, conn: RespConnection) -> None:
        def owns(channel: bytes) -> bool:
            return self._placement.get(channel) is shard

        def subscribed(channel: bytes) -> bool:
            shard.confirm(channel)
            return owns(channel)

        def refused(reply: ReplyError) -> None:
            # An SSUBSCRIBE refused: MOVED (the slot left this node), CLUSTERDOWN, ... Re-placed by the
            # supervisor after it has read the slot map again.
            failed = shard.pending.popleft() if shard.pending else None
            logger.warning("Redis shard %s:%d refused SSUBSCRIBE: %s", *shard.address, reply)
            if failed is not None and owns(failed):
                self._unplace(shard, failed)
            assert self._dirty is not None
            self._dirty.set()

        def dropped(channel: bytes) -> None:
            if owns(channel):
                # Not asked for: the node gave the channel's slot away (resharding, or it became a replica).
                self._unplace(shard, channel)
                assert self._dirty is not None
                self._dirty.set()

        await self._subs.read(
            conn, self.delivery, self._bus_bytes, owns=owns, subscribed=subscribed, refused=refused, dropped=dropped
        )

    def _unplace(self, shard: _Shard, channel: bytes) -> None:
        """``channel`` is no longer held on ``shard``: the supervisor places it again, and its subscribers get a
        discontinuity once it is."""
        del self._placement[channel]
        shard.channels.discard(channel)
        self._subs.resubscribed.add(channel)

    # -- the supervisor: every wanted channel subscribed on the master of its slot --------------------------

    def _bind_loop(self) -> None:
        if self._loop is asyncio.get_running_loop():
            return
        super()._bind_loop()
        for shard in self._shards.values():
            if shard.conn is not None:
                with contextlib.suppress(Exception):
                    shard.conn.abort()
        self._shards.clear()
        self._placement.clear()
        self._nodes.clear()
        self._node_guards = []
        self._supervisor = None
        self._dirty = asyncio.Event()
        self._mapped = asyncio.Event()

    def _ensure_running(self) -> asyncio.Event:
        self._bind_loop()
        assert self._connected is not None
        if self._supervisor is None and not self._closed:
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name="django-pulse redis cluster subscriber"
            )
        return self._connected

    async def _supervise(self) -> None:
        assert self._dirty is not None and self._down is not None and self._connected is not None
        outage = self._outage
        while not self._closed:
            try:
                await self._read_slots()
                moved = await self._place_all()
            except Exception as exc:  # a node down, a slot map being rewritten: try again, never stop
                self.errors += 1
                outage.lost(exc)
                self._down.set()
                self._connected.clear()
                await outage.pause()
                continue
            outage.back(f"{moved} channels subscribed on their new shard")
            self._down.clear()
            self._connected.set()
            self._dirty.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), TOPOLOGY_INTERVAL)

    async def _place_all(self) -> int:
        """SSUBSCRIBE every wanted channel on its slot's master (where it is not already), SUNSUBSCRIBE it where
        it no longer belongs, close shards left without channels; the number of channels placed anew. Raises if
        a master cannot be reached."""
        moved = 0
        for topic in sorted(self._subs.topics):
            channel = self.redis_channel(topic).encode()
            owner = self._owner(channel)
            current = self._placement.get(channel)
            if current is not None and current.address == owner and current.alive:
                continue
            if current is not None:
                del self._placement[channel]
                current.sunsubscribe(channel)
                self._subs.resubscribed.add(channel)
            shard = await self._shard(owner)
            self._placement[channel] = shard
            shard.ssubscribe(channel)
            moved += 1
        if moved:
            self.reconnects += 1
        for address, shard in list(self._shards.items()):
            if not shard.channels and not shard.pending and shard.task is not None:
                del self._shards[address]
                shard.task.cancel()
        return moved

    async def _wait_connected(self) -> RespConnection:
        raise NotImplementedError  # the cluster broker has one connection per shard (``_shard``)

    async def subscribe(self, topic: str) -> None:
        self._ensure_running()
        assert self._mapped is not None and self._down is not None
        if not self._mapped.is_set():
            waits = [asyncio.ensure_future(self._mapped.wait()), asyncio.ensure_future(self._down.wait())]
            try:
                await asyncio.wait(waits, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()
            if not self._mapped.is_set():
                raise Unavailable("Redis Cluster is unreachable; cannot subscribe.")
        channel = self.redis_channel(topic).encode()
        self._subs.topics.add(topic)
        future = self._subs.expect(self._subs.sub_waiters, channel)
        try:
            shard = self._placement.get(channel)
            if shard is None or not shard.alive:
                shard = await self._shard(self._owner(channel))
                self._placement[channel] = shard
            shard.ssubscribe(channel)
            await self._subs.confirmed(future, CONNECT_TIMEOUT)
        except BaseException:
            self._subs.topics.discard(topic)
            waiters = self._subs.sub_waiters.get(channel)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._subs.sub_waiters[channel]
            placed = self._placement.pop(channel, None)
            if placed is not None:
                placed.sunsubscribe(channel)
            raise

    async def unsubscribe(self, topic: str) -> None:
        self._subs.topics.discard(topic)
        channel = self.redis_channel(topic).encode()
        shard = self._placement.pop(channel, None)
        self._subs.resubscribed.discard(channel)
        if shard is None or shard.conn is None or self._loop is not asyncio.get_running_loop():
            return
        await self._subs.unsubscribe(channel, lambda: shard.sunsubscribe(channel), CONNECT_TIMEOUT)

    def shard_connections(self) -> dict[Address, int]:
        """Shard master -> channels this process holds SSUBSCRIBEd there (one connection per shard)."""
        return {address: len(shard.channels) for address, shard in self._shards.items() if shard.alive}

    # -- shutdown -----------------------------------------------------------------------------------------------

    def _tasks(self) -> list[asyncio.Task[None]]:
        tasks = [shard.task for shard in self._shards.values() if shard.task is not None] + self._node_guards
        if self._supervisor is not None:
            tasks.append(self._supervisor)
        return tasks

    async def aclose(self) -> None:
        self._closed = True
        tasks = self._tasks()
        self._supervisor = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self._sync_nodes.values():
            client.close()
        await super().aclose()

    def close_nowait(self) -> None:
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            for task in self._tasks():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(task.cancel)
        for shard in self._shards.values():
            if shard.conn is not None:
                with contextlib.suppress(Exception):
                    shard.conn.abort()
        for client in self._sync_nodes.values():
            client.close()
        super().close_nowait()


def _node_options(address: Address) -> dict[str, Any]:
    """The options of a client of one cluster node (for a publish with WAIT on the slot's master)."""
    config = cluster_config()
    assert config is not None
    return {
        "host": address[0],
        "port": address[1],
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": CONNECT_TIMEOUT,
        **config.node_kwargs(),
    }
