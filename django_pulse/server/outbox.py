"""Each connection's outbox: order-preserving, inline-first writes to the ASGI ``send``, and the slow-consumer cut.

docs/architecture.md ("Delivery") describes the design. The hub hands one shared ASGI message dict to every
local subscriber's outbox; the outbox writes it straight to the socket when the server allows it
(``_io``), else to the server's ``send``, inline when it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from .._types import ASGISend
from ..protocol import CloseCode, utf8_len
from ._io import FastPathReport, buffer_probe, close_going_away, daphne_protocol, direct_writer

__all__ = ["Outbox", "Sink"]

logger = logging.getLogger("django_pulse.outbox")


class Sink(Protocol):
    """What the hub delivers to: an ``Outbox``, or a wrapper that filters (e.g. presence events)."""

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        """Queue ``message`` (an ASGI send message) of ``nbytes`` UTF-8 bytes; never blocks, never raises."""


async def _finish(coro: Coroutine[Any, Any, Any], waiter: Any) -> None:
    """Drive a coroutine that was stepped once outside any task and suspended on ``waiter``.

    ``Outbox.push`` starts a send with ``coro.send(None)``: most sends finish right there, without the cost
    of a task. Python 3.11 has no eager tasks; on 3.12+ ``Task(..., eager_start=True)`` would do the same
    but still allocate a Task (and its done-callback machinery) for every delivery, so the manual step is used
    on every version. When one suspends, it has yielded what a Task would have
    waited on: an asyncio future (``await fut``) or None (a bare yield, ``asyncio.sleep(0)``). This coroutine,
    run as a task, does what the Task would: wait until that future is done, then resume the coroutine with
    ``send(None)`` (``Future.__await__`` then returns the result or raises the exception itself), repeatedly.
    If this task is cancelled while waiting, ``await waiter`` cancels the waiter, and resuming the coroutine
    raises ``CancelledError`` inside it, exactly as for a task.
    """
    while True:
        if waiter is None:
            await asyncio.sleep(0)
        elif asyncio.isfuture(waiter):
            waiter._asyncio_future_blocking = False
            # Only wait here: the coroutine gets the outcome itself from waiter.result() when resumed.
            with contextlib.suppress(BaseException):
                await waiter
        else:
            waiter = coro.throw(RuntimeError(f"a send yielded {waiter!r}, not a future"))
            continue
        try:
            waiter = coro.send(None)
        except StopIteration:
            return


def _ignore(future: Any) -> None:
    """The done callback of a cancelled outbox."""


# What the ASGI server's send() returns. Plain ints, not an Enum: an Enum member lookup costs ~60 ns in
# Python 3.11, twice per delivery.
_COROUTINE, _FUTURE, _OTHER = 1, 2, 3

# ... decided once per type, not per delivery (asyncio.iscoroutine is slow for types it does not know).
_send_kinds: dict[type, int] = {}


def _kind_of(result: Any) -> int:
    if asyncio.iscoroutine(result):
        return _COROUTINE
    if asyncio.isfuture(result) and hasattr(result, "add_done_callback"):
        return _FUTURE
    return _OTHER


class Outbox:
    """The outbound side of one connection: order-preserving, inline-first writes to the ASGI ``send``.

    ``push`` never blocks and never raises. While a send is in flight (the connection is *busy*) later
    messages wait in a FIFO. When queued bytes plus the server's own buffer pass ``limit``, the queue is
    dropped and the connection is closed with 4010 ``slow_consumer``; nobody else waits for it.
    """

    __slots__ = (
        "_busy",
        "_direct",
        "_on_future_done",
        "_probe",
        "_queue",
        "_queued",
        "_send",
        "_server",
        "_task",
        "closed",
        "limit",
        "on_close",
    )

    def __init__(
        self,
        send: ASGISend,
        limit: int,
        on_close: Callable[[int], None] | None = None,
        *,
        direct_write: bool = True,
        probe: Callable[[], int] | None = None,
        direct: Callable[[dict[str, Any]], bool] | None = None,
        report: FastPathReport | None = None,
        server: Any = None,
    ) -> None:
        """``send`` is the server's WebSocket ``send``, or a transport's own (SSE) that then gives ``probe`` (the
        bytes the server holds unsent) and ``direct`` (its fast path: writes a message and returns True, or
        returns False to have it sent through ``send``) itself when it has them. ``report`` (the connection's
        runtime's ``fast_path``) records which path the server's connections take (without it: a report of this
        outbox's own). ``server``: the server's own ``send`` when ``send`` is a middleware's (``_io.server_send``);
        the probe, the fast path and the 1001 close are the server's, messages still go through ``send``."""
        self._send = send
        server = send if server is None else server
        self._server = server
        self._probe = probe if probe is not None else buffer_probe(server)
        # daphne and uvicorn: frames go to the socket directly when they can (server_io); None elsewhere.
        if direct is None and direct_write:
            direct = direct_writer(server, report if report is not None else FastPathReport())
        self._direct = direct
        # Bound once, by the first send that returns a future (granian): a bound method per send would be one more
        # object for the cyclic GC per delivery, and with thousands of sends in flight the collector's passes over
        # them show in the profile. None until then: daphne's and uvicorn's sends never need it (64 bytes each).
        self._on_future_done: Callable[[Any], None] | None = None
        # Made by the first message that has to wait, dropped once drained: an empty deque is ~760 bytes, and
        # most connections never have a send in flight when the next frame comes (docs/performance.md).
        self._queue: deque[tuple[dict[str, Any], int]] | None = None
        self._queued = 0
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.limit = limit
        self.closed = False
        # Called once, with the close code, when the outbox closes the connection itself (slow consumer).
        self.on_close = on_close

    @property
    def pending_bytes(self) -> int:
        """Bytes queued here plus bytes the server holds unsent (when it can be seen)."""
        return self._queued + (self._probe() if self._probe is not None else 0)

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        if self.closed:
            return
        if self._busy:
            self._waiting().append((message, nbytes))
            self._queued += nbytes
            if self._queued + (self._probe() if self._probe is not None else 0) > self.limit:
                self._overflow()
            return
        if self._probe is not None and self._probe() + nbytes > self.limit:
            self._overflow()
            return
        if self._direct is not None and self._direct(message):
            return
        self._start(message)

    def send_text(self, text: str) -> None:
        """Push one text frame (replies and events of this connection only)."""
        self.push({"type": "websocket.send", "text": text}, utf8_len(text))

    def close(self, code: int) -> None:
        """Send a close after what is already queued; nothing is pushed afterwards."""
        if self.closed:
            return
        self.closed = True
        message = {"type": "websocket.close", "code": int(code)}
        if code == CloseCode.GOING_AWAY and not self._busy and self._probe is not None:
            protocol = daphne_protocol(self._server)
            if protocol is not None and close_going_away(protocol, code):
                return
        if self._busy:
            self._waiting().append((message, 0))
        else:
            self._start(message)

    def _waiting(self) -> deque[tuple[dict[str, Any], int]]:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        return queue

    def _drop_queue(self) -> None:
        # Emptied in place: a send loop (_run, _future_done) holding the deque sees it empty and stops.
        if self._queue is not None:
            self._queue.clear()
            self._queue = None
        self._queued = 0

    def _overflow(self) -> None:
        logger.info("Closing a slow consumer: %d bytes pending over the limit of %d", self.pending_bytes, self.limit)
        self._drop_queue()
        self.close(CloseCode.SLOW_CONSUMER)
        if self.on_close is not None:
            self.on_close(CloseCode.SLOW_CONSUMER)

    def _start(self, message: dict[str, Any]) -> None:
        result: Any = self._send(message)
        kind = _send_kinds.get(type(result))
        if kind is None:
            kind = _send_kinds[type(result)] = _kind_of(result)
        if kind == _FUTURE:
            # granian: send() returns a future-like object and the write is already under way; a done
            # callback takes the next queued frame, so no task and no coroutine exist per send.
            if result.done():
                self._future_failed(result)
            else:
                self._busy = True
                if self._on_future_done is None:
                    self._on_future_done = self._future_done
                result.add_done_callback(self._on_future_done)
            return
        if kind == _OTHER:  # an awaitable we cannot step: a task awaits it
            self._busy = True
            self._task = asyncio.ensure_future(self._run(None, None, result))
            return
        # A coroutine (daphne, uvicorn): step it once inline (see _finish); most complete without suspending.
        try:
            waiter = result.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self._lost(exc)
            return
        self._busy = True
        self._task = asyncio.get_running_loop().create_task(self._run(result, waiter))

    def _future_failed(self, future: Any) -> bool:
        """True (and the connection is treated as gone) when a finished send failed."""
        if future.cancelled():
            self._lost(asyncio.CancelledError())
            return True
        exc = future.exception()
        if exc is not None:
            self._lost(exc)
            return True
        return False

    def _future_done(self, future: Any) -> None:
        self._busy = False
        if self._future_failed(future):
            return
        # Send what queued up meanwhile, one frame at a time, until a send is pending again.
        # The queue is kept once made: sends that complete through a callback (granian) are pending whenever the
        # next frame comes, so dropping it would make and free a deque per delivery (and count towards the
        # cyclic GC's next pass), for ~760 bytes on connections that cost ~150 KB there.
        queue = self._queue
        while queue and not self._busy:
            message, nbytes = queue.popleft()
            self._queued -= nbytes
            self._start(message)

    async def _run(
        self, coro: Coroutine[Any, Any, Any] | None, waiter: Any, awaitable: Awaitable[Any] | None = None
    ) -> None:
        try:
            if coro is not None:
                await _finish(coro, waiter)
            elif awaitable is not None:
                await awaitable
            queue = self._queue
            while queue:
                message, nbytes = queue.popleft()
                self._queued -= nbytes
                await self._send(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._lost(exc)
        finally:
            self._busy = False
            self._task = None
            if self._queue is not None and not self._queue:
                self._queue = None

    def _lost(self, exc: BaseException) -> None:
        # The server refused a send: usually the socket is gone (its disconnect event follows). If it is not
        # (the frame itself was refused), a connection that silently stops receiving would be a gap nobody
        # sees: stop writing frames, try to close it with 4500 so the client reconnects, and tell the owner.
        logger.debug("A send failed; closing the connection: %r", exc)
        already_closed = self.closed
        self.closed = True
        self._drop_queue()
        if already_closed:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing more to do
            asyncio.get_running_loop().create_task(self._close_quietly(CloseCode.INTERNAL_ERROR))
        if self.on_close is not None:
            self.on_close(CloseCode.INTERNAL_ERROR)

    async def _close_quietly(self, code: int) -> None:
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": int(code)})

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until what is queued has been handed to the server, until the server has
        finished the send in flight (granian's send futures), and, where the server's buffer can be seen
        (daphne), until that is written to the socket too.

        Under granian the wait for the send in flight is what makes a close arrive with its code: granian's
        close runs on its own threads after ``send`` returned, and an application that returns before it ran
        has granian close the socket itself, with a close frame that carries no code (clients see 1005)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        while (self._busy or (self._probe is not None and self._probe() > 0)) and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def cancel(self) -> None:
        """Drop everything pending (the connection is gone)."""
        self.closed = True
        self._on_future_done = _ignore  # breaks the self -> bound method -> self cycle: freed without the GC
        self._drop_queue()
        if self._task is not None:
            self._task.cancel()
