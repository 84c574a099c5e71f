"""In-process presence: the embedded default, for one server process.

State lives in this process's memory; events go out through the broker's ``broadcast`` (the memory broker
hands them to this process's hub). A change and its serial are applied under one lock with no ``await`` in
between, and the frame is handed to the broker before any other change can run on the event loop, so frames
leave in serial order.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .._conf import pulse_settings
from ..broker.base import Broker
from ..protocol import PresenceEvent, presence_frame
from .base import (
    EnterLimits,
    Member,
    PresenceBackend,
    PresenceChange,
    PresenceSnapshot,
    enter_refusal,
    limit_error,
    not_present_error,
    presence_topic,
)

__all__ = ["MemoryPresence"]


class MemoryPresence(PresenceBackend):
    """Members in a dict per ``(kbId, channel)`` (insertion order = entry order), serials in another."""

    def __init__(self, *, broker: Broker | None = None, **kwargs: Any) -> None:
        super().__init__(broker=broker)
        self._lock = threading.Lock()  # sync readers (views) run in other threads
        self._channels: dict[tuple[str, str], dict[str, Member]] = {}
        self._serials: dict[tuple[str, str], int] = {}
        # Empty channels, by the monotonic time they became empty (oldest first): their serial is forgotten after
        # CHANNEL_TTL s unless a connection of this process subscribes to their presence (its snapshot's serial
        # must stay below the next event's).
        self._empty_since: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _apply(
        self, kb_id: str, channel: str, event: PresenceEvent, member: Member, members: dict[str, Member]
    ) -> PresenceChange:
        """Record a change already made to ``members`` (the channel's dict): next serial, and the frame."""
        key = (kb_id, channel)
        serial = self._serials.get(key, 0) + 1
        self._serials[key] = serial
        now = time.monotonic()
        if members:
            self._channels[key] = members
            self._empty_since.pop(key, None)
        else:
            self._channels.pop(key, None)
            self._empty_since[key] = now
            self._empty_since.move_to_end(key)
        self._forget_idle(now)
        frame = presence_frame(channel=channel, event=event.value, member=member.to_dict(), serial=serial)
        return PresenceChange(kb_id, channel, event, member, serial, frame, len(members))

    def _forget_idle(self, now: float) -> None:
        # Called with self._lock held.
        horizon = now - pulse_settings.CHANNEL_TTL
        empty = self._empty_since
        while empty:
            key, since = next(iter(empty.items()))
            if since >= horizon:
                break
            del empty[key]
            if self.broker.holds(presence_topic(*key)):
                empty[key] = now  # a local presence subscriber: its serial lives on
                continue
            self._serials.pop(key, None)

    async def _enter(
        self, kb_id: str, channel: str, member: Member, data_json: str, limits: EnterLimits
    ) -> PresenceChange:
        with self._lock:
            members = self._channels.get((kb_id, channel), {})
            current = members.get(member.connection_id)
            if current is not None:
                member = Member(member.client_id, member.connection_id, member.data, current.timestamp)
                event = PresenceEvent.UPDATE
            else:
                refusal = enter_refusal(limits, member.client_id, [m.client_id for m in members.values()])
                if refusal is not None:
                    raise limit_error(refusal, channel, limits)
                event = PresenceEvent.ENTER
            members[member.connection_id] = member  # an update keeps its place (entry order)
            change = self._apply(kb_id, channel, event, member, members)
        await self._broadcast(change)
        return change

    async def _update(self, kb_id: str, channel: str, connection_id: str, data: Any, data_json: str) -> PresenceChange:
        with self._lock:
            members = self._channels.get((kb_id, channel), {})
            current = members.get(connection_id)
            if current is None:
                raise not_present_error(channel, connection_id)
            member = Member(current.client_id, connection_id, data, current.timestamp)
            members[connection_id] = member
            change = self._apply(kb_id, channel, PresenceEvent.UPDATE, member, members)
        await self._broadcast(change)
        return change

    async def _leave(self, kb_id: str, channel: str, connection_id: str) -> PresenceChange:
        with self._lock:
            members = self._channels.get((kb_id, channel), {})
            current = members.pop(connection_id, None)
            if current is None:
                raise not_present_error(channel, connection_id)
            change = self._apply(kb_id, channel, PresenceEvent.LEAVE, current, members)
        await self._broadcast(change)
        return change

    async def _broadcast(self, change: PresenceChange) -> None:
        await self.broker.broadcast(presence_topic(change.kb_id, change.channel), change.frame)

    async def _snapshot(self, kb_id: str, channel: str) -> PresenceSnapshot:
        return self._snapshot_sync(kb_id, channel)

    def _snapshot_sync(self, kb_id: str, channel: str) -> PresenceSnapshot:
        with self._lock:
            key = (kb_id, channel)
            return PresenceSnapshot(
                kb_id, channel, self._serials.get(key, 0), list(self._channels.get(key, {}).values())
            )

    def _channel_counts_sync(self, kb_id: str) -> dict[str, int]:
        with self._lock:
            return {channel: len(members) for (kb, channel), members in self._channels.items() if kb == kb_id}
