"""The presence backend interface: who is present on a channel, and the events that say when that changes.

A *member* is one connection of one client on one channel of one app: two tabs of one user are two members
with the same ``clientId``. The backend keeps, per ``(kbId, channel)``, the member set and a *presence serial*
that grows by exactly 1 with every change (enter, update, leave). Every change is published as a ``presence``
frame (docs/protocol.md) carrying that serial on the topic ``p:{kbId}:{channel}``, atomically with the change,
so a subscriber that reads a snapshot (serial ``s`` + members) and then forwards only events with a serial
greater than ``s`` sees neither a gap nor a duplicate.

Subclasses implement the ``_``-prefixed primitives; the public methods here validate input, enforce the
limits (``PRESENCE_MAX_DATA`` -> ``presence_data_too_large``, ``PRESENCE_MAX_MEMBERS`` -> ``presence_full``),
keep the index of members owned by this process (for leaving a whole connection, its grace period, and
re-asserting members after a false death), and fire the Django signals of ``django_pulse.signals``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._conf import pulse_settings
from ..broker.base import Broker, presence_topic
from ..exceptions import LimitExceeded, ProtocolViolation, Unavailable
from ..protocol import ErrorCode, PresenceEvent, check_channel

__all__ = [
    "Member",
    "NotPresent",
    "PresenceBackend",
    "PresenceChange",
    "PresenceSnapshot",
    "presence_topic",
]

logger = logging.getLogger("django_pulse.presence")


class NotPresent(ProtocolViolation):
    """``presence.update`` / ``presence.leave`` for a connection that has not entered the channel."""

    default_code = ErrorCode.NOT_PRESENT


@dataclass(frozen=True, slots=True)
class Member:
    """One member: ``timestamp`` is when it entered (ms since the epoch), kept across updates."""

    client_id: str
    connection_id: str
    data: Any
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "connectionId": self.connection_id,
            "data": self.data,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Member:
        return cls(str(value["clientId"]), str(value["connectionId"]), value.get("data"), int(value["timestamp"]))


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """One change as it was applied: the event, the member (for ``leave``: as it was), the channel's presence
    serial after the change, the frame that was published, and the channel's member count after it."""

    kb_id: str
    channel: str
    event: PresenceEvent
    member: Member
    serial: int
    frame: str
    count: int

    @property
    def occupied(self) -> bool:
        """The channel went from no member to one."""
        return self.event is PresenceEvent.ENTER and self.count == 1

    @property
    def vacated(self) -> bool:
        """The channel went from one member to none."""
        return self.event is PresenceEvent.LEAVE and self.count == 0


@dataclass(frozen=True, slots=True)
class PresenceSnapshot:
    """The members of a channel and the presence serial they are current at, read atomically."""

    kb_id: str
    channel: str
    serial: int
    members: list[Member] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def client_ids(self) -> set[str]:
        return {m.client_id for m in self.members}

    def to_dict(self) -> dict[str, Any]:
        """The SDK's answer: ``{"channel", "count", "clientCount", "members"}`` (members in entry order)."""
        return {
            "channel": self.channel,
            "count": self.count,
            "clientCount": len(self.client_ids),
            "members": [m.to_dict() for m in self.members],
        }


def now_ms() -> int:
    return int(time.time() * 1000)


class EnterLimits(NamedTuple):
    """The limits a new member is checked against: ``PRESENCE_MAX_MEMBERS`` (signed-in clients),
    ``PRESENCE_MAX_MEMBERS_PER_CLIENT`` (0: none) and ``PRESENCE_MAX_ANONYMOUS_MEMBERS``."""

    members: int
    per_client: int = 0
    anonymous: int = 0


