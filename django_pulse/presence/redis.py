"""Presence in Redis, shared by every server process (docs/architecture.md, "Presence across processes").

Keys (``P`` = ``REDIS_PREFIX``):

- ``P:{kbId:channel}:pres`` hash, connectionId -> ``owner \\t timestamp \\t clientId-JSON \\t data-JSON``
  (``owner`` is the server process id holding the connection);
- ``P:{kbId:channel}:pserial`` the channel's presence serial, ``P:{kbId:channel}:pclients`` hash
  clientId-JSON -> members of that client (for ``PRESENCE_MAX_MEMBERS_PER_CLIENT``) (all in the channel's hash
  slot with its message keys: ``django_pulse.broker.keys``). The serial expires ``CHANNEL_TTL`` s after the
  last member left, unless a process holding a ``presence.subscribe`` of the channel refreshes it
  (``cluster.liveness``);
- ``P:pchans:kbId`` sorted set, channel -> a version bumped by each enter: the channels that may have
  members (for ``pulse.channels()``, which counts their members and drops the empty ones);
- ``P:procmembers:{processId}`` (braces: a hash tag) set of ``kbId \\t channel \\t connectionId``: the
  members a process owns, so the live processes can remove them when it dies (``django_pulse.cluster.liveness``).

Each change is one Lua script that mutates the hash, ``INCR``s the serial, builds the ``presence`` frame
(the same bytes ``protocol.presence_frame`` builds) and ``PUBLISH``es it on the topic's broker channel. Redis
runs scripts one at a time, so state, serial and event order never disagree, across all processes.

The backend talks to Redis with redis-py's synchronous client (thread-safe, not bound to an event loop) and
runs its calls in a worker thread from async code: presence changes are rare next to messages, and this keeps
one client usable from the server's loop, from sync views and from management commands alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from redis.exceptions import ClusterError, RedisClusterException

from .._conf import pulse_settings
from .._lua import load_lua
from ..broker.base import Broker
from ..broker.connection import is_cluster, sync_client
from ..broker.keys import bus_channel, channel_key, check_prefix, process_key
from ..exceptions import Unavailable
from ..protocol import PresenceEvent
from .base import (
    EnterLimits,
    Member,
    PresenceBackend,
    PresenceChange,
    PresenceSnapshot,
    encode_json,
    limit_error,
    not_present_error,
    presence_topic,
)

__all__ = ["RedisPresence"]

logger = logging.getLogger("django_pulse.presence")

T = TypeVar("T")

_CHANGE = load_lua("django_pulse.presence", "change.lua", "common.lua")

_LEAVE = load_lua("django_pulse.presence", "leave.lua", "common.lua")

_SNAPSHOT = load_lua("django_pulse.presence", "snapshot.lua")

SWEEP_BATCH = 200

_ADOPT = load_lua("django_pulse.presence", "adopt.lua")

_FORGET_CHANNELS = load_lua("django_pulse.presence", "forget_channels.lua")


def _entry(kb_id: str, channel: str, connection_id: str) -> str:
    return f"{kb_id}\t{channel}\t{connection_id}"


def _score_text(value: Any) -> str:
    """A sorted-set score as Redis prints it (``ZSCORE`` in Lua returns this text)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _parse_value(connection_id: str, value: str) -> Member:
    _owner, ts, client_json, data_json = value.split("\t", 3)
    return Member(json.loads(client_json), connection_id, json.loads(data_json), int(ts))


