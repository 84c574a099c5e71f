"""The kbIds of apps seen enabled, so publishing costs no database query per message, and their token secrets,
so a connection's token is verified on the event loop with no thread hop and no query (one per process, owned
by the runtime: ``Runtime.apps``).

Entries live ENABLED_APP_TTL seconds. An entry is dropped at once when the app is saved or deleted in this
process and when an ``app_disabled`` control message arrives (``pulse disable`` sends one to every process), so
the TTL only bounds changes made some other way (e.g. the Django admin of another process).

It also shares what verified tokens have in common (``share_claims``): every connection keeps its token's
``Claims`` for its whole life, and most of them are alike (one app, a client's several connections, a few
capability sets), so equal parts are kept once (docs/performance.md, "Memory per connection").
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Any

from ..protocol.tokens import Claims

__all__ = ["ENABLED_APP_TTL", "SHARED_CAPABILITY_SETS", "SHARED_CLAIMS", "AppCache"]

ENABLED_APP_TTL = 2.0

# How many verified tokens' Claims and distinct capability maps are kept for sharing (oldest dropped first).
SHARED_CLAIMS = 1024
SHARED_CAPABILITY_SETS = 256


class AppCache:
    """The kbIds of apps seen enabled, with their expiry; one per process, on the runtime (``runtime.apps``)."""

    def __init__(self) -> None:
        self.enabled: dict[str, float] = {}  # kbId -> monotonic expiry
        self.secrets: dict[str, tuple[str, float]] = {}  # kbId of an enabled app -> (token secret, expiry)
        # (kbId, API key prefix) -> (active, expiry): REVOKE_TOKENS_WITH_KEY checks a token's key with no query
        self.keys: dict[tuple[str, str], tuple[bool, float]] = {}
        self._lock = threading.Lock()
        self._claims: dict[str, Claims] = {}  # token id -> the Claims shared by the connections of that token
        self._capabilities: dict[tuple[tuple[str, tuple[str, ...]], ...], dict[str, list[str]]] = {}

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

    def key_active(self, kb: str, prefix: str) -> bool | None:
        """Whether API key ``prefix`` of app ``kb`` was active when read less than ENABLED_APP_TTL ago; None:
        not known."""
        entry = self.keys.get((kb, prefix))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def remember_key(self, kb: str, prefix: str, active: bool) -> None:
        with self._lock:
            _bounded(self.keys, SHARED_CLAIMS)
            self.keys[(kb, prefix)] = (active, time.monotonic() + ENABLED_APP_TTL)

    def forget(self, kb_id: str | None = None) -> None:
        """Drop the cached state of app ``kb_id`` (None: of every app)."""
        with self._lock:
            if kb_id is None:
                self.enabled.clear()
                self.secrets.clear()
                self.keys.clear()
            else:
                self.enabled.pop(kb_id, None)
                self.secrets.pop(kb_id, None)
                for key in [key for key in self.keys if key[0] == kb_id]:
                    self.keys.pop(key, None)

    def share_claims(self, claims: Claims) -> Claims:
        """``claims``, just verified, or an equal ``Claims`` already held: the one returned for the same token
        before (a client reconnecting, or opening several connections, with one token), else one whose client id
        and app id are interned and whose capability map is the one shared by every token with the same
        capabilities. Verification is not skipped: only its result is shared. Claims and their capability maps
        are never mutated."""
        known = self._claims.get(claims.token_id)
        if known is not None and known == claims:
            return known
        capabilities = claims.capabilities
        key = tuple((pattern, tuple(operations)) for pattern, operations in capabilities.items())
        shared_capabilities = self._capabilities.get(key)
        if shared_capabilities is None:
            _bounded(self._capabilities, SHARED_CAPABILITY_SETS)
            shared_capabilities = self._capabilities[key] = capabilities
        shared = dataclasses.replace(
            claims,
            client_id=sys.intern(claims.client_id),
            kb_id=sys.intern(claims.kb_id),
            capabilities=shared_capabilities,
        )
        if claims.token_id:
            _bounded(self._claims, SHARED_CLAIMS)
            self._claims[claims.token_id] = shared
        return shared


def _bounded(entries: dict[Any, Any], limit: int) -> None:
    """Make room for one more entry in ``entries`` (insertion-ordered): drop the oldest when full."""
    if len(entries) >= limit:
        entries.pop(next(iter(entries)), None)
