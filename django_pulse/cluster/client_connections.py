"""Open connections per client id and app, counted for ``MAX_CONNECTIONS_PER_CLIENT`` (one client id cannot
exhaust a server's sockets).

Every authenticated connection (WebSocket or SSE) holds one *slot* of its ``(kbId, clientId)`` while it is
open; a new connection of a client that holds ``MAX_CONNECTIONS_PER_CLIENT`` slots already is refused
(close **4009** ``too_many_connections``).

- In memory (no Redis) the slots are a set per client in this process: the limit is per process.
- With Redis the slots of a client are one hash, ``P:conns:{kbId:clientId}``, slot -> id of the process
  holding the connection, shared by every process. Taking a slot is one script (``client_acquire.lua``):
  count and record atomically, so two processes never both admit the last slot. A connection's end removes
  its slot (``client_release.lua``, only if its process still holds it). So that a ``kill -9``'d process does
  not hold its slots for ever (a bare INCR/DECR counter would), each process records its slots in
  ``P:procconns:{processId}`` *before* taking them, and the live processes' sweep after a dead process
  (``cluster.liveness``, the same sweep that removes its presence members) releases them: a client's count
  heals at most ``PROCESS_TIMEOUT + PROCESS_HEARTBEAT`` s (15 s by default) after its process's last heartbeat.

A release that fails (Redis unreachable) is retried by the liveness loop. When Redis cannot be reached at
connect time the connection is admitted uncounted (the limit protects against one identity's abuse; it must
not lock everybody out during an outage) and a warning is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from .._conf import pulse_settings
from .._lua import load_lua

if TYPE_CHECKING:
    from ..broker.base import Broker

__all__ = ["ClientConnections", "MemoryClientConnections", "RedisClientConnections", "build_client_connections"]

logger = logging.getLogger("django_pulse.limits")

SWEEP_BATCH = 200

_ACQUIRE = load_lua("django_pulse.cluster", "client_acquire.lua")
_RELEASE = load_lua("django_pulse.cluster", "client_release.lua")


class ClientConnections(ABC):
    """The slots of this process's connections; one instance per process, owned by the runtime.

    Handed the parts it uses, never the runtime: the broker (this process's id) and ``registered``, awaited
    before a slot is taken in a shared store (the liveness loop's ``ensure_started``: slots are recorded under a
    registered process only).
    """

    def __init__(self, *, broker: Broker, registered: Callable[[], Awaitable[None]]) -> None:
        self.broker = broker
        self.registered = registered
        # slot -> (kbId, clientId): the slots this process holds.
        self.local: dict[str, tuple[str, str]] = {}

    @abstractmethod
    async def acquire(self, kb_id: str, client_id: str, slot: str, limit: int) -> bool:
        """Take ``slot`` for a connection of ``client_id``; False (nothing taken) when the client holds ``limit``
        slots already (``limit`` <= 0: no limit). ``Unavailable`` when the shared store cannot be reached."""

    @abstractmethod
    async def release(self, slot: str) -> None:
        """Give ``slot`` back (the connection ended); never raises (a failed release is retried later)."""

    @abstractmethod
    def count_sync(self, kb_id: str, client_id: str) -> int:
        """The slots ``client_id`` holds now (every process with Redis)."""

    async def retry_failed_releases(self) -> None:  # noqa: B027 - nothing fails in memory
        """Release again the slots whose release failed."""

    async def sweep_process(self, dead_process_id: str) -> int:
        """Release the slots of a dead process; the number this call released."""
        return 0

    async def reassert(self) -> None:  # noqa: B027
        """Take this process's slots again (it was wrongly swept as dead), without checking the limit."""

    def close(self) -> None:  # noqa: B027
        """Release connections to the store (settings changed)."""


class MemoryClientConnections(ClientConnections):
    """One process: a set of slots per client."""

    def __init__(self, *, broker: Broker, registered: Callable[[], Awaitable[None]]) -> None:
        super().__init__(broker=broker, registered=registered)
        self._slots: dict[tuple[str, str], set[str]] = {}

    async def acquire(self, kb_id: str, client_id: str, slot: str, limit: int) -> bool:
        held = self._slots.setdefault((kb_id, client_id), set())
        if slot not in held and 0 < limit <= len(held):
            if not held:
                del self._slots[(kb_id, client_id)]
            return False
        held.add(slot)
        self.local[slot] = (kb_id, client_id)
        return True

    async def release(self, slot: str) -> None:
        owner = self.local.pop(slot, None)
        if owner is None:
            return
        held = self._slots.get(owner)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._slots[owner]

    def count_sync(self, kb_id: str, client_id: str) -> int:
        return len(self._slots.get((kb_id, client_id), ()))


class RedisClientConnections(ClientConnections):
    """Slots in Redis, shared by every process, healed by the sweep of dead processes."""

    def __init__(
        self,
        *,
        broker: Broker,
        registered: Callable[[], Awaitable[None]],
        url: str | None = None,
        prefix: str | None = None,
    ) -> None:
        from ..broker.connection import sync_client
        from ..broker.keys import check_prefix

        super().__init__(broker=broker, registered=registered)
        url = url or pulse_settings.REDIS_URL
        if not url:
            raise ValueError("RedisClientConnections needs a Redis URL (PULSE['REDIS_URL'])")
        self.prefix = check_prefix(prefix or pulse_settings.REDIS_PREFIX)
        self.client = sync_client(url, decode_responses=True, health_check_interval=30)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._release = self.client.register_script(_RELEASE)
        self._failed: set[str] = set()

    @property
    def process_id(self) -> str:
        return str(self.broker.process_id)

    def client_key(self, kb_id: str, client_id: str) -> str:
        from ..broker.keys import client_key

        return client_key(self.prefix, kb_id, client_id)

    def index_key(self, process_id: str, kind: str = "procconns") -> str:
        """The set of the slots process ``process_id`` holds (``kind="proc"``: its liveness key)."""
        from ..broker.keys import process_key

        return process_key(self.prefix, kind, process_id)

    def _call(self, fn: Any) -> Any:
        import redis

        from ..exceptions import Unavailable

        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Unavailable("Redis is unreachable.") from exc

    def _acquire_sync(self, key: str, slot: str, limit: int) -> bool:
        pid = self.process_id
        entry = f"{key}\t{slot}"
        index = self.index_key(pid)

        def run() -> bool:
            # Recorded for the sweep first: a slot must never exist that a dead process's sweep cannot find.
            with self.client.pipeline(transaction=False) as pipe:
                pipe.sadd(index, entry)
                pipe.sadd(f"{self.prefix}:procs", pid)
                pipe.execute()
            admitted, _count = cast("list[int]", self._acquire(keys=[key], args=[slot, pid, limit]))
            if not admitted:
                self.client.srem(index, entry)
            return bool(admitted)

        return bool(self._call(run))

    async def acquire(self, kb_id: str, client_id: str, slot: str, limit: int) -> bool:
        # Slots are recorded under this process: it must be registered (and heartbeating) first, or a live
        # process could take it for dead and sweep them.
        await self.registered()
        key = self.client_key(kb_id, client_id)
        work = asyncio.ensure_future(asyncio.to_thread(self._acquire_sync, key, slot, limit))
        try:
            admitted = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The connection is ending while Redis answers: a slot taken now is released by the liveness loop.
            def taken(done: asyncio.Future[bool]) -> None:
                if not done.cancelled() and done.exception() is None and done.result():
                    self.local[slot] = (kb_id, client_id)
                    self._failed.add(slot)

            work.add_done_callback(taken)
            raise
        if admitted:
            self.local[slot] = (kb_id, client_id)
        return admitted

    def _release_sync(self, key: str, slot: str, owner: str) -> None:
        def run() -> None:
            self._release(keys=[key], args=[slot, owner])
            self.client.srem(self.index_key(owner), f"{key}\t{slot}")

        self._call(run)

    async def release(self, slot: str) -> None:
        owner = self.local.get(slot)
        if owner is None:
            return
        try:
            await asyncio.to_thread(self._release_sync, self.client_key(*owner), slot, self.process_id)
        except Exception:
            self._failed.add(slot)
            logger.warning("pulse: could not release a connection slot of %r now; will retry", owner[1])
            return
        self.local.pop(slot, None)

    async def retry_failed_releases(self) -> None:
        for slot in list(self._failed):
            self._failed.discard(slot)
            await self.release(slot)

    def count_sync(self, kb_id: str, client_id: str) -> int:
        return int(self._call(lambda: self.client.hlen(self.client_key(kb_id, client_id))))

    def sweep_process_sync(self, dead_process_id: str) -> int:
        index = self.index_key(dead_process_id)
        released = 0

        def run() -> int:
            nonlocal released
            while True:
                if self.client.exists(self.index_key(dead_process_id, "proc")):
                    return released  # alive after all
                entries = [str(e) for e in cast("list[str] | None", self.client.srandmember(index, SWEEP_BATCH)) or []]
                if not entries:
                    return released
                for entry in entries:
                    key, _tab, slot = entry.rpartition("\t")
                    released += int(self._release(keys=[key], args=[slot, dead_process_id]))
                self.client.srem(index, *entries)

        return int(self._call(run))

    async def sweep_process(self, dead_process_id: str) -> int:
        return await asyncio.to_thread(self.sweep_process_sync, dead_process_id)

    async def reassert(self) -> None:
        pid = self.process_id
        for slot, (kb_id, client_id) in list(self.local.items()):
            key = self.client_key(kb_id, client_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._call, lambda k=key, s=slot: self._reassert_one(k, s, pid))

    def _reassert_one(self, key: str, slot: str, pid: str) -> None:
        self.client.sadd(self.index_key(pid), f"{key}\t{slot}")
        self._acquire(keys=[key], args=[slot, pid, 0])

    def close(self) -> None:
        self.client.close()


def build_client_connections(*, broker: Broker, registered: Callable[[], Awaitable[None]]) -> ClientConnections:
    """Redis when ``REDIS_URL`` is configured (the limit counts across processes), else this process's (the
    arguments are ``ClientConnections``'s)."""
    if pulse_settings.REDIS_URL:
        return RedisClientConnections(broker=broker, registered=registered)
    return MemoryClientConnections(broker=broker, registered=registered)
