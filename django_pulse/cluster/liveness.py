"""Process liveness: which server processes are alive, what they hold, and the sweep after dead ones.

With Redis, every server process (one that serves WebSocket connections) runs a small loop:

- every ``PROCESS_HEARTBEAT`` s it sets ``P:proc:{processId}`` (braces: a hash tag) with an expiry of
  ``PROCESS_TIMEOUT`` s (its value: host, OS pid, connection count, start time), adds itself to the set
  ``P:procs``, and replaces the hash ``P:proctopics:{processId}`` (topic -> local subscriber count, from the
  hub, same expiry);
- then it sweeps: every process in ``P:procs`` whose key has expired is dead; its members (recorded in
  ``P:procmembers:{processId}`` by the presence backend) are removed, each with its ``leave`` event, by the
  channel's atomic leave script, which checks the owner (``RedisPresence.sweep_process``), so two sweepers
  never remove one member twice; when none is left the process is forgotten.

So a ``kill -9``'d process's members leave at most ``PROCESS_TIMEOUT + PROCESS_HEARTBEAT`` s after its last
heartbeat (15 s with the defaults 12 + 3). ``pulse.channels()`` and the ``status`` command read the live
processes' topic hashes. Without Redis, the one process's hub and presence backend answer directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict, Unpack, cast

from .._conf import pulse_settings
from .._lua import load_lua

if TYPE_CHECKING:
    from ..broker.base import Broker
    from ..presence.base import PresenceBackend
    from .client_connections import ClientConnections

__all__ = ["Liveness", "LivenessParts", "MemoryLiveness", "RedisLiveness", "build_liveness"]

logger = logging.getLogger("django_pulse.liveness")

MESSAGE_TOPIC_PREFIX = "m:"


def _message_topics(kb_id: str, topics: dict[str, int]) -> dict[str, int]:
    """Channel -> subscribers from a topic -> count map, for app ``kb_id``."""
    head = f"{MESSAGE_TOPIC_PREFIX}{kb_id}:"
    return {topic[len(head) :]: count for topic, count in topics.items() if topic.startswith(head) and count > 0}


def _channel_list(subscribers: dict[str, int], presence: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"name": name, "subscribers": subscribers.get(name, 0), "presence": presence.get(name, 0)}
        for name in sorted(subscribers.keys() | presence.keys())
    ]


class LivenessParts(TypedDict):
    """What a ``Liveness`` is handed (see there)."""

    broker: Broker
    presence: PresenceBackend
    client_connections: ClientConnections
    topics: Callable[[], dict[str, int]]


class Liveness(ABC):
    """This process's view of all server processes; one instance per process, owned by the runtime.

    It is handed the parts it reads, never the runtime: the broker (process id), the presence backend (counts,
    sweeps), this process's client connection slots (swept with the members), and ``topics``, a callable that
    returns this process's topic -> local subscriber count and may be called from any thread (the hub's
    ``topic_counts``: a whole copy, made under the lock the hub changes its topics under).
    """

    def __init__(self, **parts: Unpack[LivenessParts]) -> None:
        self.broker = parts["broker"]
        self.presence = parts["presence"]
        self.client_connections = parts["client_connections"]
        self.topics = parts["topics"]
        self.connections = 0
        self.started_at = int(time.time() * 1000)

    def connection_opened(self) -> None:
        self.connections += 1

    def connection_closed(self) -> None:
        self.connections = max(0, self.connections - 1)

    async def ensure_started(self) -> None:  # noqa: B027 - nothing to run without Redis
        """Start the heartbeat/sweep loop on the running event loop if it is not running there."""

    async def stop(self, *, handover: bool = False) -> None:  # noqa: B027
        """Stop the loop (and, with Redis, unregister this process; with ``handover``, keep its members for
        PRESENCE_GRACE s for other processes to adopt)."""

    def close(self) -> None:  # noqa: B027 - nothing to release without Redis
        """Release connections (settings changed); nothing is awaited."""

    @abstractmethod
    def channels_sync(self, kb_id: str) -> list[dict[str, Any]]:
        """``[{"name", "subscribers", "presence"}]`` of app ``kb_id``, across every live process, by name."""

    async def channels(self, kb_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.channels_sync, kb_id)

    def channels_of_apps_sync(self, kb_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """``channels_sync`` of several apps, kbId -> channels (``pulse status``, the admin's live view)."""
        return {kb_id: self.channels_sync(kb_id) for kb_id in kb_ids}

    @abstractmethod
    def status_sync(self) -> dict[str, Any]:
        """``{"backend", "processes": [...], "connections", "topics"}`` across every live process."""


class MemoryLiveness(Liveness):
    """One process: the local hub and presence backend are the whole truth."""

    def channels_sync(self, kb_id: str) -> list[dict[str, Any]]:
        return _channel_list(_message_topics(kb_id, self.topics()), self.presence.channel_counts_sync(kb_id))

    async def channels(self, kb_id: str) -> list[dict[str, Any]]:
        return self.channels_sync(kb_id)

    def status_sync(self) -> dict[str, Any]:
        topics = self.topics()
        return {
            "backend": "memory",
            "processes": [self._describe("local", self.connections, self.started_at)],
            "connections": self.connections,
            "topics": sum(1 for t in topics if t.startswith(MESSAGE_TOPIC_PREFIX)),
        }

    @staticmethod
    def _describe(process_id: str, connections: int, started_at: int) -> dict[str, Any]:
        return {
            "id": process_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "connections": connections,
            "startedAt": started_at,
            "beatAt": int(time.time() * 1000),  # this process answers for itself: always current
        }


_HEARTBEAT = load_lua("django_pulse.cluster", "heartbeat.lua")

_TOUCH = load_lua("django_pulse.broker", "touch.lua")


class RedisLiveness(Liveness):
    """Liveness keys in Redis, swept by every live process."""

    def __init__(self, **parts: Unpack[LivenessParts]) -> None:
        from ..broker.connection import sync_client

        super().__init__(**parts)
        url = pulse_settings.REDIS_URL
        if not url:
            raise ValueError("RedisLiveness needs a Redis URL (PULSE['REDIS_URL'])")
        self.prefix = pulse_settings.REDIS_PREFIX
        self._process_id: str | None = None  # the broker's, read when first needed
        self.client = sync_client(url, decode_responses=True)
        self._heartbeat_script = self.client.register_script(_HEARTBEAT)
        self._touch_script = self.client.register_script(_TOUCH)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beats = 0
        self._start_lock: asyncio.Lock | None = None

    @property
    def process_id(self) -> str:
        if self._process_id is None:
            self._process_id = str(self.broker.process_id)
        return self._process_id

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def process_key(self, kind: str, process_id: str) -> str:
        """A key of one server process (``proc``, ``proctopics``): ``broker.keys.process_key``."""
        from ..broker.keys import process_key

        return process_key(self.prefix, kind, process_id)

    # --- the loop --------------------------------------------------------------------------------------------

    async def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        if self._start_lock is None or self._loop is not loop:
            self._start_lock, self._loop = asyncio.Lock(), loop
        async with self._start_lock:
            if self._task is not None and not self._task.done() and self._loop is loop:
                return
            # The first heartbeat is awaited: members entered afterwards belong to a registered process.
            await self.beat()
            self._task = loop.create_task(self._run(), name="pulse-process-registry")

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        from ..exceptions import Unavailable

        failing_since: float | None = None
        while True:
            await asyncio.sleep(pulse_settings.PROCESS_HEARTBEAT)
            try:
                await self.beat()
                await self.touch_held_channels()
                await self.sweep()
                await self.presence.retry_failed_leaves()
                await self.client_connections.retry_failed_releases()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, Unavailable) as exc:
                # Redis may be down for a while (a failover): said once, when it starts and when it ends; the
                # next round tries again.
                if failing_since is None:
                    failing_since = time.monotonic()
                    logger.warning("pulse: process heartbeat failed (%s: %s); retrying", type(exc).__name__, exc)
                continue
            except Exception:
                logger.exception("pulse: process heartbeat/sweep failed")
                continue
            if failing_since is not None:
                logger.warning("pulse: process heartbeat back after %.1f s", time.monotonic() - failing_since)
                failing_since = None

    async def touch_held_channels(self) -> None:
        """About four times per ``CHANNEL_TTL``, push back the expiry of the serial counters and presence serials
        of the channels this process has subscribers of: a channel somebody listens to is not idle. (A presence
        subscriber's snapshot is at serial ``s`` and it forwards only later serials: were the serial of an
        empty channel to expire and start again at 1 under it, it would drop the next events.)"""
        every = max(1, int(pulse_settings.CHANNEL_TTL / 4 / max(pulse_settings.PROCESS_HEARTBEAT, 0.001)))
        if self._beats % every:
            return
        topics = [t for t in self.topics() if t.startswith(("m:", "p:"))]
        if topics:
            await asyncio.to_thread(self._touch_sync, topics)

    def _touch_sync(self, topics: list[str]) -> None:
        from ..broker.keys import topic_key

        ttl = max(1, int(pulse_settings.CHANNEL_TTL * 1000))
        with self.client.pipeline(transaction=False) as pipe:
            for topic in topics:
                key = topic_key(self.prefix, topic, "serial" if topic.startswith("m:") else "pserial")
                self._touch_script(keys=[key], args=[ttl], client=pipe)
            pipe.execute()

    def heartbeat_sync(self, topics: dict[str, int]) -> bool:
        """Refresh this process's liveness and topic counts; False if its key had expired meanwhile."""
        ttl_ms = int(pulse_settings.PROCESS_TIMEOUT * 1000)
        value = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "connections": self.connections,
                "startedAt": self.started_at,
                "beatAt": int(time.time() * 1000),  # the live view's health: how old this heartbeat is
            }
        )
        args: list[Any] = [value, ttl_ms]
        for topic, count in topics.items():
            args += [topic, count]
        pid = self.process_id
        existed = self._heartbeat_script(
            keys=[self.process_key("proc", pid), self.process_key("proctopics", pid)], args=args
        )
        self.client.sadd(self.key("procs"), pid)
        return bool(existed)

    async def beat(self) -> None:
        # The hub is read here, on its event loop; only the Redis call goes to a thread.
        existed = await asyncio.to_thread(self.heartbeat_sync, self.topics())
        self._beats += 1
        if not existed and self._beats > 1:
            # This process was silent longer than PROCESS_TIMEOUT (a stalled loop?): others may have swept its
            # members. Enter them again so the shared state matches the connections it still serves.
            logger.warning("pulse: process %s missed its heartbeat deadline; re-entering its members", self.process_id)
            await self.presence.reassert()
            await self.client_connections.reassert()

    def _process_ids_sync(self) -> list[str]:
        return sorted(str(p) for p in cast("set[Any]", self.client.smembers(self.key("procs"))))

    def dead_processes_sync(self) -> list[str]:
        pids = self._process_ids_sync()
        others = [p for p in pids if p != self.process_id]
        if not others:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for p in others:
                pipe.exists(self.process_key("proc", p))
            alive = pipe.execute()
        return [p for p, up in zip(others, alive, strict=True) if not up]

    async def sweep(self) -> int:
        """Remove the members and connection slots of every dead process; the number of members this call
        removed."""
        from ..presence.redis import RedisPresence

        removed = 0
        for dead in await asyncio.to_thread(self.dead_processes_sync):
            # Connection slots first: the presence sweep forgets the process once its members are gone.
            released = await self.client_connections.sweep_process(dead)
            if released:
                logger.info("pulse: released %d connection slot(s) of dead process %s", released, dead)
            presence = self.presence
            if isinstance(presence, RedisPresence):
                changes = await presence.sweep_process(dead)
                if changes:
                    removed += len(changes)
                    logger.info("pulse: swept %d member(s) of dead process %s", len(changes), dead)
        return removed

    async def stop(self, *, handover: bool = False) -> None:
        """Stop the loop, drop this process's registration, and remove every member it still owns, with their
        ``leave`` events, in batches (one script per 200 members: a shutdown that runs out of time for each
        connection's own leave does not leave its members to the survivors' sweep).

        With ``handover`` (a graceful shutdown, docs/deployment.md) the members stay: the process is marked
        draining and its liveness key expires after PRESENCE_GRACE s; clients that continue their connection
        on another process meanwhile take their members with them, and the live processes' sweep removes
        the rest, with their ``leave`` events, when the key has expired."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        from ..presence.redis import RedisPresence

        pid = self.process_id
        if handover:
            await asyncio.to_thread(self._drain_sync, pid)
            return
        await asyncio.to_thread(self._unregister_sync, pid)
        with contextlib.suppress(Exception):
            await self.client_connections.sweep_process(pid)
        presence = self.presence
        if isinstance(presence, RedisPresence):
            # The liveness key is gone, so the sweep script treats this process as dead and takes its members.
            await presence.sweep_process(pid)

    def _drain_sync(self, pid: str) -> None:
        value = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "connections": 0,
                "startedAt": self.started_at,
                "draining": True,
            }
        )
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.process_key("proc", pid), value, px=max(1, int(pulse_settings.PRESENCE_GRACE * 1000)))
            pipe.delete(self.process_key("proctopics", pid))
            pipe.execute()

    def _unregister_sync(self, pid: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.process_key("proc", pid), self.process_key("proctopics", pid))
            pipe.srem(self.key("procs"), pid)
            pipe.execute()

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                self._task.cancel()
        self.client.close()

    # --- reading ---------------------------------------------------------------------------------------------

    def _live_topics_sync(self) -> dict[str, tuple[dict[str, Any], dict[str, int]]]:
        """process id -> (its liveness value, its topic counts), for every live process."""
        pids = self._process_ids_sync()
        if not pids:
            return {}
        with self.client.pipeline(transaction=False) as pipe:
            for p in pids:
                pipe.get(self.process_key("proc", p))
                pipe.hgetall(self.process_key("proctopics", p))
            raw = pipe.execute()
        live: dict[str, tuple[dict[str, Any], dict[str, int]]] = {}
        for i, p in enumerate(pids):
            value, topics = raw[2 * i], raw[2 * i + 1]
            if value is not None:
                live[p] = (json.loads(value), {t: int(c) for t, c in topics.items()})
        return live

    def _channels_from(
        self, live: dict[str, tuple[dict[str, Any], dict[str, int]]], kb_id: str
    ) -> list[dict[str, Any]]:
        subscribers: dict[str, int] = {}
        for _info, topics in live.values():
            for name, count in _message_topics(kb_id, topics).items():
                subscribers[name] = subscribers.get(name, 0) + count
        return _channel_list(subscribers, self.presence.channel_counts_sync(kb_id))

    def channels_sync(self, kb_id: str) -> list[dict[str, Any]]:
        return self._channels_from(self._live_topics_sync(), kb_id)

    def channels_of_apps_sync(self, kb_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        # One read of every process's topic counts for all the apps (they are the bulk of the work).
        live = self._live_topics_sync()
        return {kb_id: self._channels_from(live, kb_id) for kb_id in kb_ids}

    def status_sync(self) -> dict[str, Any]:
        live = self._live_topics_sync()
        processes = [{"id": p, **info} for p, (info, _topics) in live.items() if not info.get("draining")]
        draining = [{"id": p, **info} for p, (info, _topics) in live.items() if info.get("draining")]
        topics = {t for _info, ts in live.values() for t in ts if t.startswith(MESSAGE_TOPIC_PREFIX)}
        return {
            "backend": "redis",
            "processes": processes,
            "connections": sum(int(p.get("connections", 0)) for p in processes),
            "topics": len(topics),
            "draining": draining,  # stopped gracefully; their members wait PRESENCE_GRACE s for adoption
        }


def build_liveness(**parts: Unpack[LivenessParts]) -> Liveness:
    """This process's liveness: Redis when ``REDIS_URL`` is configured, else in memory."""
    return RedisLiveness(**parts) if pulse_settings.REDIS_URL else MemoryLiveness(**parts)
