"""The one exception tree of the clients for other programs::

PulseClientError                 base of every client error
├── PulseConnectionError         the server did not answer (HTTP client)
├── PulseReplyError              an ``error`` reply or a refused ``auth`` (WebSocket client): ``code``, ``message``
└── PulseAPIError                an HTTP API error body: ``status``, ``code``, ``message``
    ├── BadRequest (400)  NotAuthenticated (401)  PermissionDenied (403)  NotFound (404)
    └── PayloadTooLarge (413)  Throttled (429)  ServiceUnavailable (503)
"""

from __future__ import annotations

__all__ = ["PulseClientError", "PulseConnectionError", "PulseReplyError"]


class PulseClientError(Exception):
    """Base of every error the clients raise."""


class PulseConnectionError(PulseClientError):
    """The server did not answer."""


class PulseReplyError(PulseClientError):
    """An ``error`` reply (or a failed ``auth``) over the WebSocket: ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
