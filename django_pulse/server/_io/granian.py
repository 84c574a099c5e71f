"""granian: the graceful shutdown hook. granian frames WebSocket messages and writes responses in native code, so
it has no fast path (its connections take the ASGI path, recorded by the package's choosing functions)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .contract import GRANIAN_SIGNALS, logger, server_version

__all__ = ["GRANIAN_SHUTDOWN_TIMEOUT", "install_granian_shutdown"]


_GRANIAN_HOOKED_ATTR = "_django_pulse_shutdown_hooked"

# The longest a granian worker waits for ``on_shutdown`` before it stops serving anyway.
GRANIAN_SHUTDOWN_TIMEOUT = 10.0


def install_granian_shutdown(on_shutdown: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Under granian, run ``on_shutdown()`` when a worker is told to stop (SIGTERM, SIGINT), BEFORE it stops serving.

    A granian worker (2.x) hears SIGTERM through an event-loop signal handler (``granian._signals.
    set_loop_signals``) that tells its Rust server to stop at once: the open WebSocket connections are dropped
    (clients see 1006, no close frame) and the application gets ``websocket.disconnect`` before the ASGI lifespan
    shutdown runs — too late to close them with 1001 or to hand their presence over, so their members left and
    re-entered. The worker imports ``set_loop_signals`` when it starts, after loading the application (which
    calls this): wrapping it replaces the loop's handlers with one that awaits ``on_shutdown()`` (at most
    ``GRANIAN_SHUTDOWN_TIMEOUT`` s) and then passes the signal on to granian. Call from the worker process before
    its loop runs (``routing.register_when_served``); a no-op elsewhere, logged when granian lacks the function.
    """
    if "granian" not in sys.modules:
        return
    try:
        import granian._signals
    except ImportError:
        module: Any = None
    else:
        module = granian._signals
    if module is None or GRANIAN_SIGNALS.missing(module):
        logger.warning(
            "%s: graceful shutdown off (on SIGTERM clients see the connection drop, not a 1001 close): no "
            "granian._signals.set_loop_signals. docs/servers.md lists the versions tested.",
            server_version("granian"),
        )
        return
    if getattr(module, _GRANIAN_HOOKED_ATTR, False):
        return
    original = module.set_loop_signals

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        granian_event = original(loop)
        stopping: list[asyncio.Task[None]] = []  # the one shutdown task, kept referenced while it runs

        async def stop_then_pass_on() -> None:
            try:
                await asyncio.wait_for(on_shutdown(), GRANIAN_SHUTDOWN_TIMEOUT)
            except Exception:
                logger.warning("pulse: graceful shutdown under granian failed", exc_info=True)
            finally:
                granian_event.set()

        def on_signal() -> None:
            if stopping:
                granian_event.set()  # a second signal: stop now
                return
            stopping.append(loop.create_task(stop_then_pass_on(), name="pulse-granian-shutdown"))

        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError, ValueError):
                return granian_event  # granian fell back to signal.signal (not on a Unix loop): its own handling
        return granian_event

    module.set_loop_signals = set_loop_signals
    setattr(module, _GRANIAN_HOOKED_ATTR, True)
