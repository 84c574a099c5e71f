"""A publishing process for the loopback proof (tests/system/test_loopback_proof.py): ``pulse.apublish`` at a steady
rate (open loop: each publish starts on its schedule), as a worker process of the site would, until its stdin
closes. Run with a live server's environment (``LiveServer.env``: its settings and database). Arguments: rate
(messages/s), lanes, first lane index, total lanes, channels. Prints one line per publish: ``ok <channel> <id> <t>``
or ``failed <channel> <id> <t> <reason>``, ``t`` the answer's ``time.monotonic()``."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

# Publishes of one lane waiting for their answers at most (then the lane waits for one: closed loop).
MAX_IN_FLIGHT = 8


async def _publish(channel: str, message_id: str, k: int) -> None:
    from django_pulse import pulse

    try:
        await pulse.apublish(channel, "e", {"k": k}, id=message_id)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
        print(f"failed {channel} {message_id} {time.monotonic()} {reason}", flush=True)
    else:
        print(f"ok {channel} {message_id} {time.monotonic()}", flush=True)


async def _lane(index: int, total: int, lane_rate: float, channels: int, stop: threading.Event) -> None:
    """Open loop: each publish starts on its schedule, not after the previous one's answer, so the rate asked is
    the rate offered however long answers take (a publish with WAIT is several round trips)."""
    interval = 1.0 / lane_rate
    k = 0
    next_at = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        if len(in_flight) >= MAX_IN_FLIGHT:
            # An overloaded machine: wait for an answer rather than pile up publishes that would time out.
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        channel = f"room{(k * total + index) % channels}"
        task = asyncio.ensure_future(_publish(channel, f"{channel}-{index}-{k}", k))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        k += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay > -1.0:
            await asyncio.sleep(0)  # behind (a busy CPU): catch up, letting the answers in between
        else:
            next_at = time.monotonic()  # more than a second behind: start the schedule again
    if in_flight:
        await asyncio.gather(*in_flight)


async def main(rate: float, lanes: int, first: int, total: int, channels: int) -> None:
    import django

    django.setup()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    await asyncio.gather(*[_lane(first + i, total, rate / lanes, channels, stop) for i in range(lanes)])


if __name__ == "__main__":
    rate, lanes, first, total, channels = float(sys.argv[1]), *map(int, sys.argv[2:6])
    asyncio.run(main(rate, lanes, first, total, channels))
