"""The broker interface: moves frames between server processes and assigns per-topic serials.

A *topic* is a string (``message_topic``, ``presence_topic``, ``CONTROL_TOPIC``; docs/architecture.md).
Every frame a broker receives for a topic is handed to its ``delivery`` (this process's hub, attached by the
runtime: ``server.runtime``), which writes it to the local connections subscribed to the topic. A broker
never imports the server layer.
"""

from __future__ import annotations

import abc
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "CONTROL_TOPIC",
    "RESUME_LIMIT",
    "Broker",
    "Delivery",
    "HistoryRead",
    "message_topic",
    "new_epoch",
    "presence_topic",
    "topic_channel",
]

CONTROL_TOPIC = "ctl"
# The most messages one resume replays, and so the most a Redis channel's history keeps however young
# (HISTORY_MIN_RETENTION keeps a failover's backlog past HISTORY_SIZE, up to this many).
RESUME_LIMIT = 10_000


class Delivery(Protocol):
    """Where a broker hands the frames it receives: the hub (``server.hub.Hub``)."""

    def dispatch(self, topic: str, text: str) -> None:
        """Deliver one frame of ``topic`` to the local subscribers; never raises."""

    def discontinuity(self, topic: str, reason: str) -> None:
        """Frames of ``topic`` may have been missed (the broker was away)."""


class _Nowhere:
    """The delivery of a broker not attached to a hub yet: frames are dropped (nobody local subscribed)."""

    def dispatch(self, topic: str, text: str) -> None:
        pass

    def discontinuity(self, topic: str, reason: str) -> None:
        pass


def message_topic(kb_id: str, channel: str) -> str:
    """The topic of messages published on ``channel`` of app ``kb_id``."""
    return f"m:{kb_id}:{channel}"


def presence_topic(kb_id: str, channel: str) -> str:
    """The topic of presence events of ``channel`` of app ``kb_id``."""
    return f"p:{kb_id}:{channel}"


def topic_channel(topic: str) -> str:
    """The channel name of a message or presence topic (a kbId never contains ``:``)."""
    return topic.split(":", 2)[2]


def new_epoch() -> str:
    """A fresh channel epoch: a random name for one lifetime of a topic's serial counter."""
    return secrets.token_urlsafe(9)


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """One read of a topic's counter and history, consistent at one instant.

    ``serial`` is the topic's last serial at the read (0 if none was ever published in this epoch), ``epoch``
    the lifetime of its counter (a new value whenever the counter starts again from nothing: a new process
    with the memory broker, a flushed or evicted key with Redis), ``frames`` the retained ``message`` frames
    that matched the read, ``(serial, text)`` in increasing serial order. ``fork``: after a failover (Redis),
    ``(the epoch this one replaced, the last serial the new master received in it)``; a position at or below
    that serial in that epoch continues in this one (``server.recovery.plan_subscribe``).
    """

    serial: int
    epoch: str
    frames: list[tuple[int, str]] = field(default_factory=list)
    fork: tuple[str, int] | None = None


