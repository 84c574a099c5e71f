"""The publishing loop every benchmark server runs in its own event loop.

Messages are *scheduled* at ``rate`` per second and stamped with their scheduled time, not the time the
loop got round to them: when the server is saturated its event loop is late, and that lateness is part of
the publish->deliver latency a user sees (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

__all__ = ["CHANNEL", "EVENT", "PublishParams", "baseline_frame", "encode", "parse_params", "run_publisher"]

CHANNEL = "bench"
EVENT = "tick"


def encode(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def baseline_frame(seq: int, t_us: int) -> dict[str, Any]:
    """The frame baselines send: the keys of a Pulse message frame, so every server writes similar bytes."""
    return {
        "action": "message",
        "channel": CHANNEL,
        "name": EVENT,
        "data": {"t": t_us, "s": seq},
        "id": f"m_{seq:016d}",
        "timestamp": time.time_ns() // 1_000_000,
        "serial": seq,
    }


class PublishParams:
    def __init__(self, rate: float, count: int, seq0: int) -> None:
        if not (rate > 0 and count >= 0 and seq0 >= 0):
            raise ValueError("rate must be > 0, count and seq0 >= 0")
        self.rate, self.count, self.seq0 = rate, count, seq0


def parse_params(query: str | bytes) -> PublishParams:
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    q = {k: v[0] for k, v in parse_qs(query).items()}
    return PublishParams(float(q.get("rate", "10")), int(q.get("count", "10")), int(q.get("seq0", "0")))


async def run_publisher(publish: Callable[[int, int], Awaitable[Any]], params: PublishParams) -> dict[str, Any]:
    """Call ``publish(seq, t_us)`` ``count`` times at ``rate``/s; returns counts, errors and the loop's lag."""
    interval_ns = 1e9 / params.rate
    start = time.monotonic_ns() + 2_000_000
    max_lag_ns = 0
    errors = 0
    first_error = ""
    for i in range(params.count):
        due = start + int(i * interval_ns)
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
            now = time.monotonic_ns()
        else:
            # Behind schedule: still let the loop breathe so deliveries and reads make progress.
            await asyncio.sleep(0)
        max_lag_ns = max(max_lag_ns, now - due)
        try:
            await publish(params.seq0 + i, due // 1000)
        except Exception as exc:  # counted and reported: a failed publish is a benchmark finding
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
    return {
        "published": params.count - errors,
        "errors": errors,
        "first_error": first_error,
        "max_lag_ms": round(max_lag_ns / 1e6, 3),
        "seconds": round((time.monotonic_ns() - start) / 1e9, 3),
    }
