"""Coarse process-wide timers for per-connection deadlines (heartbeats, token expiry).

A ``loop.call_later`` per connection costs a timer handle, a copy of the context and a bound method, ~500 bytes
for as long as the connection is idle (docs/performance.md, "Memory per connection"). A ``TimerWheel`` instead
keeps its items in slots: every deadline is rounded up to a slot (1/20 of its delay, between 50 ms and 1 s, so a
timer fires at most that late and never early), and all the items of one slot share one event-loop timer. At
thousands of connections a slot holds dozens of them, and each costs an entry in a set.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

__all__ = ["TimerWheel"]

logger = logging.getLogger("django_pulse.server.timers")

MIN_RESOLUTION = 0.05
MAX_RESOLUTION = 1.0


class TimerWheel:
    """``add(delay, item)`` calls ``fire(item)`` once, ``delay`` seconds later (late by at most the slot's
    resolution), unless ``discard(slot, item)`` ran first. One per kind of deadline (``fire`` is fixed)."""

    __slots__ = ("_fire", "_loop", "_slots")

    def __init__(self, fire: Callable[[Any], None]) -> None:
        self._fire = fire
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[float, set[Any]] = {}

    def add(self, delay: float, item: Any) -> float:
        """Schedule ``fire(item)`` in ``delay`` seconds; returns the slot, for ``discard``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): the old loop's slots will never fire
            self._loop = loop
            self._slots = {}
        resolution = min(max(delay / 20, MIN_RESOLUTION), MAX_RESOLUTION)
        slot = math.ceil((loop.time() + max(delay, 0.0)) / resolution) * resolution
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = set()
            loop.call_at(slot, self._run, slot)
        items.add(item)
        return slot

    def discard(self, slot: float, item: Any) -> None:
        items = self._slots.get(slot)
        if items is not None:
            items.discard(item)

    def _run(self, slot: float) -> None:
        items = self._slots.pop(slot, None)
        if not items:
            return
        fire = self._fire
        for item in items:
            try:
                fire(item)
            except Exception:
                logger.exception("A connection timer failed")

    def __len__(self) -> int:
        return sum(len(items) for items in self._slots.values())
