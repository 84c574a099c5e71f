"""A publishing process for the loopback proof (tests/test_loopback_proof.py): ``pulse.apublish`` at a steady
rate, as a worker process of the site would, until its stdin closes. Run with a live server's environment
(``LiveServer.env``: its settings and database). Arguments: rate (messages/s), lanes, first lane index, total
lanes, channels. Prints one line per publish: ``ok <channel> <id>`` or ``failed <channel> <id> <reason>``."""

from __future__ import annotations

import asyncio
import sys
import threading
import time


async def _lane(index: int, total: int, lane_rate: float, channels: int, stop: threading.Event) -> None:
    from django_pulse import pulse

    interval = 1.0 / lane_rate
    k = 0
    next_at = time.monotonic()
    while not stop.is_set():
        channel = f"room{(k * total + index) % channels}"
        message_id = f"{channel}-{index}-{k}"
        try:
            await pulse.apublish(channel, "e", {"k": k}, id=message_id)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
            print(f"failed {channel} {message_id} {reason}", flush=True)
        else:
            print(f"ok {channel} {message_id}", flush=True)
        k += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_at = time.monotonic()


async def main(rate: float, lanes: int, first: int, total: int, channels: int) -> None:
    import django

    django.setup()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    await asyncio.gather(*[_lane(first + i, total, rate / lanes, channels, stop) for i in range(lanes)])


if __name__ == "__main__":
    rate, lanes, first, total, channels = float(sys.argv[1]), *map(int, sys.argv[2:6])
    asyncio.run(main(rate, lanes, first, total, channels))