class RedisPresence(PresenceBackend):
    """Presence in Redis. Configured by keyword arguments; the runtime (``Runtime.presence``) passes the settings."""

    def __init__(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        process_id: str | None = None,
        broker: Broker | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(broker=broker)
        url = url or pulse_settings.REDIS_URL
        if not url:
            raise ValueError("RedisPresence needs a Redis URL (PULSE['REDIS_URL'])")
        self.prefix = check_prefix(prefix or pulse_settings.REDIS_PREFIX)
        self._process_id = process_id
        # The command that broadcasts inside the scripts: the broker's ("SPUBLISH" on a sharded cluster).
        self.publish_command = "SPUBLISH" if is_cluster(url) else "PUBLISH"
        self.client = sync_client(url, decode_responses=True, health_check_interval=30)
        self._change = self.client.register_script(_CHANGE)
        self._leave_script = self.client.register_script(_LEAVE)
        self._snapshot_script = self.client.register_script(_SNAPSHOT)
        self._adopt_script = self.client.register_script(_ADOPT)
        self._forget_channels = self.client.register_script(_FORGET_CHANNELS)

    @property
    def process_id(self) -> str:
        """The id of this server process (the broker's), under which its members are recorded."""
        if self._process_id is None:
            self._process_id = str(self.broker.process_id)
        return self._process_id

    @property
    def bus_prefix(self) -> str:
        """What starts every pub/sub channel name of the broker (``{REDIS_PREFIX}:bus:``, ``broker.keys``)."""
        return f"{self.prefix}:bus:"

    def bus(self, kb_id: str, channel: str) -> str:
        """The pub/sub channel of the channel's presence events."""
        return bus_channel(self.prefix, presence_topic(kb_id, channel))

    def key(self, *parts: str) -> str:
        """Keys that are not about one channel (per app, per process)."""
        return ":".join((self.prefix, *parts))

    def process_key(self, kind: str, process_id: str) -> str:
        """A key of one server process (``broker.keys.process_key``; shared with ``registry``)."""
        return process_key(self.prefix, kind, process_id)

    def channel_key(self, kb_id: str, channel: str, kind: str) -> str:
        """The one naming function of a channel's presence keys: in the channel's hash slot."""
        return channel_key(self.prefix, kb_id, channel, kind)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, fn)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, ClusterError, RedisClusterException) as exc:
            # No host or port in what clients see (the detail stays in the chained exception and the log).
            logger.debug("Presence store unreachable: %r", exc)
            raise Unavailable("The presence store (Redis) is unreachable.") from exc

    def _channel_keys(self, kb_id: str, channel: str) -> list[str]:
        """KEYS of a channel's scripts: member hash, presence serial, pub/sub channel, members per client id
        (one hash slot)."""
        return [
            self.channel_key(kb_id, channel, "pres"),
            self.channel_key(kb_id, channel, "pserial"),
            self.bus(kb_id, channel),
            self.channel_key(kb_id, channel, "pclients"),
        ]

    def _change_sync(
        self, kb_id: str, channel: str, member: Member, data_json: str, mode: str, limits: EnterLimits
    ) -> PresenceChange:
        pid = self.process_id
        entry = _entry(kb_id, channel, member.connection_id)
        # The process's index first: a member must never exist unrecorded (the sweep of a dead process finds
        # its members there). An entry without a member is harmless: the sweep checks the owner.
        indexed = self._call(lambda: self._index(pid, entry))
        result = self._call(
            lambda: self._change(
                keys=self._channel_keys(kb_id, channel),
                args=[
                    pid,
                    member.connection_id,
                    encode_json(member.connection_id),
                    encode_json(member.client_id),
                    data_json,
                    member.timestamp,
                    limits.members,
                    channel,
                    mode,
                    self.publish_command,
                    limits.per_client,
                    limits.anonymous,
                ],
            )
        )
        if result[0] in ("full", "anonymous_full", "client", "absent"):
            if indexed:
                with contextlib.suppress(redis.RedisError):
                    self.client.srem(self.process_key("procmembers", pid), entry)
            if result[0] == "absent":
                raise not_present_error(channel, member.connection_id)
            raise limit_error(result[0], channel, limits)
        event, serial, frame, count, value = result
        if event == "enter":
            # After the member exists: the index of occupied channels may only lose a channel whose member
            # hash was seen empty *and* that no enter has touched since (_FORGET_CHANNELS).
            with contextlib.suppress(redis.RedisError):
                self.client.zincrby(self.key("pchans", kb_id), 1, channel)
        return PresenceChange(
            kb_id,
            channel,
            PresenceEvent(event),
            _parse_value(member.connection_id, value),
            int(serial),
            frame,
            int(count),
        )

    def _index(self, pid: str, entry: str) -> bool:
        """Record ``entry`` among the members of process ``pid``; True if it was new."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.sadd(self.process_key("procmembers", pid), entry)
            pipe.sadd(self.key("procs"), pid)
            added, _ = pipe.execute()
        return bool(added)

    async def _enter(
        self, kb_id: str, channel: str, member: Member, data_json: str, limits: EnterLimits
    ) -> PresenceChange:
        return await asyncio.to_thread(self._change_sync, kb_id, channel, member, data_json, "enter", limits)

    async def _update(self, kb_id: str, channel: str, connection_id: str, data: Any, data_json: str) -> PresenceChange:
        member = Member("", connection_id, data, 0)
        return await asyncio.to_thread(self._change_sync, kb_id, channel, member, data_json, "update", EnterLimits(0))

    def _remove(self, kb_id: str, channel: str, connection_id: str, owner: str) -> PresenceChange | None:
        """Remove the member if ``owner`` owns it (one script in the channel's slot); None if it does not."""
        result = self._call(
            lambda: self._leave_script(
                keys=self._channel_keys(kb_id, channel),
                args=[
                    connection_id,
                    encode_json(connection_id),
                    channel,
                    owner,
                    self.publish_command,
                    max(1, int(pulse_settings.CHANNEL_TTL * 1000)),
                ],
            )
        )
        if result[0] == "absent":
            return None
        _event, serial, frame, count, value = result
        change = PresenceChange(
            kb_id, channel, PresenceEvent.LEAVE, _parse_value(connection_id, value), int(serial), frame, int(count)
        )
        # Then the indexes (best effort: a stale entry is skipped by the sweep, a stale channel by channel_counts).
        with contextlib.suppress(redis.RedisError, Unavailable):
            self.client.srem(self.process_key("procmembers", owner), _entry(kb_id, channel, connection_id))
            if change.count == 0:
                self._forget_if_empty(kb_id, [channel])
        return change

    def _leave_sync(self, kb_id: str, channel: str, connection_id: str) -> PresenceChange:
        change = self._remove(kb_id, channel, connection_id, self.process_id)
        if change is None:
            raise not_present_error(channel, connection_id)
        return change

    async def _leave(self, kb_id: str, channel: str, connection_id: str) -> PresenceChange:
        return await asyncio.to_thread(self._leave_sync, kb_id, channel, connection_id)

    def _snapshot_sync(self, kb_id: str, channel: str) -> PresenceSnapshot:
        result = self._call(
            lambda: self._snapshot_script(
                keys=[self.channel_key(kb_id, channel, "pres"), self.channel_key(kb_id, channel, "pserial")]
            )
        )
        serial, flat = int(result[0]), result[1:]
        members = [_parse_value(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        members.sort(key=lambda m: (m.timestamp, m.connection_id))
        return PresenceSnapshot(kb_id, channel, serial, members)

    async def _snapshot(self, kb_id: str, channel: str) -> PresenceSnapshot:
        return await asyncio.to_thread(self._snapshot_sync, kb_id, channel)

    def _versions(self, kb_id: str, channels: list[str] | None = None) -> list[tuple[str, str]]:
        """(channel, version) pairs of the app's occupied-channel index, versions as Redis spells them."""
        key = self.key("pchans", kb_id)
        if channels is None:
            raw = cast("list[tuple[str, str]]", self.client.zrange(key, 0, -1, withscores=True, score_cast_func=str))
            return [(str(c), str(v)) for c, v in raw]
        with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.zscore(key, channel)
            scores = pipe.execute()
        return [(c, _score_text(v)) for c, v in zip(channels, scores, strict=True) if v is not None]

    def _hlens(self, kb_id: str, channels: list[str]) -> list[int]:
        with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.hlen(self.channel_key(kb_id, channel, "pres"))
            return [int(n) for n in pipe.execute()]

    def _forget_if_empty(self, kb_id: str, channels: list[str]) -> None:
        """Drop ``channels`` from the app's index if their member hash is empty. Versions are read *before*
        the counts: an enter after the count bumps the version, and the removal is skipped."""
        versions = self._versions(kb_id, channels)
        if not versions:
            return
        counts = self._hlens(kb_id, [c for c, _v in versions])
        empty = [item for (c, v), n in zip(versions, counts, strict=True) if n == 0 for item in (c, v)]
        if empty:
            self._forget_channels(keys=[self.key("pchans", kb_id)], args=empty)

    def _channel_counts_sync(self, kb_id: str) -> dict[str, int]:
        def read() -> dict[str, int]:
            versions = self._versions(kb_id)
            counts = self._hlens(kb_id, [c for c, _v in versions])
            empty = [item for (c, v), n in zip(versions, counts, strict=True) if n == 0 for item in (c, v)]
            if empty:
                self._forget_channels(keys=[self.key("pchans", kb_id)], args=empty)
            return {c: n for (c, _v), n in zip(versions, counts, strict=True) if n > 0}

        return self._call(read)

    async def _channel_counts(self, kb_id: str) -> dict[str, int]:
        return await asyncio.to_thread(self._channel_counts_sync, kb_id)

    def _adopt_sync(self, connection_id: str, previous_process: str) -> list[tuple[str, str, Member]]:
        if not previous_process or previous_process == self.process_id:
            return []
        pid, old_index = self.process_id, self.process_key("procmembers", previous_process)
        suffix = "\t" + connection_id
        adopted: list[tuple[str, str, Member]] = []

        def run() -> None:
            for entry in sorted(str(e) for e in cast("set[str]", self.client.smembers(old_index))):
                if not entry.endswith(suffix):
                    continue
                kb_id, channel, _conn = entry.split("\t", 2)
                # Recorded under the new owner first, then moved, then forgotten by the old one: a sweep of the
                # old process running meanwhile either removed the member already (nothing to move) or finds
                # it owned by this process (and leaves it).
                self._index(pid, entry)
                value = self._adopt_script(
                    keys=[self.channel_key(kb_id, channel, "pres")], args=[connection_id, previous_process, pid]
                )
                self.client.srem(old_index, entry)
                if value:
                    adopted.append((kb_id, channel, _parse_value(connection_id, str(value))))
                else:
                    self.client.srem(self.process_key("procmembers", pid), entry)

        self._call(run)
        return adopted

    async def _adopt(self, connection_id: str, previous_process: str) -> list[tuple[str, str, Member]]:
        return await asyncio.to_thread(self._adopt_sync, connection_id, previous_process)

    # --- dead processes (django_pulse.cluster.liveness) --------------------------------------------------------------

    def sweep_process_sync(self, dead_process_id: str) -> list[PresenceChange] | None:
        """Remove every member of ``dead_process_id`` (whose liveness key has expired) with its leave event.

        Each member is removed by the channel's own leave script, which checks that the dead process still
        owns it: several live processes sweeping the same dead one remove each member exactly once, and a member
        adopted by a recovered connection stays. Returns the changes this call made (another sweeper may have
        made others), or None if the process turned out to be alive.
        """
        index = self.process_key("procmembers", dead_process_id)
        changes: list[PresenceChange] = []

        def run() -> list[PresenceChange] | None:
            while True:
                if self.client.exists(self.process_key("proc", dead_process_id)):
                    return None
                members = cast("list[str] | None", self.client.srandmember(index, SWEEP_BATCH))
                entries = [str(e) for e in members or []]
                for entry in entries:
                    kb_id, channel, connection_id = entry.split("\t", 2)
                    change = self._remove(kb_id, channel, connection_id, dead_process_id)
                    if change is not None:
                        changes.append(change)
                if entries:
                    self.client.srem(index, *entries)
                if not self.client.scard(index):
                    if self.client.exists(self.process_key("proc", dead_process_id)):
                        return None
                    with self.client.pipeline(transaction=False) as pipe:
                        pipe.srem(self.key("procs"), dead_process_id)
                        pipe.delete(self.process_key("proctopics", dead_process_id))
                        pipe.execute()
                    return changes

        return self._call(run)

    async def sweep_process(self, dead_process_id: str) -> list[PresenceChange] | None:
        changes = await asyncio.to_thread(self.sweep_process_sync, dead_process_id)
        for change in changes or []:
            await self._notify(change)
        return changes

    def close(self) -> None:
        super().close()
        self.client.close()
