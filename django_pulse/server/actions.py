"""The channel actions of the protocol: subscribe (with resume and rewind), unsubscribe, publish, history.

Each is an async ``(connection, request) -> ok members | None`` handler; a ``PulseError`` becomes the error
reply. ``HANDLERS`` maps actions to them (the consumer registers them). Presence actions are in
``presence_actions.py``. docs/protocol.md and docs/history.md are the contract.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..broker.base import message_topic
from ..exceptions import Forbidden, LimitExceeded
from ..protocol import Action, ErrorCode, Operation, Request, encode_data, history_ok_frame, ok_frame
from .publishing import publish_as_client
from .recovery import ReplaySink, plan_subscribe
from .runtime import get_runtime

if TYPE_CHECKING:
    from .consumer import PulseConsumer

__all__ = ["HANDLERS", "history", "publish", "subscribe", "unsubscribe"]

# Messages a history request without ``limit`` returns (at most HISTORY_SIZE).
DEFAULT_HISTORY_LIMIT = 100


async def subscribe(conn: PulseConsumer, request: Request) -> dict[str, Any] | None:
    """Subscribe; with ``resume`` replay what the client missed, with ``rewind`` the newest retained messages.

    After the ``ok`` the connection receives every message with a serial above the reply's ``serial`` exactly
    once, in order (docs/history.md; ``history.py`` describes the seam).
    """
    channel = request.channel
    assert conn.claims is not None and conn.outbox is not None
    await conn.authorize(channel, Operation.SUBSCRIBE)
    broker = get_runtime().broker
    hub = get_runtime().hub
    topic = conn.subscriptions.get(channel)
    if topic is not None:
        # Already subscribed: the connection has been receiving all along; nothing is replayed.
        read = await broker.history(topic)
        return {"channel": channel, "serial": read.serial, "epoch": read.epoch}
    if len(conn.subscriptions) >= conn.limits.max_subscriptions:
        raise LimitExceeded(
            f"At most {conn.limits.max_subscriptions} subscriptions per connection.", ErrorCode.TOO_MANY_SUBSCRIPTIONS
        )
    members = request.members
    resume: tuple[int, str] | None = None
    if "resume" in members:
        resume = (int(members["resume"]["serial"]), str(members["resume"]["epoch"]))
    rewind = int(members.get("rewind", 0))
    size = conn.limits.history_size
    if rewind:
        await conn.authorize(channel, Operation.HISTORY)
    elif resume is not None and not await _may_read_history(conn, channel):
        size = 0  # recovery replays history: without the history operation only an exact resume succeeds
    topic = message_topic(conn.kb_id, channel)
    sink = ReplaySink(conn.outbox, conn._caught_up)
    conn.subscriptions[channel] = topic
    conn.catching_up[topic] = sink
    try:
        await hub.subscribe(topic, sink)
    except BaseException:
        conn.subscriptions.pop(channel, None)
        conn.catching_up.pop(topic, None)
        raise
    try:
        if conn.closed:  # closed while waiting for the broker: _finish may have run already
            raise _Gone
        # Read after the subscription is active: every message newer than the read reaches the sink.
        if resume is not None:
            read = await broker.history(topic, after=resume[0], limit=size)
        else:
            read = await broker.history(topic, limit=min(rewind, size))
        if conn.closed:
            raise _Gone
    except BaseException as exc:
        conn.subscriptions.pop(channel, None)
        conn.catching_up.pop(topic, None)
        await hub.unsubscribe(topic, sink)
        if isinstance(exc, _Gone):
            return None
        raise
    plan = plan_subscribe(read, resume=resume, rewind=rewind)
    result: dict[str, Any] = {"channel": channel, "serial": plan.serial, "epoch": read.epoch}
    if plan.resumed is not None:
        result["resumed"] = plan.resumed
    # The reply goes out here, before the replay and the held live frames (the handler returns None).
    if request.ref is not None:
        conn.send_frame(ok_frame(request.ref, result))
    for frame in plan.frames:
        conn.send_frame(frame)
    sink.release(read.serial)
    return None


class _Gone(Exception):
    """The connection closed while a subscribe was waiting."""


async def _may_read_history(conn: PulseConsumer, channel: str) -> bool:
    try:
        await conn.authorize(channel, Operation.HISTORY)
    except Forbidden:
        return False
    return True


async def history(conn: PulseConsumer, request: Request) -> dict[str, Any] | None:
    """The newest ``limit`` retained messages (before serial ``before``), oldest first."""
    channel = request.channel
    await conn.authorize(channel, Operation.HISTORY)
    members = request.members
    limit = min(int(members.get("limit", DEFAULT_HISTORY_LIMIT)), conn.limits.history_size)
    before = members.get("before")
    read = await get_runtime().broker.history(message_topic(conn.kb_id, channel), before=before, limit=limit)
    if request.ref is not None and not conn.closed:
        conn.send_frame(
            history_ok_frame(
                request.ref,
                {"channel": channel, "serial": read.serial, "epoch": read.epoch},
                [f for _, f in read.frames],
            )
        )
    return None


async def unsubscribe(conn: PulseConsumer, request: Request) -> dict[str, Any]:
    channel = request.channel
    topic = conn.subscriptions.pop(channel, None)
    if topic is not None:
        await get_runtime().hub.unsubscribe(topic, conn.take_sink(topic))
    return {"channel": channel}


async def publish(conn: PulseConsumer, request: Request) -> dict[str, Any]:
    channel = request.channel
    await conn.authorize(channel, Operation.PUBLISH)
    if not conn._publishes.allow(time.monotonic()):
        raise LimitExceeded(
            f"At most {conn.limits.publish_rate:g} publishes per second per connection.", ErrorCode.RATE_LIMITED
        )
    members = request.members
    message_id, serial = await publish_as_client(
        kb_id=conn.kb_id,
        client_id=conn.client_id,
        channel=channel,
        event=members["name"],
        data_json=encode_data(members.get("data")),
        id=members.get("id"),
    )
    return {"id": message_id, "serial": serial}


HANDLERS = {
    Action.SUBSCRIBE: subscribe,
    Action.UNSUBSCRIBE: unsubscribe,
    Action.PUBLISH: publish,
    Action.HISTORY: history,
}
