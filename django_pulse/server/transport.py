"""The transport interface: what a Pulse connection's transport provides, and what it may call on the connection.

``consumer.PulseConsumer`` is the connection (authentication, handlers, rate limits, timers, presence, clean-up)
and its WebSocket transport; ``sse.SSEConnection`` puts the same connection on an HTTP response. Each side uses
only the names below, so neither depends on the other's private ones; mypy checks both classes against these
protocols (the end of ``sse.py``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["ConnectionCore", "Transport"]


class Transport(Protocol):
    """What a transport provides; the connection calls these."""

    #: The transport's name (``"websocket"``, ``"sse"``).
    transport: ClassVar[str]
    #: Whether the heartbeat closes a connection whose client stayed silent (4008) past HEARTBEAT_INTERVAL +
    #: HEARTBEAT_GRACE: only where the client answers pings on the same connection.
    silence_timeout: ClassVar[bool]

    def send_frame(self, text: str) -> None:
        """Queue one protocol frame to the client, after everything queued before it; never blocks."""

    def keepalive(self) -> None:
        """What the heartbeat sends every HEARTBEAT_INTERVAL (the protocol's ping; a comment on a stream that
        carries no protocol frames)."""

    def close(self, code: int) -> None:
        """Close with ``code`` after what is queued; safe from timers and callbacks; idempotent."""


class ConnectionCore(Protocol):
    """What a transport may call on the connection."""

    def attach(self) -> None:
        """The current task serves the connection (the process counts it; shutdown reaches it)."""

    def detach(self) -> None:
        """The serving task is returning."""

    def serving(self) -> AbstractAsyncContextManager[None]:
        """Around the transport's receive loop: a cancellation ends the connection, then ``detach``."""

    def make_outbox(self, send: Any, **kwargs: Any) -> Outbox:
        """The connection's outbox on ``send``, with the connection's limit and slow-consumer close."""

    async def start_session(self) -> bool:
        """Start a connection whose claims the transport set (no ``auth`` frame); False when the hub refused."""

    async def end(self, code: int) -> None:
        """The transport is gone: end subscriptions and presence (with ``code`` unless this side closed)."""

    async def absorb_cancellation(self) -> bool:
        """The serving task was cancelled: end the connection; True when the cancellation is absorbed."""

    async def on_disconnect(self, code: int) -> None:
        """Once, when the connection ended; a transport extends it for its own clean-up (and calls super)."""
