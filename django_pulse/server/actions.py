"""The channel actions of the protocol: subscribe (with resume and rewind), unsubscribe, publish, history,
whisper.

Each is an async ``(connection, request) -> ok members | None`` handler; a ``PulseError`` becomes the error
reply. ``HANDLERS`` maps every action of a connection to its handler, these and the presence actions of
``presence_actions.py`` (the consumer registers them). docs/protocol.md and docs/history.md are the contract.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..broker.base import RESUME_LIMIT, message_topic
from ..exceptions import Forbidden, LimitExceeded, ProtocolViolation
from ..protocol import (
    Action,
    ErrorCode,
    Operation,
    RateLimiter,
    Request,
    encode_data,
    excluded_connection,
    excluded_frame,
    history_ok_frame,
    ok_frame,
    utf8_len,
    whisper_frame,
)
from . import presence_actions
from .publishing import publish_as_client
from .recovery import ReplaySink, began_afresh, plan_subscribe

if TYPE_CHECKING:
    from .consumer import PulseConsumer

__all__ = ["HANDLERS", "history", "publish", "subscribe", "unsubscribe", "whisper"]

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
    runtime = conn.runtime
    broker, hub = runtime.broker, runtime.hub
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
    # Interned: every connection subscribed to a channel holds these two strings as long as it stays subscribed.
    channel = sys.intern(channel)
    topic = sys.intern(message_topic(conn.kb_id, channel))
    sink = ReplaySink(conn.outbox, conn._caught_up)
    conn.subscriptions[channel] = topic
    conn.catch_up(topic, sink)
    try:
        await hub.subscribe(topic, sink)
    except BaseException:
        conn.subscriptions.pop(channel, None)
        conn.stop_catching_up(topic)
        raise
    try:
        if conn.closed:  # closed while waiting for the broker: _finish may have run already
            raise _Gone
        # Read after the subscription is active: every message newer than the read reaches the sink.
        if resume is not None:
            limit = max(size, RESUME_LIMIT) if size else 0
            read = await broker.history(topic, after=resume[0], limit=limit)
            if limit and began_afresh(read, resume):  # the channel started again: all of it is new to the client
                read = await broker.history(topic, limit=size)
        else:
            read = await broker.history(topic, limit=min(rewind, size))
        if conn.closed:
            raise _Gone
    except BaseException as exc:
        conn.subscriptions.pop(channel, None)
        conn.stop_catching_up(topic)
        await hub.unsubscribe(topic, sink)
        if isinstance(exc, _Gone):
            return None
        raise
    plan = plan_subscribe(read, resume=resume, rewind=rewind)
    result: dict[str, Any] = {"channel": channel, "serial": plan.serial, "epoch": read.epoch}
    if plan.resumed is not None:
        result["resumed"] = plan.resumed
        runtime.metrics.resumed(plan.resumed)
    # The reply goes out here, before the replay and the held live frames (the handler returns None).
    if request.ref is not None:
        conn.send_frame(ok_frame(request.ref, result))
    for frame in plan.frames:
        conn.send_frame(_as_seen_by(conn.connection_id, frame))
    sink.release(read.serial, settled=broker.settled())
    return None


def _as_seen_by(connection_id: str, frame: str) -> str:
    """A replayed frame as ``connection_id`` gets it: a message it published for the others only (or that was
    published excluding it) is its ``excluded`` stand-in, as it was live, never the message."""
    if excluded_connection(frame) == connection_id:
        return excluded_frame(frame) or frame
    return frame


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
    read = await conn.runtime.broker.history(message_topic(conn.kb_id, channel), before=before, limit=limit)
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
        await conn.runtime.hub.unsubscribe(topic, conn.take_sink(topic))
    return {"channel": channel}


def _within_rate(conn: PulseConsumer, limiter: RateLimiter, rate: float, what: str) -> None:
    """``LimitExceeded`` (``rate_limited``, counted) when ``limiter`` refuses one more of ``what`` now."""
    if not limiter.allow(time.monotonic()):
        conn.runtime.metrics.rate_limited()
        raise LimitExceeded(f"At most {rate:g} {what} per second per connection.", ErrorCode.RATE_LIMITED)


async def publish(conn: PulseConsumer, request: Request) -> dict[str, Any]:
    channel = request.channel
    await conn.authorize(channel, Operation.PUBLISH)
    _within_rate(conn, conn.publish_limiter(), conn.limits.publish_rate, "publishes")
    members = request.members
    exclude = members.get("exclude")
    if exclude is not None and exclude != conn.connection_id:
        raise ProtocolViolation(
            "A client may exclude only its own connection: 'exclude' must be this connection's connectionId.",
            ErrorCode.BAD_REQUEST,
        )
    message_id, serial = await publish_as_client(
        conn.runtime,
        kb_id=conn.kb_id,
        client_id=conn.client_id,
        channel=channel,
        event=members["name"],
        data_json=encode_data(members.get("data")),
        id=members.get("id"),
        exclude=exclude,
    )
    return {"id": message_id, "serial": serial}


async def whisper(conn: PulseConsumer, request: Request) -> dict[str, Any]:
    """Relay a client event to the channel's other subscribers on every server process, through the broker's
    pub/sub only: never stored, no serial, not sent back to this connection (docs/protocol.md)."""
    channel = request.channel
    await conn.authorize(channel, Operation.WHISPER)
    _within_rate(conn, conn.whisper_limiter(), conn.limits.whisper_rate, "whispers")
    members = request.members
    frame = whisper_frame(
        connection_id=conn.connection_id,
        channel=channel,
        name=members["name"],
        data_json=encode_data(members.get("data")),
        client_id=conn.client_id,
    )
    limit = conn.limits.max_message_size
    if utf8_len(frame) > limit:
        raise LimitExceeded(f"The whisper is larger than maxMessageSize ({limit} bytes).", ErrorCode.MESSAGE_TOO_LARGE)
    await conn.runtime.broker.broadcast(message_topic(conn.kb_id, channel), frame)
    return {"channel": channel}


HANDLERS = {
    Action.SUBSCRIBE: subscribe,
    Action.UNSUBSCRIBE: unsubscribe,
    Action.PUBLISH: publish,
    Action.HISTORY: history,
    Action.WHISPER: whisper,
    Action.PRESENCE_ENTER: presence_actions.enter,
    Action.PRESENCE_UPDATE: presence_actions.update,
    Action.PRESENCE_LEAVE: presence_actions.leave,
    Action.PRESENCE_GET: presence_actions.get,
    Action.PRESENCE_SUBSCRIBE: presence_actions.subscribe,
    Action.PRESENCE_UNSUBSCRIBE: presence_actions.unsubscribe,
}
