"""Presence in Redis, shared by every server process (docs/architecture.md, "Presence across processes").

Keys (``P`` = ``REDIS_PREFIX``):

- ``P:pres:{kbId}:{channel}`` hash, connectionId -> ``owner \\t timestamp \\t clientId-JSON \\t data-JSON``
  (``owner`` is the server process id holding the connection);
- ``P:pserial:{kbId}:{channel}`` the channel's presence serial;
- ``P:pchans:{kbId}`` hash, channel -> member count (for ``pulse.channels()``);
- ``P:procmembers:{processId}`` set of ``kbId \\t channel \\t connectionId``: the members a process owns, so
  the live processes can remove them when it dies (``django_pulse.registry``).

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

# Builds the member object and the presence frame exactly like protocol.member_json / presence_frame.
_LUA_COMMON = r"""
local function member_json(conn_json, value)
  local p1 = string.find(value, '\t', 1, true)
  local p2 = string.find(value, '\t', p1 + 1, true)
  local p3 = string.find(value, '\t', p2 + 1, true)
  local ts = string.sub(value, p1 + 1, p2 - 1)
  return '{"clientId":' .. string.sub(value, p2 + 1, p3 - 1) .. ',"connectionId":' .. conn_json ..
         ',"data":' .. string.sub(value, p3 + 1) .. ',"timestamp":' .. ts .. '}',
         string.sub(value, 1, p1 - 1), ts
end
local function frame(channel, event, member, serial)
  return '{"action":"presence","channel":"' .. channel .. '","event":"' .. event .. '","member":' .. member ..
         ',"serial":' .. serial .. '}'
end
local function json_string(s)
  return '"' .. string.gsub(s, '[%c"\\]', function(c) return string.format('\\u%04x', string.byte(c)) end) .. '"'
end
"""

# KEYS: pres, pserial, pchans, procmembers(owner), procs
# ARGV: owner, connectionId, connectionId-JSON, clientId-JSON, data-JSON, timestamp, max members, channel,
#       bus channel, procmembers entry, mode ("enter" | "update")
# -> {event, serial, frame, count, stored value} | {"full"} | {"absent"}
_CHANGE = (
    _LUA_COMMON
    + r"""
local current = redis.call('HGET', KEYS[1], ARGV[2])
local event, ts, client = 'enter', ARGV[6], ARGV[4]
if current then
  local _m, _o
  _m, _o, ts = member_json(ARGV[3], current)
  event = 'update'
  if ARGV[11] == 'update' then
    local p2 = string.find(current, '\t', string.find(current, '\t', 1, true) + 1, true)
    local p3 = string.find(current, '\t', p2 + 1, true)
    client = string.sub(current, p2 + 1, p3 - 1)
  end
elseif ARGV[11] == 'update' then
  return {'absent'}
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then
  return {'full'}
else
  redis.call('HINCRBY', KEYS[3], ARGV[8], 1)
end
local value = ARGV[1] .. '\t' .. ts .. '\t' .. client .. '\t' .. ARGV[5]
redis.call('HSET', KEYS[1], ARGV[2], value)
redis.call('SADD', KEYS[4], ARGV[10])
redis.call('SADD', KEYS[5], ARGV[1])
local serial = redis.call('INCR', KEYS[2])
local member = member_json(ARGV[3], value)
local f = frame(ARGV[8], event, member, serial)
redis.call('PUBLISH', ARGV[9], f)
return {event, serial, f, redis.call('HLEN', KEYS[1]), value}
"""
)

# KEYS: pres, pserial, pchans
# ARGV: connectionId, connectionId-JSON, channel, bus channel, procmembers entry, key prefix, calling process id
# -> {"leave", serial, frame, count, stored value} | {"absent"}
_LEAVE = (
    _LUA_COMMON
    + r"""
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return {'absent'} end
local member, owner = member_json(ARGV[2], current)
-- Only the owning process leaves a member: a late grace-period leave from a process the connection has
-- just moved away from (recovery adopted the member) must not remove it.
if owner ~= ARGV[7] then return {'absent'} end
redis.call('HDEL', KEYS[1], ARGV[1])
local count = redis.call('HLEN', KEYS[1])
if count == 0 then redis.call('HDEL', KEYS[3], ARGV[3]) else redis.call('HINCRBY', KEYS[3], ARGV[3], -1) end
redis.call('SREM', ARGV[6] .. ':procmembers:' .. owner, ARGV[5])
local serial = redis.call('INCR', KEYS[2])
local f = frame(ARGV[3], 'leave', member, serial)
redis.call('PUBLISH', ARGV[4], f)
return {'leave', serial, f, count, current}
"""
)

# KEYS: pres, pserial
# -> {serial, values...}
_SNAPSHOT = r"""
local serial = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, serial)
return out
"""

# Removes up to ARGV[3] members of the dead process ARGV[2], each with its leave event, and forgets the
# process when none is left. SPOP inside one script makes every member's removal happen exactly once even
# when several live processes sweep the same dead one at the same time.
# ARGV: key prefix, dead process id, batch size, bus prefix (the broker channel of topic T is bus prefix .. T)
# -> {remaining, kbId1, frame1, count1, kbId2, ...} | {-1} when the process is alive again
_SWEEP = (
    _LUA_COMMON
    + r"""
