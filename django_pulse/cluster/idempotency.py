"""Idempotent publishing: a message id seen again within ``PULSE["IDEMPOTENCY_WINDOW"]`` is not delivered twice.

``sdk.publish`` claims ``(kbId, channel, id)`` before it broadcasts a message that carries an ``id``; a second
claim within the window fails and the publish returns the id without delivering. Every publish path (the HTTP
API, the server SDK, client publishes over the WebSocket) goes through ``sdk.publish``, so they share one
record. When the broadcast itself fails the claim is released, so the publisher's retry is delivered.

- In memory (no Redis): a per-process TTL dict — right for the embedded single-process server.
- With Redis: ``SET {prefix}:{kbId:channel}:idem:{id} 1 NX PX window`` — shared by every process, in the
  channel's hash slot (``broker.keys``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

from .._redis import close_with_loop
from ..conf import pulse_settings
from ..exceptions import Unavailable
from ..protocol import ErrorCode

__all__ = ["IdempotencyStore"]

_MAX_MEMORY_KEYS = 100_000


def _key(kb_id: str, channel: str, message_id: str) -> str:
    """The one naming function of this backend: the record of ``message_id`` in the channel's hash slot."""
    from ..broker.keys import channel_key

    return channel_key(pulse_settings.REDIS_PREFIX, kb_id, channel, f"idem:{message_id}")


def _unavailable(exc: Exception) -> Unavailable:
    return Unavailable(f"Redis cannot be reached to record the message id: {exc}.", ErrorCode.UNAVAILABLE)


class IdempotencyStore:
    """The ids seen by this process (in memory) or by every process (Redis); one per process, on the runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> expiry (monotonic), oldest first
        self._sync_clients: dict[str, Any] = {}
        self._guards: list[asyncio.Task[None]] = []  # close the async clients with their loops
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def close(self) -> None:
        """Close the Redis connections this store opened (settings changed)."""
        for client in self._sync_clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._sync_clients.clear()
        for guard in self._guards:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                guard.cancel()
        self._guards.clear()

    # --- memory --------------------------------------------------------------------------------------------

    def _memory_claim(self, key: str, window: float) -> bool:
        now = time.monotonic()
        seen = self._seen
        with self._lock:
            # Entries are appended with a constant window, so expiry order is insertion order: pop from the front.
            while seen:
                _, expiry = next(iter(seen.items()))
                if expiry > now and len(seen) < _MAX_MEMORY_KEYS:
                    break
                seen.popitem(last=False)
            previous = seen.get(key)
            if previous is not None and previous > now:
                return False
            seen[key] = now + window
            seen.move_to_end(key)
            return True

    def _memory_release(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)

    # --- Redis ---------------------------------------------------------------------------------------------

    def _sync_client(self, url: str) -> Any:
        client = self._sync_clients.get(url)
        if client is None:
            from ..broker.connection import sync_client
            from ..broker.redis import _no_retry

            # No retries: a SET NX whose reply was lost and that redis-py sent again (to the promoted replica,
            # after a failover) would find its own key and report the message as a duplicate: the publish would
            # be reported as successful and never happen. A lost reply raises instead (Unavailable).
            client = self._sync_clients[url] = sync_client(
                url, socket_connect_timeout=2, socket_timeout=2, retry=_no_retry()
            )
        return client

    def _async_client(self, url: str) -> Any:
        loop = asyncio.get_running_loop()
        clients = self._async_clients.setdefault(loop, {})
        client = clients.get(url)
        if client is None:
            from ..broker.connection import async_client
            from ..broker.redis import _async_no_retry

            client = clients[url] = async_client(
                url, socket_connect_timeout=2, socket_timeout=2, retry=_async_no_retry()
            )
            self._guards.append(close_with_loop(client))
        return client

    # --- the interface ---------------------------------------------------------------------------------------

    def claim(self, kb_id: str, channel: str, message_id: str) -> bool:
        """Record ``message_id`` on ``channel`` of ``kb_id``; False when it was already seen within the window.

        Raises ``Unavailable`` when Redis is configured and cannot be reached (never a silent duplicate).
        """
        key, window = _key(kb_id, channel, message_id), pulse_settings.IDEMPOTENCY_WINDOW
        url = pulse_settings.REDIS_URL
        if not url:
            return self._memory_claim(key, window)
        import redis

        try:
            return bool(self._sync_client(url).set(key, b"1", nx=True, px=max(1, int(window * 1000))))
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    def release(self, kb_id: str, channel: str, message_id: str) -> None:
        """Forget a claim (the publish it guarded failed, so a retry must be delivered). Best effort."""
        key, url = _key(kb_id, channel, message_id), pulse_settings.REDIS_URL
        if not url:
            self._memory_release(key)
            return
        import redis

        with contextlib.suppress(redis.RedisError):  # Redis is down: the key expires with the window.
            self._sync_client(url).delete(key)

    async def aclaim(self, kb_id: str, channel: str, message_id: str) -> bool:
        """``claim`` for async code (its own Redis connection per event loop)."""
        key, window = _key(kb_id, channel, message_id), pulse_settings.IDEMPOTENCY_WINDOW
        url = pulse_settings.REDIS_URL
        if not url:
            return self._memory_claim(key, window)
        import redis

        try:
            return bool(await self._async_client(url).set(key, b"1", nx=True, px=max(1, int(window * 1000))))
        except redis.RedisError as exc:
            raise _unavailable(exc) from None

    async def arelease(self, kb_id: str, channel: str, message_id: str) -> None:
        key, url = _key(kb_id, channel, message_id), pulse_settings.REDIS_URL
        if not url:
            self._memory_release(key)
            return
        import redis

        with contextlib.suppress(redis.RedisError):
            await self._async_client(url).delete(key)
