"""Graceful shutdown: close every connection of this process with 1001 and hand its presence members over
(with Redis: other processes adopt them when the clients continue their connections there; docs/deployment.md).

It runs by itself on SIGTERM under daphne (``_io.install_daphne_shutdown``) and granian
(``_io.install_granian_shutdown``: before granian drops the connections); under uvicorn, which closes
the WebSocket connections itself with 1012 before the lifespan shutdown, call ``shutdown()`` from the ASGI
lifespan shutdown (``routing.pulse_lifespan``, docs/deployment.md) to mark the process draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..protocol import CloseCode
from .runtime import get_runtime

__all__ = ["logged_shutdown", "shutdown"]

logger = logging.getLogger("django_pulse.shutdown")


async def shutdown(code: int = CloseCode.GOING_AWAY, timeout: float = 2.0) -> int:
    """Close every Pulse connection of this process with ``code`` (1001 going_away: clients reconnect, to another
    process behind the load balancer), clean up their subscriptions and presence, and end their tasks.

    Returns the number of connections closed (0 when this process has shut down already). Under daphne and
    granian this runs by itself on SIGTERM; under uvicorn call it from the ASGI lifespan shutdown.
    """
    runtime = get_runtime()
    if runtime.shut_down:
        return 0
    runtime.shut_down = True
    # With shared state (Redis) presence is handed over, not left (docs/deployment.md, "Rolling restarts"); the
    # liveness loop is stopped even when no connection is open, so an idle process leaves `pulse status` at once.
    handover = runtime.broker.shared
    runtime.presence.handing_over = handover
    conns = list(runtime.connections)
    if conns:
        await asyncio.wait([asyncio.ensure_future(conn.go_away(code, timeout / 2)) for conn in conns], timeout=timeout)
    current = asyncio.current_task()
    tasks = [conn._task for conn in conns if conn._task is not None and conn._task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout / 2)
    # Members whose connection did not finish leaving in time leave now, in batches, before the process exits.
    try:
        await asyncio.wait_for(runtime.liveness.stop(handover=handover), timeout)
    except Exception:
        logger.warning(
            "Could not remove this process's presence members at shutdown; the live processes' sweep will",
            exc_info=True,
        )
    return len(conns)


async def logged_shutdown() -> None:
    """``shutdown()`` with its outcome logged and any error swallowed (the server is stopping anyway)."""
    with contextlib.suppress(Exception):
        count = await shutdown()
        logger.info("Server shutting down: closed %d Pulse connections with 1001 going_away", count)