local P, pid = ARGV[1], ARGV[2]
if redis.call('EXISTS', P .. ':proc:' .. pid) == 1 then return {-1} end
local entries = redis.call('SPOP', P .. ':procmembers:' .. pid, tonumber(ARGV[3]))
local out = {0}
for _, entry in ipairs(entries) do
  local t1 = string.find(entry, '\t', 1, true)
  local t2 = string.find(entry, '\t', t1 + 1, true)
  local kb, channel, conn = string.sub(entry, 1, t1 - 1), string.sub(entry, t1 + 1, t2 - 1), string.sub(entry, t2 + 1)
  local pres = P .. ':pres:' .. kb .. ':' .. channel
  local current = redis.call('HGET', pres, conn)
  if current then
    local member, owner = member_json(json_string(conn), current)
    if owner == pid then
      redis.call('HDEL', pres, conn)
      local count = redis.call('HLEN', pres)
      local chans = P .. ':pchans:' .. kb
      if count == 0 then redis.call('HDEL', chans, channel) else redis.call('HINCRBY', chans, channel, -1) end
      local serial = redis.call('INCR', P .. ':pserial:' .. kb .. ':' .. channel)
      local f = frame(channel, 'leave', member, serial)
      redis.call('PUBLISH', ARGV[4] .. 'p:' .. kb .. ':' .. channel, f)
      table.insert(out, kb)
      table.insert(out, f)
      table.insert(out, count)
    end
  end
end
local remaining = redis.call('SCARD', P .. ':procmembers:' .. pid)
if remaining == 0 then
  redis.call('SREM', P .. ':procs', pid)
  redis.call('DEL', P .. ':proctopics:' .. pid)
end
out[1] = remaining
return out
"""
)

SWEEP_BATCH = 200

# Moves the members of connection ARGV[4] from process ARGV[2] to process ARGV[3] (a recovered connection):
# the owner field of each stored value and the procmembers entries change; no serial, no event.
# ARGV: key prefix, previous process id, new process id, connectionId -> {kbId1, channel1, value1, ...}
_ADOPT = r"""
local P, old, new, conn = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local suffix = '\t' .. conn
local out = {}
for _, entry in ipairs(redis.call('SMEMBERS', P .. ':procmembers:' .. old)) do
  if string.sub(entry, -#suffix) == suffix then
    local t1 = string.find(entry, '\t', 1, true)
    local t2 = string.find(entry, '\t', t1 + 1, true)
    local kb, channel = string.sub(entry, 1, t1 - 1), string.sub(entry, t1 + 1, t2 - 1)
    local pres = P .. ':pres:' .. kb .. ':' .. channel
    local current = redis.call('HGET', pres, conn)
    redis.call('SREM', P .. ':procmembers:' .. old, entry)
    if current then
      local tab = string.find(current, '\t', 1, true)
      local value = new .. string.sub(current, tab)
      redis.call('HSET', pres, conn, value)
      redis.call('SADD', P .. ':procmembers:' .. new, entry)
      table.insert(out, kb)
      table.insert(out, channel)
      table.insert(out, value)
    end
  end
end
if #out > 0 then redis.call('SADD', P .. ':procs', new) end
return out
"""


def _entry(kb_id: str, channel: str, connection_id: str) -> str:
    return f"{kb_id}\t{channel}\t{connection_id}"


def _parse_value(connection_id: str, value: str) -> Member:
    _owner, ts, client_json, data_json = value.split("\t", 3)
    return Member(json.loads(client_json), connection_id, json.loads(data_json), int(ts))


class RedisPresence(PresenceBackend):
    """Presence in Redis. Configured by keyword arguments; ``get_presence()`` passes the settings."""

    def __init__(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        process_id: str | None = None,
        bus_prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
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
            from ..broker import get_broker

            self._process_id = str(get_broker().process_id)
        return self._process_id

    @property
    def bus_prefix(self) -> str:
        """The broker's pub/sub channel of topic T is ``bus_prefix + T`` (``broker.redis_channel``)."""
        if self._bus_prefix is None:
            from ..broker import get_broker

            self._bus_prefix = get_broker().redis_channel("")
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

    # --- dead processes (django_pulse.registry) --------------------------------------------------------------

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

    async def aclose(self) -> None:
        await super().aclose()
        self.client.close()

    def close(self) -> None:
        self.client.close()
