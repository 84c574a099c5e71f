"""Presence in Redis, shared by every server process (docs/architecture.md, "Presence across processes").

Keys (``P`` = ``REDIS_PREFIX``):

- ``P:pres:{kbId}:{channel}`` hash, connectionId -> ``owner \\t timestamp \\t clientId-JSON \\t data-JSON``
  (``owner`` is the server process id holding the connection);
- ``P:pserial:{kbId}:{channel}`` the channel's presence serial;
- ``P:pchans:{kbId}`` hash, channel -> member count (for ``pulse.channels()``);
- ``P:procmembers:{processId}`` set of ``kbId \\t channel \\t connectionId``: the members a process owns, so
  the live processes can remove them when it dies (``django_pulse.cluster.liveness``).

Each change is one Lua script that mutates the hash, ``INCR``s the serial, builds the ``presence`` frame
(the same bytes ``protocol.presence_frame`` builds) and ``PUBLISH``es it on the topic's broker channel. Redis
runs scripts one at a time, so state, serial and event order never disagree, across all processes.

The backend talks to Redis with redis-py's synchronous client (thread-safe, not bound to an event loop) and
runs its calls in a worker thread from async code: presence changes are rare next to messages, and this keeps
one client usable from the server's loop, from sync views and from management commands alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from .._lua import load_lua
from ..broker.base import Broker
from ..conf import pulse_settings
from ..exceptions import Unavailable
from ..protocol import PresenceEvent
from .base import (
    Member,
    PresenceBackend,
    PresenceChange,
    PresenceSnapshot,
    encode_json,
    full_error,
    not_present_error,
    presence_topic,
)

__all__ = ["RedisPresence"]

logger = logging.getLogger("django_pulse.presence")

T = TypeVar("T")


_CHANGE = load_lua("django_pulse.presence", "change.lua", "common.lua")

_LEAVE = load_lua("django_pulse.presence", "leave.lua", "common.lua")

_SNAPSHOT = load_lua("django_pulse.presence", "snapshot.lua")

_SWEEP = load_lua("django_pulse.presence", "sweep.lua", "common.lua")

SWEEP_BATCH = 200

_ADOPT = load_lua("django_pulse.presence", "adopt.lua")


def _entry(kb_id: str, channel: str, connection_id: str) -> str:
    return f"{kb_id}\t{channel}\t{connection_id}"


def _parse_value(connection_id: str, value: str) -> Member:
    _owner, ts, client_json, data_json = value.split("\t", 3)
    return Member(json.loads(client_json), connection_id, json.loads(data_json), int(ts))


class RedisPresence(PresenceBackend):
    """Presence in Redis. Configured by keyword arguments; ``get_runtime().presence`` passes the settings."""

    def __init__(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        process_id: str | None = None,
        bus_prefix: str | None = None,
        broker: Broker | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(broker=broker)
        url = url or pulse_settings.REDIS_URL
        if not url:
            raise ValueError("RedisPresence needs a Redis URL (PULSE['REDIS_URL'])")
        self.prefix = prefix or pulse_settings.REDIS_PREFIX
        self._process_id = process_id
        self._bus_prefix = bus_prefix
        self.client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._change = self.client.register_script(_CHANGE)
        self._leave_script = self.client.register_script(_LEAVE)
        self._snapshot_script = self.client.register_script(_SNAPSHOT)
        self._sweep = self.client.register_script(_SWEEP)
        self._adopt_script = self.client.register_script(_ADOPT)

    @property
    def process_id(self) -> str:
        """The id of this server process (the broker's), under which its members are recorded."""
        if self._process_id is None:
            self._process_id = str(self.broker.process_id)
        return self._process_id

    @property
    def bus_prefix(self) -> str:
        """The broker's pub/sub channel of topic T is ``bus_prefix + T`` (``broker.redis_channel``)."""
        if self._bus_prefix is None:
            self._bus_prefix = self.broker.redis_channel("")
        return self._bus_prefix

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, fn)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # No host or port in what clients see (the detail stays in the chained exception and the log).
            logger.debug("Presence store unreachable: %r", exc)
            raise Unavailable("The presence store (Redis) is unreachable.") from exc

    def _change_sync(
        self, kb_id: str, channel: str, member: Member, data_json: str, max_members: int, mode: str
    ) -> PresenceChange:
        pid = self.process_id
        result = self._call(
            lambda: self._change(
                keys=[
                    self.key("pres", kb_id, channel),
                    self.key("pserial", kb_id, channel),
                    self.key("pchans", kb_id),
                    self.key("procmembers", pid),
                    self.key("procs"),
                ],
                args=[
                    pid,
                    member.connection_id,
                    encode_json(member.connection_id),
                    encode_json(member.client_id),
                    data_json,
                    member.timestamp,
                    max_members,
                    channel,
                    self.bus_prefix + presence_topic(kb_id, channel),
                    _entry(kb_id, channel, member.connection_id),
                    mode,
                ],
            )
        )
        if result[0] == "full":
            raise full_error(channel, max_members)
        if result[0] == "absent":
            raise not_present_error(channel, member.connection_id)
        event, serial, frame, count, value = result
        return PresenceChange(
            kb_id,
            channel,
            PresenceEvent(event),
            _parse_value(member.connection_id, value),
            int(serial),
            frame,
            int(count),
        )

    async def _enter(
        self, kb_id: str, channel: str, member: Member, data_json: str, max_members: int
    ) -> PresenceChange:
        return await asyncio.to_thread(self._change_sync, kb_id, channel, member, data_json, max_members, "enter")

    async def _update(self, kb_id: str, channel: str, connection_id: str, data: Any, data_json: str) -> PresenceChange:
        member = Member("", connection_id, data, 0)
        return await asyncio.to_thread(self._change_sync, kb_id, channel, member, data_json, 0, "update")

    def _leave_sync(self, kb_id: str, channel: str, connection_id: str) -> PresenceChange:
        result = self._call(
            lambda: self._leave_script(
                keys=[self.key("pres", kb_id, channel), self.key("pserial", kb_id, channel), self.key("pchans", kb_id)],
                args=[
                    connection_id,
                    encode_json(connection_id),
                    channel,
                    self.bus_prefix + presence_topic(kb_id, channel),
                    _entry(kb_id, channel, connection_id),
                    self.prefix,
                    self.process_id,
                ],
            )
        )
        if result[0] == "absent":
            raise not_present_error(channel, connection_id)
        _event, serial, frame, count, value = result
        return PresenceChange(
            kb_id, channel, PresenceEvent.LEAVE, _parse_value(connection_id, value), int(serial), frame, int(count)
        )

    async def _leave(self, kb_id: str, channel: str, connection_id: str) -> PresenceChange:
        return await asyncio.to_thread(self._leave_sync, kb_id, channel, connection_id)

    def _snapshot_sync(self, kb_id: str, channel: str) -> PresenceSnapshot:
        result = self._call(
            lambda: self._snapshot_script(keys=[self.key("pres", kb_id, channel), self.key("pserial", kb_id, channel)])
        )
        serial, flat = int(result[0]), result[1:]
        members = [_parse_value(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        members.sort(key=lambda m: (m.timestamp, m.connection_id))
        return PresenceSnapshot(kb_id, channel, serial, members)

    async def _snapshot(self, kb_id: str, channel: str) -> PresenceSnapshot:
        return await asyncio.to_thread(self._snapshot_sync, kb_id, channel)

    def _channel_counts_sync(self, kb_id: str) -> dict[str, int]:
        raw: dict[str, str] = self._call(lambda: self.client.hgetall(self.key("pchans", kb_id)))  # type: ignore[arg-type,return-value]
        return {channel: int(count) for channel, count in raw.items() if int(count) > 0}

    async def _channel_counts(self, kb_id: str) -> dict[str, int]:
        return await asyncio.to_thread(self._channel_counts_sync, kb_id)

    def _adopt_sync(self, connection_id: str, previous_process: str) -> list[tuple[str, str, Member]]:
        if not previous_process or previous_process == self.process_id:
            return []
        result = self._call(
            lambda: self._adopt_script(args=[self.prefix, previous_process, self.process_id, connection_id])
        )
        return [
            (result[i], result[i + 1], _parse_value(connection_id, result[i + 2])) for i in range(0, len(result), 3)
        ]

    async def _adopt(self, connection_id: str, previous_process: str) -> list[tuple[str, str, Member]]:
        return await asyncio.to_thread(self._adopt_sync, connection_id, previous_process)

    # --- dead processes (django_pulse.cluster.liveness) --------------------------------------------------------------

    def sweep_process_sync(self, dead_process_id: str) -> list[PresenceChange] | None:
        """Remove every member of ``dead_process_id`` (whose liveness key has expired) with its leave event.

        Returns the changes this call made (another sweeper may have made others), or None if the process
        turned out to be alive.
        """
        changes: list[PresenceChange] = []
        while True:
            result = self._call(lambda: self._sweep(args=[self.prefix, dead_process_id, SWEEP_BATCH, self.bus_prefix]))
            if int(result[0]) == -1:
                return None
            for i in range(1, len(result), 3):
                kb_id, text, count = result[i], result[i + 1], int(result[i + 2])
                frame = json.loads(text)
                changes.append(
                    PresenceChange(
                        kb_id,
                        frame["channel"],
                        PresenceEvent.LEAVE,
                        Member.from_dict(frame["member"]),
                        int(frame["serial"]),
                        text,
                        count,
                    )
                )
            if int(result[0]) == 0:
                return changes

    async def sweep_process(self, dead_process_id: str) -> list[PresenceChange] | None:
        changes = await asyncio.to_thread(self.sweep_process_sync, dead_process_id)
        for change in changes or []:
            await self._notify(change)
        return changes

    def close(self) -> None:
        super().close()
        self.client.close()
