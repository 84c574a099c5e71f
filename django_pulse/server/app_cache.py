"""The kbIds of apps seen enabled, so publishing costs no database query per message, and their token secrets,
so a connection's token is verified on the event loop with no thread hop and no query (one per process, owned
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
        self.secrets: dict[str, tuple[str, float]] = {}  # kbId of an enabled app -> (token secret, expiry)
        self._lock = threading.Lock()

    def is_enabled(self, kb: str) -> bool:
        return self.enabled.get(kb, 0.0) > time.monotonic()

    def remember(self, kb: str) -> None:
        with self._lock:
            self.enabled[kb] = time.monotonic() + ENABLED_APP_TTL

    def token_secret(self, kb: str) -> str | None:
        """The token secret of app ``kb`` when it was seen enabled less than ENABLED_APP_TTL ago, else None."""
        entry = self.secrets.get(kb)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def remember_secret(self, kb: str, secret: str) -> None:
        """App ``kb`` was just read from the database, enabled, with this token secret."""
        with self._lock:
            expiry = time.monotonic() + ENABLED_APP_TTL
            self.secrets[kb] = (secret, expiry)
            self.enabled[kb] = expiry

    def forget(self, kb_id: str | None = None) -> None:
        """Drop the cached state of app ``kb_id`` (None: of every app)."""
        with self._lock:
            if kb_id is None:
                self.enabled.clear()
                self.secrets.clear()
            else:
                self.enabled.pop(kb_id, None)
                self.secrets.pop(kb_id, None)
