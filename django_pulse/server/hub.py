"""The per-process hub: topic -> local sinks, one broker subscription per topic, one ASGI message per frame.

docs/architecture.md describes the design. Per message and per process the broker work and the encoding
happen once; the hub builds ONE ASGI message dict and hands it to every local subscriber's outbox
(``outbox.py``). No channel layer, thread pool or per-socket task sits on the delivery path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..broker.base import CONTROL_TOPIC, topic_channel
from ..ops.metrics import NullMetrics
from ..protocol import CloseCode, discontinuity_frame, excluded_connection, excluded_frame, utf8_len
from .control import ControlSink, ControlTarget

if TYPE_CHECKING:
    from ..broker.base import Broker
    from .app_cache import AppCache
    from .outbox import Sink

__all__ = ["Hub"]


logger = logging.getLogger("django_pulse.hub")


class Hub:
    """This process's topic -> local sinks map; one broker subscription per topic.

    The first sink of a topic subscribes the broker (every concurrent subscriber of that topic waits for the
    same confirmation); the last one leaving unsubscribes it.
    """

    def __init__(self, broker: Broker, apps: AppCache, metrics: NullMetrics | None = None) -> None:
        self.broker = broker
        self.metrics = metrics if metrics is not None else NullMetrics()  # counted once per batch: off the hot path
        self.apps = apps  # the control plane drops an app's cached state when it is disabled
        self.topics: dict[str, set[Sink]] = {}
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        # kbId -> authenticated connections (for control messages and counts).
        self.connections: dict[str, set[ControlTarget]] = {}
        # connectionId -> its connection here, for exclusions; a set of them while a recovered one supersedes the
        # old (two with one id): a set for each connection would cost ~220 bytes each (docs/performance.md).
        self.by_id: dict[str, ControlTarget | set[ControlTarget]] = {}
        self._control: ControlSink | None = None
        self.discontinuity_listeners: list[Callable[[str, str], None]] = []
        # Called with the command of every recovered connection (``recovered``), before the signal is sent.
        self.recovered_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._signal_tasks: set[asyncio.Task[list[tuple[Any, Any]]]] = set()
        # Held while ``topics`` gains or loses a key (on the loop) and while another thread copies it
        # (``topic_counts``): taken per subscription change, never per message.
        self._topics_lock = threading.Lock()

    # delivery -------------------------------------------------------------------------------------

    def dispatch(self, topic: str, text: str) -> None:
        """Deliver one frame to every local sink of ``topic``, in call order. O(1) work + one push per sink."""
        sinks = self.topics.get(topic)
        if not sinks:
            return
        message = {"type": "websocket.send", "text": text}
        nbytes = utf8_len(text)
        count = len(sinks)
        excluded = excluded_connection(text)  # O(1): a prefix check
        if excluded is not None:
            self._dispatch_excluding(topic, sinks, message, nbytes, excluded)
        else:
            for sink in sinks:
                sink.push(message, nbytes)
        self.metrics.delivered(count, nbytes, text, time.time() * 1000)  # once per batch, never per socket

    def _dispatch_excluding(
        self, topic: str, sinks: set[Sink], message: dict[str, Any], nbytes: int, connection_id: str
    ) -> None:
        """Deliver a frame that one connection must not get as it is (docs/protocol.md, "Whispers and others-only
        publishes"): a ``whisper`` skips its sender; a ``message`` published for the others only reaches its
        excluded connection as an ``excluded`` frame in its place, so that connection's serials stay continuous."""
        skipped: list[Sink] = []
        for conn in self.with_id(connection_id):
            sink = conn.subscription_sink(topic)
            if sink is not None and sink in sinks:
                skipped.append(sink)
        if not skipped:
            for sink in sinks:
                sink.push(message, nbytes)
            return
        stand_in = excluded_frame(message["text"])
        for sink in sinks:
            if sink not in skipped:
                sink.push(message, nbytes)
        if stand_in is not None:
            replacement = {"type": "websocket.send", "text": stand_in}
            size = utf8_len(stand_in)
            for sink in skipped:
                sink.push(replacement, size)

    def discontinuity(self, topic: str, reason: str) -> None:
        """Tell the local subscribers of ``topic`` that frames may have been missed (the broker was away)."""
        # Message subscribers resume from history; presence subscribers take a fresh snapshot (presence.subscribe).
        if topic.startswith(("m:", "p:")):
            self.dispatch(topic, discontinuity_frame(topic_channel(topic), reason))
            self.metrics.discontinuity(len(self.topics.get(topic, ())))
        for listener in self.discontinuity_listeners:
            try:
                listener(topic, reason)
            except Exception:
                logger.exception("A discontinuity listener failed")

    def recovered(self, command: dict[str, Any]) -> None:
        """A connection (``command["instance"]``) continued ``command["connectionId"]``: close this process's
        other connection with that id (4006), and send ``signals.connection_recovered`` here."""
        from .. import signals

        connection_id = command.get("connectionId")
        for conn in list(self.connections.get(command.get("kbId", ""), ())):
            if conn.connection_id == connection_id and conn.instance != command.get("instance"):
                conn.superseded = True
                conn.close(CloseCode.SUPERSEDED)
        kwargs = {
            "kb_id": command.get("kbId"),
            "client_id": command.get("clientId"),
            "connection_id": connection_id,
            "process_id": command.get("processId"),
            "previous_process_id": command.get("previousProcessId"),
        }
        for listener in self.recovered_listeners:
            try:
                listener(command)
            except Exception:
                logger.exception("A recovery listener failed")
        task = asyncio.get_running_loop().create_task(
            signals.connection_recovered.asend_robust(sender=__name__, **kwargs)
        )
        self._signal_tasks.add(task)
        task.add_done_callback(self._signal_sent)

    def _signal_sent(self, task: asyncio.Task[list[tuple[Any, Any]]]) -> None:
        self._signal_tasks.discard(task)
        if not task.cancelled():
            for receiver, outcome in task.result():
                if isinstance(outcome, BaseException):
                    logger.error("A receiver of connection_recovered failed: %r", receiver, exc_info=outcome)

    # subscriptions ---------------------------------------------------------------------------------

    async def subscribe(self, topic: str, sink: Sink) -> None:
        """Add ``sink`` to ``topic``; returns once frames published afterwards reach it.

        Raises ``Unavailable`` (and leaves nothing behind) when the broker cannot subscribe.
        """
        sinks = self.topics.get(topic)
        if sinks is None:
            with self._topics_lock:
                sinks = self.topics[topic] = {sink}
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._subscribing[topic] = future
            try:
                await self.broker.subscribe(topic)
            except BaseException as exc:
                self._subscribing.pop(topic, None)
                if self.topics.get(topic) is sinks:
                    with self._topics_lock:
                        del self.topics[topic]
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                    future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
                else:
                    future.cancel()
                raise
            self._subscribing.pop(topic, None)
            future.set_result(None)
            return
        sinks.add(sink)
        pending = self._subscribing.get(topic)
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except BaseException:
                sinks.discard(sink)
                raise

    async def unsubscribe(self, topic: str, sink: Sink) -> None:
        """Remove ``sink`` from ``topic``; the last one out unsubscribes the broker."""
        sinks = self.topics.get(topic)
        if sinks is None or sink not in sinks:
            return
        sinks.discard(sink)
        if sinks or topic in self._subscribing:
            return
        with self._topics_lock:
            del self.topics[topic]
        try:
            await self.broker.unsubscribe(topic)
        except Exception:
            logger.warning("Could not unsubscribe topic %r from the broker", topic, exc_info=True)

    def replace(self, topic: str, old: Sink, new: Sink) -> None:
        """Swap ``old`` for ``new`` among ``topic``'s sinks, at once (no frame can arrive in between)."""
        sinks = self.topics.get(topic)
        if sinks is not None and old in sinks:
            sinks.discard(old)
            sinks.add(new)

    def local_topics(self) -> dict[str, int]:
        """Topic -> number of local sinks, for the topics this process holds. On the hub's loop (the map changes
        there); other threads call ``topic_counts``."""
        return {topic: len(sinks) for topic, sinks in self.topics.items() if sinks}

    def topic_counts(self) -> dict[str, int]:
        """``local_topics`` from any thread (a sync view's, a command's, the liveness's): the map gains and loses
        topics only under ``_topics_lock`` (a topic's first subscriber, its last one leaving), so a copy made
        under it is whole. Never on the delivery path."""
        with self._topics_lock:
            return self.local_topics()

    # connections -----------------------------------------------------------------------------------

    async def register(self, conn: ControlTarget) -> None:
        """Track an authenticated connection (control messages reach it from then on)."""
        self.connections.setdefault(conn.kb_id, set()).add(conn)
        held = self.by_id.get(conn.connection_id)
        if held is None:
            self.by_id[conn.connection_id] = conn
        elif isinstance(held, set):
            held.add(conn)
        elif held is not conn:
            self.by_id[conn.connection_id] = {held, conn}
        if self._control is None:
            control = ControlSink(self)
            self._control = control
            try:
                await self.subscribe(CONTROL_TOPIC, control)
            except BaseException:
                self._control = None
                raise

    def unregister(self, conn: ControlTarget) -> None:
        conns = self.connections.get(conn.kb_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.connections[conn.kb_id]
        held = self.by_id.get(conn.connection_id)
        if held is conn:
            del self.by_id[conn.connection_id]
        elif isinstance(held, set):
            held.discard(conn)
            if len(held) == 1:
                self.by_id[conn.connection_id] = next(iter(held))
            elif not held:
                del self.by_id[conn.connection_id]

    def with_id(self, connection_id: str) -> tuple[ControlTarget, ...]:
        """This process's connections with id ``connection_id`` (none, one, or two while one supersedes another)."""
        held = self.by_id.get(connection_id)
        if held is None:
            return ()
        if isinstance(held, set):
            return tuple(held)
        return (held,)
