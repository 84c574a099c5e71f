"""The presence actions of the WebSocket protocol, and what a connection's start and end mean for presence.

Registered on ``PulseConsumer.handlers`` when ``django_pulse.server.consumer`` is imported. docs/protocol.md and
docs/presence.md are the contract:

- ``presence.enter`` / ``presence.update`` need the ``presence`` operation on the
  channel; ``presence.get`` / ``presence.subscribe`` need ``presence`` or ``subscribe``; else ``forbidden``.
  Allowed means: granted by the token's capabilities and by the channel's authorize hook, if it has one
  (``PulseConsumer.authorize``). A hook that returns a dict for ``presence`` sets the member's data
  (the client's ``data`` is ignored, so it cannot be forged).
- ``presence.subscribe`` subscribes the topic first, then reads the snapshot (members + serial); events that
  arrive meanwhile are held back until the ``ok`` carrying the snapshot has been queued, and only events with a
  serial above the snapshot's are forwarded: no gap, no duplicate.
- A clean end (close 1000/1001, or any close the server decided) leaves at once; an abrupt one (1006: no close
  frame; 4011: heartbeat timeout) keeps the members ``PRESENCE_GRACE`` s, so a resuming connection can cancel
  the leave (``runtime.presence.cancel_pending_leave(connection_id)``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .._conf import pulse_settings
from ..exceptions import Forbidden, LimitExceeded
from ..presence import presence_topic
from ..protocol import CloseCode, ErrorCode, Operation, Request, ok_frame, presence_frame_serial

logger = logging.getLogger("django_pulse.presence")

if TYPE_CHECKING:
    from ..authorization import Decision
    from ..protocol.tokens import Claims
    from .outbox import Outbox
    from .runtime import Runtime


class PresenceConnection(Protocol):
    """What the presence actions need of a connection (``PulseConsumer`` is one)."""

    kb_id: str
    client_id: str
    connection_id: str
    # The runtime the connection was made with: its presence backend, hub and liveness are the ones used here.
    runtime: Runtime
    claims: Claims | None
    outbox: Outbox | None
    closed: bool
    superseded: bool
    # channel -> the sink of this connection's presence.subscribe on it (None until the first one)
    presence_subscriptions: dict[str, PresenceSink] | None

    @property
    def max_subscriptions(self) -> int: ...

    def send_frame(self, text: str) -> None: ...

    async def authorize(self, channel: str, operation: Operation) -> Decision: ...


__all__ = [
    "ABRUPT_CLOSE_CODES",
    "PresenceConnection",
    "PresenceSink",
    "connection_continued",
    "connection_ended",
    "connection_started",
    "recovered_elsewhere",
]

# Close codes after which a connection's members are kept for the grace period (the client may come back).
ABRUPT_CLOSE_CODES = frozenset({1006, int(CloseCode.HEARTBEAT_TIMEOUT)})
# The code uvicorn closes every WebSocket with when it shuts down (clients do not send it): a handover.
HANDOVER_CLOSE_CODE = 1012


class PresenceSink:
    """The hub sink of one connection's ``presence.subscribe`` on one channel.

    Until ``release(serial)`` it holds events back; afterwards it forwards to the connection's outbox only
    events whose serial is above ``serial`` (those at or below it are in the snapshot the client got).
    """

    __slots__ = ("after", "held", "outbox")

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.held: list[tuple[dict[str, Any], int]] | None = []
        self.after = 0

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        if self.held is not None:
            self.held.append((message, nbytes))
        elif self._newer(message):
            self.outbox.push(message, nbytes)

    def _newer(self, message: dict[str, Any]) -> bool:
        try:
            return presence_frame_serial(message["text"]) > self.after
        except (KeyError, ValueError):
            return True  # not a presence event (e.g. a discontinuity notice): always forwarded

    def release(self, serial: int) -> None:
        """The snapshot at ``serial`` has been queued: forward what is newer, from now on directly."""
        held, self.held = self.held or [], None
        self.after = serial
        for message, nbytes in held:
            if self._newer(message):
                self.outbox.push(message, nbytes)


async def _require(conn: PresenceConnection, channel: str, *operations: Operation) -> Decision:
    """The first of ``operations`` the token's capabilities and the channel's authorize hook allow;
    ``Forbidden`` (the last refusal) when none is."""
    refusal: Forbidden | None = None
    for operation in operations:
        try:
            return await conn.authorize(channel, operation)
        except Forbidden as exc:
            refusal = exc
    assert refusal is not None
    raise refusal


async def enter(conn: PresenceConnection, request: Request) -> dict[str, Any]:
    channel = request.channel
    decision = await _require(conn, channel, Operation.PRESENCE)
    data = request.members.get("data") if decision.presence_data is None else decision.presence_data
    presence = conn.runtime.presence
    limit = pulse_settings.PRESENCE_MAX_CHANNELS
    if limit > 0:
        # Handlers of one connection run one at a time: no other enter of this connection runs meanwhile.
        present = presence.present_channels(conn.connection_id)
        if (conn.kb_id, channel) not in present and len(present) >= limit:
            raise LimitExceeded(
                f"This connection is present on {limit} channels already (PRESENCE_MAX_CHANNELS); leave one first.",
                ErrorCode.TOO_MANY_PRESENCE_CHANNELS,
            )
    change = await presence.enter(
        conn.kb_id, channel, client_id=conn.client_id, connection_id=conn.connection_id, data=data
    )
    return {"member": change.member.to_dict()}


async def update(conn: PresenceConnection, request: Request) -> dict[str, Any]:
    channel = request.channel
    decision = await _require(conn, channel, Operation.PRESENCE)
    data = request.members.get("data") if decision.presence_data is None else decision.presence_data
    change = await conn.runtime.presence.update(conn.kb_id, channel, connection_id=conn.connection_id, data=data)
    return {"member": change.member.to_dict()}


async def leave(conn: PresenceConnection, request: Request) -> dict[str, Any]:
    channel = request.channel
    # Leaving one's own membership needs no permission (the enter was checked).
    await conn.runtime.presence.leave(conn.kb_id, channel, connection_id=conn.connection_id)
    return {"channel": channel}


async def get(conn: PresenceConnection, request: Request) -> dict[str, Any]:
    channel = request.channel
    await _require(conn, channel, Operation.PRESENCE, Operation.SUBSCRIBE)
    snapshot = await conn.runtime.presence.snapshot(conn.kb_id, channel)
    return {"channel": channel, "members": [m.to_dict() for m in snapshot.members]}


async def subscribe(conn: PresenceConnection, request: Request) -> dict[str, Any] | None:
    channel = request.channel
    await _require(conn, channel, Operation.PRESENCE, Operation.SUBSCRIBE)
    assert conn.outbox is not None
    subs = conn.presence_subscriptions
    if subs is None:
        subs = conn.presence_subscriptions = {}
    if channel in subs:  # idempotent: a fresh snapshot, events keep flowing once
        snapshot = await conn.runtime.presence.snapshot(conn.kb_id, channel)
        return {"channel": channel, "members": [m.to_dict() for m in snapshot.members]}
    if len(subs) >= conn.max_subscriptions:
        raise LimitExceeded(
            f"At most {conn.max_subscriptions} presence subscriptions per connection.",
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
        )
    topic = presence_topic(conn.kb_id, channel)
    sink = PresenceSink(conn.outbox)
    subs[channel] = sink
    hub = conn.runtime.hub
    try:
        # Active before the snapshot is read: every later change reaches the sink.
        await hub.subscribe(topic, sink)
        snapshot = await conn.runtime.presence.snapshot(conn.kb_id, channel)
    except BaseException:
        subs.pop(channel, None)
        await hub.unsubscribe(topic, sink)
        raise
    if conn.closed:
        subs.pop(channel, None)
        await hub.unsubscribe(topic, sink)
        return None
    result = {"channel": channel, "members": [m.to_dict() for m in snapshot.members]}
    # The reply goes out here (not by the consumer after we return) so that held-back events follow it.
    if request.ref is not None:
        conn.send_frame(ok_frame(request.ref, result))
    sink.release(snapshot.serial)
    return None


async def unsubscribe(conn: PresenceConnection, request: Request) -> dict[str, Any]:
    channel = request.channel
    subs = conn.presence_subscriptions
    sink = subs.pop(channel, None) if subs else None
    if sink is not None:
        await conn.runtime.hub.unsubscribe(presence_topic(conn.kb_id, channel), sink)
    return {"channel": channel}


async def connection_started(conn: PresenceConnection) -> None:
    """An authenticated connection: count it, and make sure this process is registered and sweeping."""
    runtime = conn.runtime
    liveness = runtime.liveness
    liveness.connection_opened()
    runtime.metrics.ensure_loop_monitor()
    try:
        await liveness.ensure_started()
    except Exception:
        # Redis unreachable: the connection still works; the liveness loop starts with a later connection.
        logger.warning("pulse: could not register this server process", exc_info=True)


async def connection_ended(conn: PresenceConnection, code: int) -> None:
    """The connection is gone: stop its presence subscriptions, and leave now or after the grace period."""
    runtime = conn.runtime
    hub = runtime.hub
    subs = conn.presence_subscriptions
    if subs:
        for channel, sink in list(subs.items()):
            await hub.unsubscribe(presence_topic(conn.kb_id, channel), sink)
        subs.clear()
    if conn.claims is None:
        return
    runtime.liveness.connection_closed()
    presence = runtime.presence
    if conn.superseded:
        return  # a newer connection continues this id (auth recover): its members stay with it
    if presence.handing_over or code == HANDOVER_CLOSE_CODE:
        # This process is stopping (a deploy: our shutdown, or uvicorn's 1012): the members stay in the shared
        # store, held for this process, until the client continues its connection on another process (auth
        # recover adopts them, no leave and no enter) or the live processes' sweep removes them PRESENCE_GRACE s
        # after the shutdown (docs/deployment.md, "Presence across a restart").
        presence.continued_elsewhere(conn.connection_id)
        return
    if code in ABRUPT_CLOSE_CODES:
        presence.leave_connection_later(conn.connection_id)
    else:
        await presence.leave_connection(conn.connection_id)


async def connection_continued(conn: PresenceConnection, previous_process: str) -> None:
    """``conn`` continues the connection id last held by ``previous_process`` (``auth`` ``recover``): the id's
    members stay, held by this process, with no leave or enter event."""
    await conn.runtime.presence.continue_here(conn.connection_id, previous_process)


def recovered_elsewhere(runtime: Runtime, command: dict[str, Any]) -> None:
    """A connection continued ``command["connectionId"]`` (the hub's ``recovered``, on every process): the
    processes other than the new holder forget the id's members (without leaving them) and cancel their
    grace-period leave. The runtime hands it to its hub (``Hub.recovered_listeners``)."""
    if command.get("processId") != runtime.broker.process_id:
        runtime.presence.continued_elsewhere(str(command.get("connectionId")))
