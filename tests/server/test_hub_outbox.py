"""The hub and the outbox: inline-first sends, FIFO when a send suspends, slow consumers closed alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from django_pulse.server.outbox import Outbox
from django_pulse.server.runtime import get_runtime


class Socket:
    """An ASGI ``send`` whose writes complete at once unless ``gate`` is closed (then they suspend)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate: asyncio.Future[None] | None = None
        self.fail = False
        self.calls = 0

    async def send(self, message: dict[str, Any]) -> None:
        self.calls += 1
        if self.gate is not None and not self.gate.done():
            await self.gate
        if self.fail:
            raise OSError("socket gone")
        self.sent.append(message)

    def block(self) -> None:
        self.gate = asyncio.get_running_loop().create_future()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set_result(None)

    @property
    def texts(self) -> list[str]:
        return [m.get("text", f"<{m['type']}:{m.get('code')}>") for m in self.sent]


def frame(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": text}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_send_that_does_not_suspend_completes_inline_without_a_task() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=1000)
    box.push(frame("a"), 1)
    assert sock.texts == ["a"]  # done before push returned: no task, no loop iteration
    box.push(frame("b"), 1)
    assert sock.texts == ["a", "b"] and box._task is None


async def test_a_suspended_send_queues_later_frames_in_order() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=1000)
    sock.block()
    box.push(frame("1"), 1)
    box.push(frame("2"), 1)
    box.push(frame("3"), 1)
    assert sock.texts == [] and sock.calls == 1 and box.pending_bytes == 2
    sock.release()
    await settle()
    assert sock.texts == ["1", "2", "3"] and box.pending_bytes == 0
    assert box._task is None and not box._busy
    box.push(frame("4"), 1)  # idle again: inline
    assert sock.texts[-1] == "4"


async def test_a_send_suspending_on_sleep0_is_finished_too() -> None:
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a bare yield (no future)
        sent.append(message["text"])

    box = Outbox(send, limit=1000)
    box.push(frame("x"), 1)
    box.push(frame("y"), 1)
    await settle()
    assert sent == ["x", "y"]


async def test_exceptions_after_suspension_reach_the_send_and_stop_the_outbox() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=1000)
    sock.block()
    box.push(frame("1"), 1)
    box.push(frame("2"), 1)
    sock.fail = True
    sock.release()
    await settle()
    assert box.closed and sock.texts == []
    box.push(frame("3"), 1)  # ignored, never raises
    await settle()
    # One failed frame, then one attempt to close the socket (4500) in case it is still open; nothing else.
    assert sock.calls == 2


async def test_a_refused_frame_on_a_live_socket_closes_it_4500_and_tells_the_owner() -> None:
    closed: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send" and message["text"] == "bad":
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        sent.append(message)

    sent: list[dict[str, Any]] = []
    box = Outbox(send, limit=1000, on_close=closed.append)
    box.push(frame("ok"), 2)
    box.push(frame("bad"), 3)
    box.push(frame("later"), 5)
    await settle()
    assert [m.get("text", m.get("code")) for m in sent] == ["ok", 4500]
    assert closed == [4500] and box.closed


async def test_a_failed_future_is_raised_inside_the_send() -> None:
    seen: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        try:
            await gate
        except ValueError as exc:
            seen.append(str(exc))

    box = Outbox(send, limit=10)
    box.push(frame("1"), 1)
    gate.set_exception(ValueError("inside"))
    await settle()
    assert seen == ["inside"] and not box.closed


async def test_cancel_reaches_the_suspended_send() -> None:
    seen: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send(message: dict[str, Any]) -> None:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    box = Outbox(send, limit=10)
    box.push(frame("1"), 1)
    await settle()
    box.cancel()
    await settle()
    assert seen == ["cancelled"] and gate.cancelled()


