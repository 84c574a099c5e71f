"""The exceptions of the clients for other programs: ``PulseClientError`` and its subclasses.

Their tree, and what each carries, is drawn in ``django_pulse.exceptions``, where users import them from (they
are the same classes).
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
