"""django-pulse: realtime pub/sub and presence over WebSockets for Django, on Django Channels.

Public API: ``from django_pulse import pulse`` (the server SDK: ``pulse.get_token``, ``pulse.publish``,
``pulse.presence``, ...). The SDK is loaded lazily so that importing this package from settings is safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: The version of django-pulse (pulse.js carries the same one as ``Pulse.VERSION``).
__version__ = "0.1.0"
__all__ = ["__version__", "pulse"]

if TYPE_CHECKING:
    from . import sdk as pulse


def __getattr__(name: str) -> Any:
    if name == "pulse":
        from . import sdk

        return sdk
    raise AttributeError(f"module 'django_pulse' has no attribute {name!r}")