class FutureSocket:
    """An ASGI ``send`` like granian's: it starts the write and returns a future that completes later."""

    def __init__(self, *, done_at_once: bool = False) -> None:
        self.sent: list[str] = []
        self.pending: list[asyncio.Future[None]] = []
        self.done_at_once = done_at_once
        self.fail = False

    def send(self, message: dict[str, Any]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append(message.get("text", message["type"]))
        if self.fail:
            future.set_exception(OSError("socket gone"))
        elif self.done_at_once:
            future.set_result(None)
        else:
            self.pending.append(future)
        return future

    def complete_all(self) -> None:
        while self.pending:
            self.pending.pop(0).set_result(None)


async def test_future_sends_go_one_at_a_time_in_order_without_tasks() -> None:
    sock = FutureSocket()
    box = Outbox(sock.send, limit=1000)
    tasks_before = len(asyncio.all_tasks())
    for text in "123":
        box.push(frame(text), 1)
    assert sock.sent == ["1"] and box.pending_bytes == 2  # one write in flight, the rest queued
    assert len(asyncio.all_tasks()) == tasks_before  # a done callback, not a task, takes the next frame
    for expected in (["1", "2"], ["1", "2", "3"]):
        sock.complete_all()
        await settle()
        assert sock.sent == expected
    sock.complete_all()
    await settle()
    assert not box._busy and box.pending_bytes == 0


async def test_future_sends_done_at_once_and_failures() -> None:
    sock = FutureSocket(done_at_once=True)
    box = Outbox(sock.send, limit=1000)
    for text in "ab":
        box.push(frame(text), 1)
    assert sock.sent == ["a", "b"] and not box._busy
    sock.fail = True
    box.push(frame("c"), 1)
    assert box.closed  # the server refused the write: the connection is gone, nothing more is written
    box.push(frame("d"), 1)
    assert sock.sent == ["a", "b", "c"]


async def test_flush_waits_until_the_server_finished_the_close_it_was_handed() -> None:
    """granian finishes a send after ``send`` returned; an application that returns before that has granian close
    the socket itself, without the code (graceful shutdown's 1001 reached clients as 1005 under load)."""
    sock = FutureSocket()
    box = Outbox(sock.send, limit=1000)
    box.push(frame("a"), 1)
    box.close(1001)
    flushing = asyncio.ensure_future(box.flush(5.0))
    sock.complete_all()  # the frame is written; the close is handed over next, and is still in flight
    await settle()
    assert sock.sent == ["a", "websocket.close"] and not flushing.done()
    sock.complete_all()  # the close frame has left
    await asyncio.wait_for(flushing, 1.0)
    never_done = FutureSocket()
    stuck = Outbox(never_done.send, limit=1000)
    stuck.close(1001)
    started = time.monotonic()
    await stuck.flush(0.05)  # a server that never finishes the close holds the flush for its timeout only
    assert time.monotonic() - started < 1.0


async def test_slow_consumer_is_closed_4010_and_others_are_not_held_back() -> None:
    slow, fast = Socket(), Socket()
    closed: list[int] = []
    hub = get_runtime().hub
    slow_box = Outbox(slow.send, limit=10, on_close=closed.append)
    fast_box = Outbox(fast.send, limit=10)
    hub.topics["t"] = {slow_box, fast_box}
    slow.block()
    for i in range(6):
        hub.dispatch("t", f"m{i}xx")  # 4 bytes each: the 4th queued frame passes 10 bytes
    assert fast.texts == [f"m{i}xx" for i in range(6)]
    assert closed == [4010] and slow_box.closed
    slow.release()
    await settle()
    # The in-flight frame, then the close; the queued backlog was dropped.
    assert slow.texts == ["m0xx", "<websocket.close:4010>"]


async def test_close_is_sent_after_queued_frames() -> None:
    sock = Socket()
    box = Outbox(sock.send, limit=100)
    sock.block()
    box.push(frame("a"), 1)
    box.push(frame("b"), 1)
    box.close(4003)
    box.push(frame("c"), 1)
    sock.release()
    await settle()
    assert sock.texts == ["a", "b", "<websocket.close:4003>"]


@pytest.mark.parametrize("count", [1, 3])
async def test_hub_subscribe_unsubscribe_counts(count: int, settings: Any) -> None:
    settings.PULSE = {}
    hub = get_runtime().hub
    boxes = [Outbox(Socket().send, limit=10) for _ in range(count)]
    await asyncio.gather(*(hub.subscribe("m:default:a", box) for box in boxes))
    assert hub.local_topics() == {"m:default:a": count}
    for box in boxes:
        await hub.unsubscribe("m:default:a", box)
    assert hub.local_topics() == {}


class _SlowTopics(dict[str, Any]):
    """A topic map whose copy lets other threads run between entries, as a big map copied by a busy process
    would: a reader that copies it while the loop adds or removes topics sees the map change under it."""

    def items(self) -> Any:
        for item in super().items():
            time.sleep(0)
            yield item


async def test_another_thread_copies_the_topic_counts_whole_while_the_loop_changes_them(settings: Any) -> None:
    """A sync view or command (another thread) asking for the hub's topics (``pulse.channels()``, ``pulse
    status``) while the loop subscribes and unsubscribes gets whole copies: never an error, never a half-changed
    map."""
    settings.PULSE = {}
    hub = get_runtime().hub
    hub.topics = _SlowTopics()
    box = Outbox(Socket().send, limit=10)
    topics = [f"m:default:t{i}" for i in range(40)]
    stop = asyncio.Event()

    async def churn() -> None:
        while not stop.is_set():
            for topic in topics:
                await hub.subscribe(topic, box)
                await asyncio.sleep(0)
            for topic in topics:
                await hub.unsubscribe(topic, box)
                await asyncio.sleep(0)

    def read() -> list[dict[str, int]]:
        return [hub.topic_counts() for _ in range(300)]

    churner = asyncio.ensure_future(churn())
    try:
        await asyncio.sleep(0)
        copies = await asyncio.to_thread(read)
    finally:
        stop.set()
        await churner
    assert len(copies) == 300 and all(set(copy) <= set(topics) for copy in copies)
    assert all(count == 1 for copy in copies for count in copy.values())
    assert any(copies), "the reader never saw a subscription: the test did not overlap the loop's changes"
