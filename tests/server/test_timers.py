"""server/timers.py: the shared slots that carry connections' heartbeats and token expiries."""

from __future__ import annotations

import asyncio

from django_pulse.server.timers import TimerWheel


async def test_items_fire_once_never_early_and_at_most_a_slot_late() -> None:
    loop = asyncio.get_running_loop()
    fired: dict[str, float] = {}
    wheel = TimerWheel(lambda item: fired.setdefault(item, loop.time()))
    start = loop.time()
    for name in ("a", "b", "c"):
        wheel.add(0.3, name)
    await asyncio.sleep(0.6)
    assert set(fired) == {"a", "b", "c"}
    for at in fired.values():
        assert 0.3 <= at - start <= 0.3 + 0.05 + 0.2  # one slot (50 ms) plus a generous margin for a busy loop
    assert len(wheel) == 0


async def test_items_due_together_share_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(lambda item: None)
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    slots = {wheel.add(20.0, n) for n in range(500)}
    assert len(slots) <= 2  # 20 s: 1 s slots, so these 500 items land in one (two if a boundary passes)
    assert len(loop._scheduled) - before <= 2  # type: ignore[attr-defined]
    assert len(wheel) == 500


async def test_a_discarded_item_does_not_fire() -> None:
    fired: list[str] = []
    wheel = TimerWheel(fired.append)
    keep = wheel.add(0.1, "keep")
    drop = wheel.add(0.1, "drop")
    assert keep == drop
    wheel.discard(drop, "drop")
    await asyncio.sleep(0.4)
    assert fired == ["keep"]


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    fired: list[str] = []

    def fire(item: str) -> None:
        if item == "bad":
            raise RuntimeError("boom")
        fired.append(item)

    wheel = TimerWheel(fire)
    wheel.add(0.05, "bad")
    wheel.add(0.05, "good")
    await asyncio.sleep(0.3)
    assert fired == ["good"]
