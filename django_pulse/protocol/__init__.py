"""The Pulse wire protocol, sans I/O: no Django, no asyncio, tested without sockets.

- ``codes``: actions, operations, presence events, error and close codes (a leaf module).
- ``frames``: channel-name rules, frame parsing and validation, frame building, rate limiting.
- ``tokens``: issuing and verifying tokens (JWT) and matching capabilities.
- ``strict_json``: ``loads_strict``, the one decoder of everything a client sends (frames and HTTP bodies).

``from django_pulse.protocol import X`` gives every name of ``codes`` and ``frames``.
"""

from __future__ import annotations

from . import codes, frames
from .codes import *  # noqa: F403  (re-exported: every name of codes' __all__)
from .frames import *  # noqa: F403  (re-exported: every name of frames' __all__)

__all__ = [*codes.__all__, *frames.__all__]