class PresenceBackend(ABC):
    """Presence state of every app and channel; one instance per process (the runtime's ``presence``).

    ``broker`` is the process's broker, attached by the runtime before first use: presence events go out
    through it, and with Redis its process id names the members this process owns.
    """

    broker: Broker

    def __init__(self, *, broker: Broker | None = None) -> None:
        if broker is not None:
            self.broker = broker
        # Members this process owns, by connection: connectionId -> {(kbId, channel): member}.
        self._owned: dict[str, dict[tuple[str, str], Member]] = {}
        # Pending grace-period leaves of abruptly dropped connections: connectionId -> timer.
        self._pending_leaves: dict[str, asyncio.TimerHandle] = {}
        self._grace_tasks: set[asyncio.Task[list[PresenceChange]]] = set()
        # Ended connections whose leave failed (the store was unreachable): retried by the registry's loop.
        self._failed_leaves: set[str] = set()
        # Set by a graceful shutdown with shared state: ending connections hand their members over instead of
        # leaving (docs/deployment.md).
        self.handing_over = False

    # --- primitives (subclasses) ---------------------------------------------------------------------------

    @abstractmethod
    async def _enter(
        self, kb_id: str, channel: str, member: Member, data_json: str, limits: EnterLimits
    ) -> PresenceChange:
        """Add ``member`` (or, if its connection is present already, replace its data keeping its entry time:
        an ``update``), bump the serial and publish the frame, atomically. ``LimitExceeded(presence_client_limit)``
        when its client id holds ``limits.per_client`` members of the channel already (0: no limit), checked
        first; ``LimitExceeded(presence_full)`` when a new member would pass ``limits.members``, counting the
        members of signed-in clients only; a member of an anonymous visitor (``is_anonymous_client``) is counted
        apart and refused (``presence_full``) past ``limits.anonymous`` of them."""

    @abstractmethod
    async def _update(self, kb_id: str, channel: str, connection_id: str, data: Any, data_json: str) -> PresenceChange:
        """Replace a present member's data; ``NotPresent`` otherwise."""

    @abstractmethod
    async def _leave(self, kb_id: str, channel: str, connection_id: str) -> PresenceChange:
        """Remove a present member; ``NotPresent`` otherwise."""

    @abstractmethod
    async def _snapshot(self, kb_id: str, channel: str) -> PresenceSnapshot: ...

    @abstractmethod
    def _snapshot_sync(self, kb_id: str, channel: str) -> PresenceSnapshot: ...

    @abstractmethod
    def _channel_counts_sync(self, kb_id: str) -> dict[str, int]: ...

    async def _channel_counts(self, kb_id: str) -> dict[str, int]:
        return self._channel_counts_sync(kb_id)

    async def aclose(self) -> None:
        """Release connections and timers (tests, settings changes)."""
        self.close()

    def close(self) -> None:
        """Cancel pending grace-period leaves and release connections, without a loop (settings changed)."""
        for handle in self._pending_leaves.values():
            handle.cancel()
        self._pending_leaves.clear()

    # --- the interface ---------------------------------------------------------------------------------------

    async def enter(
        self, kb_id: str, channel: str, *, client_id: str, connection_id: str, data: Any = None
    ) -> PresenceChange:
        """Enter ``connection_id`` of ``client_id`` into ``channel`` with ``data``.

        Entering again from the same connection replaces the data (an ``update`` event; entry time kept).
        Raises ``ProtocolViolation`` (``invalid_channel``/``bad_request``) for bad input and
        ``LimitExceeded`` (``presence_data_too_large``/``presence_client_limit``/``presence_full``) over a limit.
        """
        check_channel(channel)
        data_json = encode_data(data)
        member = Member(str(client_id), str(connection_id), data, now_ms())
        limits = EnterLimits(
            pulse_settings.PRESENCE_MAX_MEMBERS,
            pulse_settings.PRESENCE_MAX_MEMBERS_PER_CLIENT,
            pulse_settings.PRESENCE_MAX_ANONYMOUS_MEMBERS,
        )
        change = await self._enter(kb_id, channel, member, data_json, limits)
        self._own(change)
        await self._notify(change)
        return change

    async def update(self, kb_id: str, channel: str, *, connection_id: str, data: Any = None) -> PresenceChange:
        """Replace the data of ``connection_id``'s member; ``NotPresent`` if it has not entered."""
        check_channel(channel)
        data_json = encode_data(data)
        change = await self._update(kb_id, channel, str(connection_id), data, data_json)
        self._own(change)
        await self._notify(change)
        return change

    async def leave(self, kb_id: str, channel: str, *, connection_id: str) -> PresenceChange:
        """Remove ``connection_id``'s member from ``channel``; ``NotPresent`` if it has not entered."""
        check_channel(channel)
        try:
            change = await self._leave(kb_id, channel, str(connection_id))
        except NotPresent:
            self._disown(str(connection_id), kb_id, channel)  # gone already (swept): no longer ours
            raise
        # (On Unavailable it stays ours: it is still in the store.)
        self._disown(str(connection_id), kb_id, channel)
        await self._notify(change)
        return change

    async def leave_connection(self, connection_id: str) -> list[PresenceChange]:
        """Leave every channel ``connection_id`` is present on (its clean close, or its grace expired).

        If the store is unreachable the remaining memberships are kept and retried by ``retry_failed_leaves``
        (the registry's loop calls it), so an ended connection never stays present for good.
        """
        self.cancel_pending_leave(connection_id)
        changes: list[PresenceChange] = []
        for kb_id, channel in list(self._owned.get(connection_id, {})):
            try:
                changes.append(await self.leave(kb_id, channel, connection_id=connection_id))
            except NotPresent:  # swept meanwhile
                pass
            except Unavailable:
                self._failed_leaves.add(connection_id)
                logger.warning("presence: could not leave %s from %r now; will retry", connection_id, channel)
        if connection_id not in self._failed_leaves:
            self._owned.pop(connection_id, None)
        return changes

    async def retry_failed_leaves(self) -> list[PresenceChange]:
        """Try again to leave the memberships of ended connections whose leave failed."""
        changes: list[PresenceChange] = []
        for connection_id in list(self._failed_leaves):
            self._failed_leaves.discard(connection_id)
            changes += await self.leave_connection(connection_id)
        return changes

    def present_channels(self, connection_id: str) -> list[tuple[str, str]]:
        """``(kbId, channel)`` of every member this process holds for ``connection_id``."""
        return list(self._owned.get(connection_id, {}))

    def leave_connection_later(self, connection_id: str, delay: float | None = None) -> None:
        """Leave everything of ``connection_id`` after ``delay`` s (default ``PRESENCE_GRACE``), unless
        ``cancel_pending_leave`` comes first (a resumed connection). Must run on the event loop."""
        if connection_id not in self._owned:
            return
        self.cancel_pending_leave(connection_id)
        loop = asyncio.get_running_loop()
        wait = pulse_settings.PRESENCE_GRACE if delay is None else delay

        def expire() -> None:
            self._pending_leaves.pop(connection_id, None)
            task = loop.create_task(self.leave_connection(connection_id))
            self._grace_tasks.add(task)
            task.add_done_callback(self._grace_done)

        self._pending_leaves[connection_id] = loop.call_later(wait, expire)

    def _grace_done(self, task: asyncio.Task[list[PresenceChange]]) -> None:
        self._grace_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("presence: leaving after the grace period failed", exc_info=task.exception())

    async def continue_here(self, connection_id: str, previous_process: str) -> None:
        """A connection of this process continues ``connection_id`` (``auth`` ``recover``), last held by
        ``previous_process``: its members stay, now held here, and no event is sent (nobody left or entered).

        Cancels the grace-period leave when it is pending here; takes over members another process held
        (``_adopt``). Members already left (the grace expired, or their process died and was swept) stay left.
        """
        self.cancel_pending_leave(connection_id)
        if connection_id in self._owned:
            return
        for kb_id, channel, member in await self._adopt(connection_id, previous_process):
            self._owned.setdefault(connection_id, {})[(kb_id, channel)] = member

    def continued_elsewhere(self, connection_id: str) -> None:
        """Another process continues ``connection_id``: forget its members here without leaving them."""
        self.cancel_pending_leave(connection_id)
        self._owned.pop(connection_id, None)
        self._failed_leaves.discard(connection_id)

    async def _adopt(self, connection_id: str, previous_process: str) -> list[tuple[str, str, Member]]:
        """Make this process the holder of ``connection_id``'s members held by ``previous_process``; returns
        them as ``(kbId, channel, member)``. One process (memory): nothing to move."""
        return []

    def cancel_pending_leave(self, connection_id: str) -> bool:
        """Cancel the grace-period leave of ``connection_id``; True if one was pending (its members stay)."""
        handle = self._pending_leaves.pop(connection_id, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    async def snapshot(self, kb_id: str, channel: str) -> PresenceSnapshot:
        """The members of ``channel`` and the serial they are current at, read atomically."""
        check_channel(channel)
        return await self._snapshot(kb_id, channel)

    def snapshot_sync(self, kb_id: str, channel: str) -> PresenceSnapshot:
        """``snapshot`` for synchronous callers (views, commands), any thread."""
        check_channel(channel)
        return self._snapshot_sync(kb_id, channel)

    async def members(self, kb_id: str, channel: str) -> list[Member]:
        return (await self.snapshot(kb_id, channel)).members

    async def count(self, kb_id: str, channel: str) -> int:
        return (await self.snapshot(kb_id, channel)).count

    async def client_ids(self, kb_id: str, channel: str) -> set[str]:
        """The distinct clientIds present on ``channel``."""
        return (await self.snapshot(kb_id, channel)).client_ids

    async def channel_counts(self, kb_id: str) -> dict[str, int]:
        """Channel -> member count, for every channel of app ``kb_id`` with at least one member."""
        return await self._channel_counts(kb_id)

    def channel_counts_sync(self, kb_id: str) -> dict[str, int]:
        return self._channel_counts_sync(kb_id)

    async def reassert(self) -> list[PresenceChange]:
        """Enter again every member this process owns (after it was wrongly swept as dead)."""
        changes: list[PresenceChange] = []
        for connection_id, held in list(self._owned.items()):
            if connection_id in self._failed_leaves:
                continue  # ended: to be left, not re-entered
            for (kb_id, channel), member in list(held.items()):
                try:
                    # No per-client limit: the member was admitted before, and is only restored.
                    limits = EnterLimits(
                        pulse_settings.PRESENCE_MAX_MEMBERS, 0, pulse_settings.PRESENCE_MAX_ANONYMOUS_MEMBERS
                    )
                    change = await self._enter(kb_id, channel, member, encode_data(member.data), limits)
                except LimitExceeded:
                    self._disown(connection_id, kb_id, channel)
                    logger.warning("presence: could not re-enter %s on %s (channel full)", connection_id, channel)
                    continue
                changes.append(change)
                await self._notify(change)
        return changes

    # --- helpers ---------------------------------------------------------------------------------------------

    def _own(self, change: PresenceChange) -> None:
        self._owned.setdefault(change.member.connection_id, {})[(change.kb_id, change.channel)] = change.member

    def _disown(self, connection_id: str, kb_id: str, channel: str) -> None:
        held = self._owned.get(connection_id)
        if held is not None:
            held.pop((kb_id, channel), None)
            if not held:
                del self._owned[connection_id]

    async def _notify(self, change: PresenceChange) -> None:
        await send_signals(change)


async def send_signals(change: PresenceChange) -> None:
    """Fire member_entered/updated/left and channel_occupied/vacated for ``change``; receivers' errors are
    logged, never raised."""
    from .. import signals

    member_signal = {
        PresenceEvent.ENTER: signals.member_entered,
        PresenceEvent.UPDATE: signals.member_updated,
        PresenceEvent.LEAVE: signals.member_left,
    }[change.event]
    sent = [(member_signal, {"member": change.member.to_dict()})]
    if change.occupied:
        sent.append((signals.channel_occupied, {}))
    if change.vacated:
        sent.append((signals.channel_vacated, {}))
    for signal, extra in sent:
        results = await signal.asend_robust(sender=PresenceBackend, kb_id=change.kb_id, channel=change.channel, **extra)
        for receiver, result in results:
            if isinstance(result, BaseException):
                logger.error("presence: signal receiver %r raised", receiver, exc_info=result)


def encode_json(value: Any) -> str:
    """Compact JSON, UTF-8 kept (as frames are encoded), NaN/Infinity refused (they are not JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_data(data: Any) -> str:
    """The JSON text of member data, checked against ``PRESENCE_MAX_DATA`` (UTF-8 bytes)."""
    try:
        text = encode_json(data)
    except (TypeError, ValueError) as exc:
        raise ProtocolViolation(f"presence data must be JSON: {exc}", ErrorCode.BAD_REQUEST) from exc
    limit = pulse_settings.PRESENCE_MAX_DATA
    size = len(text.encode())
    if size > limit:
        raise LimitExceeded(
            f"presence data is {size} bytes encoded, over the limit of {limit}", ErrorCode.PRESENCE_DATA_TOO_LARGE
        )
    return text


#: The client-id prefixes of anonymous visitors: ``anon-`` (``POST token/anonymous/``) and ``anonymous-`` (an SSE
#: stream without a session). Their members are counted apart (``PRESENCE_MAX_ANONYMOUS_MEMBERS``); the Redis
#: scripts (common.lua's ``is_anonymous``) apply the same rule.
ANONYMOUS_PREFIXES = ("anon-", "anonymous-")


def is_anonymous_client(client_id: str) -> bool:
    """Whether ``client_id`` is an anonymous visitor's, minted by the server (``ANONYMOUS_PREFIXES``)."""
    return client_id.startswith(ANONYMOUS_PREFIXES)


def enter_refusal(limits: EnterLimits, client_id: str, present: list[str]) -> str | None:
    """Which limit refuses a new member of ``client_id`` in a channel whose members have the client ids
    ``present``: ``"client"`` (checked first: one client id alone never makes a channel full),
    ``"anonymous_full"`` or ``"full"`` (anonymous visitors and signed-in clients have slots of their own), or
    None. The Redis change script (change.lua) decides by the same rules and answers with the same words."""
    if 0 < limits.per_client <= present.count(client_id):
        return "client"
    anonymous = sum(map(is_anonymous_client, present))
    if is_anonymous_client(client_id):
        return "anonymous_full" if anonymous >= limits.anonymous else None
    return "full" if len(present) - anonymous >= limits.members else None


def limit_error(refusal: str, channel: str, limits: EnterLimits) -> LimitExceeded:
    """The error for a refusal of ``enter_refusal`` (or of the Redis change script, which uses its words)."""
    if refusal == "client":
        return LimitExceeded(
            f"this client holds {limits.per_client} members of channel {channel!r} already "
            "(PRESENCE_MAX_MEMBERS_PER_CLIENT)",
            ErrorCode.PRESENCE_CLIENT_LIMIT,
        )
    if refusal == "anonymous_full":
        return LimitExceeded(
            f"channel {channel!r} has {limits.anonymous} members of anonymous visitors already "
            "(PRESENCE_MAX_ANONYMOUS_MEMBERS); signed-in members have slots of their own",
            ErrorCode.PRESENCE_FULL,
        )
    return LimitExceeded(
        f"channel {channel!r} has {limits.members} members already (PRESENCE_MAX_MEMBERS)", ErrorCode.PRESENCE_FULL
    )


def not_present_error(channel: str, connection_id: str) -> NotPresent:
    return NotPresent(f"connection {connection_id} is not present on channel {channel!r}")
