"""Clients for programs other than this Django project: install with ``pip install django-pulse-realtime[client]``.

- ``Realtime`` (``clients.websocket``): an asyncio WebSocket client of the Pulse protocol (needs ``websockets``).
- ``PulseClient`` (``clients.http``): a client of the HTTP API (standard library only).
- ``exceptions``: one exception tree for both, rooted at ``PulseClientError``.

The server never imports this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import PulseClientError, PulseConnectionError, PulseReplyError
from .http import PulseAPIError, PulseClient

if TYPE_CHECKING:
    from .websocket import Realtime

__all__ = ["PulseAPIError", "PulseClient", "PulseClientError", "PulseConnectionError", "PulseReplyError", "Realtime"]


def __getattr__(name: str) -> Any:
    # Lazy: the WebSocket client needs the optional ``websockets`` package ([client] extra).
    if name == "Realtime":
        try:
            from .websocket import Realtime
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "django_pulse.clients.Realtime needs the 'websockets' package: "
                "pip install 'django-pulse-realtime[client]'"
            ) from exc
        return Realtime
    raise AttributeError(f"module 'django_pulse.clients' has no attribute {name!r}")
