"""The kbIds of apps seen enabled, so publishing costs no database query per message (one per process, owned
by the runtime: ``get_runtime().apps``).

Entries live ENABLED_APP_TTL seconds. An entry is dropped at once when the app is saved or deleted in this
process and when an ``app_disabled`` control message arrives (``pulse disable`` sends one to every process), so
the TTL only bounds changes made some other way (e.g. the Django admin of another process).
"""

from __future__ import annotations

import threading
import time

__all__ = ["ENABLED_APP_TTL", "AppCache"]

ENABLED_APP_TTL = 2.0


class AppCache:
    """The kbIds of apps seen enabled, with their expiry; one per process, on the runtime (``runtime.apps``)."""

    def __init__(self) -> None:
        self.enabled: dict[str, float] = {}  # kbId -> monotonic expiry
        self._lock = threading.Lock()

    def is_enabled(self, kb: str) -> bool:
        return self.enabled.get(kb, 0.0) > time.monotonic()

    def remember(self, kb: str) -> None:
        with self._lock:
            self.enabled[kb] = time.monotonic() + ENABLED_APP_TTL

    def forget(self, kb_id: str | None = None) -> None:
        """Drop the cached state of app ``kb_id`` (None: of every app)."""
        with self._lock:
            if kb_id is None:
                self.enabled.clear()
            else:
                self.enabled.pop(kb_id, None)
