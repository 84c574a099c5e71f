"""The control plane: commands every server process receives on the broker's control topic.

``app_disabled`` closes this process's connections of an app (4003), ``disconnect`` those of one client (4005),
``recovered`` closes the older copy of a connection that resumed elsewhere (4006).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol import CloseCode

if TYPE_CHECKING:
    from .hub import Hub
    from .outbox import Sink

__all__ = ["RECOVERED", "ControlSink", "ControlTarget", "app_disabled_command"]

logger = logging.getLogger("django_pulse.control")

# Control message type: a connection continued an earlier connection's id (``auth`` ``recover``).
RECOVERED = "recovered"


def app_disabled_command(kb_id: str) -> str:
    """The control message that closes every connection of app ``kb_id`` on every process (4003)."""
    return json.dumps({"type": "app_disabled", "kbId": kb_id}, separators=(",", ":"))


class ControlTarget(Protocol):
    """A registered connection, as the control topic sees it."""

    kb_id: str
    client_id: str
    connection_id: str
    instance: str
    superseded: bool

    def close(self, code: int) -> None: ...

    def subscription_sink(self, topic: str) -> Sink | None:
        """The sink of this connection's subscription to ``topic`` (the hub skips it for frames excluding it)."""


class ControlSink:
    """Receives the control topic: closes this process's connections of a disabled app or a revoked client."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        try:
            command = json.loads(message["text"])
            kind, kb_id = command["type"], command["kbId"]
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring a malformed control message")
            return
        targets = list(self.hub.connections.get(kb_id, ()))
        if kind == "app_disabled":
            self.hub.apps.forget(kb_id)  # publishes from this process check the database again
            for conn in targets:
                conn.close(CloseCode.APP_DISABLED)
        elif kind == "disconnect":
            client_id = command.get("clientId")
            for conn in targets:
                if conn.client_id == client_id:
                    conn.close(CloseCode.REVOKED)
        elif kind == RECOVERED:
            self.hub.recovered(command)
        else:
            logger.warning("Ignoring an unknown control message type %r", kind)