class Broker(abc.ABC):
    """One per server process (owned by the runtime: ``Runtime.broker``).

    ``publish_message`` assigns the topic's next serial ``n``, keeps the finished frame ``head + str(n) + "}"``
    in the topic's history (``HISTORY_SIZE`` / ``HISTORY_TTL``) and broadcasts it, all atomically, so serial
    order is delivery order in every process and history never disagrees with what was delivered.
    ``broadcast`` carries a complete frame without a serial. Publishing raises ``exceptions.Unavailable`` when
    the broker cannot be reached: never a silent success. ``subscribe`` returns once frames published afterwards
    will reach this process.
    """

    # Failed operations and re-established subscriber connections, counted by the backend; the metrics read them
    # when Prometheus scrapes (pulse_broker_errors_total, pulse_broker_reconnects_total).
    errors = 0
    reconnects = 0

    # True when the broker's state (serials, history, presence) is shared by several server processes (Redis):
    # then a connection held by another process can be continued here.
    shared = False

    def __init__(self) -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.delivery: Delivery = _Nowhere()

    @abc.abstractmethod
    async def publish_message(self, topic: str, head: str) -> int:
        """Assign the next serial of ``topic``, broadcast the finished frame; returns the serial."""

    @abc.abstractmethod
    def publish_message_sync(self, topic: str, head: str) -> int:
        """``publish_message`` for synchronous callers (views in threads, commands, signals)."""

    @abc.abstractmethod
    async def publish_once(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        """``publish_message`` unless ``message_id`` was published on ``topic`` within ``window_ms``.

        Returns ``(serial, True)`` for a repeat (the first publish's serial; nothing is published, no serial
        is used) and ``(serial, False)`` for a publish. The check and the record are part of the publish itself,
        atomically: whatever happened to the first call's reply (a timeout, a lost connection after the
        broker published), a retry with the same id never delivers the message twice, and a publish that
        never happened records nothing.
        """

    @abc.abstractmethod
    def publish_once_sync(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        """``publish_once`` for synchronous callers."""

    def publish_once_batch_sync(
        self, messages: Sequence[tuple[str, str, str]], window_ms: int
    ) -> list[tuple[int, bool]]:
        """``publish_once_sync`` of each ``(topic, head, message_id)`` in ``messages``, in order per topic; returns
        each one's ``(serial, repeated)``. A backend may send them in one round trip (Redis does).

        Raises ``Unavailable`` when not every message is known to be published: a prefix of each topic's messages
        may be, under their ids (a retry of the batch does not deliver those twice and keeps the topic's order).
        """
        return [self.publish_once_sync(topic, head, message_id, window_ms) for topic, head, message_id in messages]

    @abc.abstractmethod
    async def broadcast(self, topic: str, text: str) -> None:
        """Deliver a complete frame to every process subscribed to ``topic``."""

    @abc.abstractmethod
    def broadcast_sync(self, topic: str, text: str) -> None:
        """``broadcast`` for synchronous callers."""

    @abc.abstractmethod
    async def last_serial(self, topic: str) -> int:
        """The serial of the last message published on ``topic`` (0 if none)."""

    @abc.abstractmethod
    async def history(self, topic: str, *, after: int = 0, before: int | None = None, limit: int = 0) -> HistoryRead:
        """The topic's serial and epoch, and its newest ``limit`` retained frames with ``after < serial < before``.

        Creates the topic's counter (serial 0, a new epoch) when it has none, so the epoch a subscriber is told
        is the one its later messages belong to. ``limit=0`` reads only the serial and epoch. Retained means:
        among the last ``HISTORY_SIZE`` messages and published less than ``HISTORY_TTL`` seconds ago.
        """

    @abc.abstractmethod
    def history_sync(self, topic: str, *, after: int = 0, before: int | None = None, limit: int = 0) -> HistoryRead:
        """``history`` for synchronous callers."""

    @abc.abstractmethod
    async def subscribe(self, topic: str) -> None:
        """Start receiving ``topic`` in this process; returns once the subscription is active."""

    @abc.abstractmethod
    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` in this process."""

    # -- SSE transport (docs/transports.md): commands routed to the process holding a stream, tickets ------

    async def deliver(self, topic: str, text: str) -> bool:
        """``broadcast``, and whether any process is subscribed to ``topic`` (True when it cannot be told)."""
        await self.broadcast(topic, text)
        return True

    async def put_once(self, key: str, value: str, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds, for one ``take_once`` (SSE connection tickets).

        Brokers written before the SSE transport lack it: the SSE endpoint then answers 501."""
        raise NotImplementedError(f"{type(self).__name__} does not keep SSE tickets (put_once/take_once)")

    async def take_once(self, key: str) -> str | None:
        """The value ``put_once`` kept under ``key``, removed as it is read; None when absent or expired."""
        raise NotImplementedError(f"{type(self).__name__} does not keep SSE tickets (put_once/take_once)")

    def settled(self) -> bool:
        """True when every frame published so far has been handed to the hub (``delivery``): none is on its way
        any more. A new subscription's read then covers every frame it could still receive that is not newer than
        the read, so it stops filtering at once (``recovery.ReplaySink``). False when the broker cannot tell (Redis:
        frames travel through the pub/sub connection); call it on the event loop."""
        return False

    def holds(self, topic: str) -> bool:
        """Whether this process is subscribed to ``topic`` (state of such a topic is kept past ``CHANNEL_TTL``).
        True when the broker cannot tell."""
        return True

    def redis_channel(self, topic: str) -> str:
        """The Redis pub/sub channel of ``topic`` (Redis brokers only)."""
        raise NotImplementedError(f"{type(self).__name__} has no Redis channels")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and tasks (process shutdown, tests)."""

    def close_nowait(self) -> None:  # noqa: B027 - optional hook
        """Best-effort release from synchronous code (the broker is being replaced)."""
