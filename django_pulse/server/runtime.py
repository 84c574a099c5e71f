"""The runtime: the ONE owner of this process's realtime state.

A server process has one broker, one hub, one presence backend, one liveness loop and one cache
of enabled apps. ``get_runtime()`` returns the object that owns them all; each is built on
first use from the settings, wired to the others (the broker delivers to the hub, presence publishes through
the broker, liveness reads all three), and the whole is dropped when ``PULSE`` or ``CHANNEL_LAYERS`` change
(``setting_changed``, so ``override_settings`` just works) or when tests call ``reset_runtime()``. The role
channels' ``ChannelLayerManager`` plays for channel layers.

Lower layers (``protocol``, ``broker``, ``presence``, ``cluster``) never import this module; they are handed
what they need by it (``cluster`` gets the broker, the presence backend and a callback for the hub's topics,
never the runtime).

``get_runtime()`` is called at the entry points only (the connection factories, the SDK, views, commands,
the server's start and shutdown): a connection takes the runtime once, when it is made, and keeps it
(``PulseConsumer.runtime``); the modules below it are handed the runtime or the parts they use.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.core.signals import setting_changed

from ._io import FastPathReport
from .timers import TimerWheel

if TYPE_CHECKING:
    from ..broker.base import Broker
    from ..cluster.client_connections import ClientConnections
    from ..cluster.liveness import Liveness
    from ..ops.metrics import NullMetrics
    from ..presence.base import PresenceBackend
    from .app_cache import AppCache
    from .hub import Hub
    from .relay import Relay

__all__ = ["Runtime", "get_runtime", "reset_runtime"]

_Part = TypeVar("_Part")


class Runtime:
    """This process's broker, hub, presence backend, liveness, app cache and connections.

    Attributes are built lazily (a management command that only reads the database builds nothing) and are
    thread-safe to build: sync views run in threads while the server's loop runs.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._broker: Broker | None = None
        self._hub: Hub | None = None
        self._presence: PresenceBackend | None = None
        self._liveness: Liveness | None = None
        self._client_connections: ClientConnections | None = None
        self._apps: AppCache | None = None
        # The outbox relay of this process (server.relay.start_relay): set and started when the server starts.
        self.relay: Relay | None = None
        # Every open connection of this process, authenticated or not (graceful shutdown closes them all).
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()
        # Per ASGI server: the path its connections take (the direct-write fast path or ASGI), decided and logged
        # by its first connection, and the frames written directly (docs/servers.md).
        self.fast_path = FastPathReport()
        # The in-memory broker's lock on the project's database (broker.memory.claim_database), held open for
        # the process's life; tried once.
        self.database_claimed = False
        self.database_claim: Any = None
        # Tasks this process started and must keep a reference to until they end (e.g. registering at startup).
        self.background_tasks: set[asyncio.Task[None]] = set()
        # Set by the graceful shutdown (server.shutdown): under granian it runs on SIGTERM and again from the
        # ASGI lifespan shutdown; the second call has nothing to do.
        self.shut_down = False
        # Connections' heartbeats and token expiries: shared slots, not a loop timer each (timers.py).
        self.heartbeats = TimerWheel(operator.methodcaller("_heartbeat"))
        self.expiries = TimerWheel(operator.methodcaller("_token_expired"))
        # (settings.PULSE it was read from, consumer._Limits): the limits every connection shares.
        self.connection_limits: tuple[Any, Any] | None = None
        self._metrics: NullMetrics | None = None
        # The runtime that replaced this one (reset_runtime): a connection made before the reset keeps this one;
        # what it asks for that is gone (closed) it gets from the current runtime, as if it had looked it up.
        self._successor: Runtime | None = None

    def _part(self, name: str, build: Callable[[], _Part]) -> _Part:
        """The part kept as ``_<name>``, built by ``build`` on first use, once, under the lock (the lock is
        re-entrant: a part's build may use another part). A runtime replaced by ``reset_runtime`` that has closed
        its parts hands out its successor's instead, so a connection that outlives a settings change goes on."""
        if self._successor is not None:
            return cast("_Part", getattr(self._successor, name))
        with self._lock:
            part = cast("_Part | None", getattr(self, "_" + name))
            if part is None:
                part = build()
                setattr(self, "_" + name, part)
        return part

    # Each property reads its attribute first: after the first use that is all a hot path pays.

    @property
    def broker(self) -> Broker:
        broker = self._broker
        return broker if broker is not None else self._part("broker", self._build_broker)

    @property
    def hub(self) -> Hub:
        hub = self._hub
        return hub if hub is not None else self._part("hub", self._build_hub)

    def _build_broker(self) -> Broker:
        """The broker, and with it the hub: the broker hands every frame it receives to the hub."""
        from ..broker import build_broker
        from .hub import Hub
        from .presence_actions import recovered_elsewhere

        broker = build_broker()
        hub = Hub(broker, self.apps, self.metrics)
        broker.delivery = hub
        # Presence elsewhere forgets a connection id that another process now holds.
        hub.recovered_listeners.append(functools.partial(recovered_elsewhere, self))
        self._hub = hub
        return broker

    def _build_hub(self) -> Hub:
        self.broker  # noqa: B018  (builds the hub with it)
        assert self._hub is not None
        return self._hub

    @property
    def presence(self) -> PresenceBackend:
        presence = self._presence
        return presence if presence is not None else self._part("presence", self._build_presence)

    def _build_presence(self) -> PresenceBackend:
        from ..presence import build_presence

        return build_presence(self.broker)

    @property
    def liveness(self) -> Liveness:
        liveness = self._liveness
        return liveness if liveness is not None else self._part("liveness", self._build_liveness)

    def _build_liveness(self) -> Liveness:
        from ..cluster.liveness import build_liveness

        # The hub is built when its topics are first read (a command reading liveness needs no hub otherwise);
        # ``topic_counts`` may be called from any thread.
        return build_liveness(
            broker=self.broker,
            presence=self.presence,
            client_connections=self.client_connections,
            topics=lambda: self.hub.topic_counts(),
        )

    @property
    def client_connections(self) -> ClientConnections:
        """The open connections per client id (``MAX_CONNECTIONS_PER_CLIENT``): across processes with Redis."""
        counter = self._client_connections
        if counter is not None:
            return counter
        return self._part("client_connections", self._build_client_connections)

    def _build_client_connections(self) -> ClientConnections:
        from ..cluster.client_connections import build_client_connections

        # Slots are taken by a registered process only: the liveness loop runs first.
        return build_client_connections(broker=self.broker, registered=lambda: self.liveness.ensure_started())

    @property
    def apps(self) -> AppCache:
        apps = self._apps
        return apps if apps is not None else self._part("apps", self._build_apps)

    @staticmethod
    def _build_apps() -> AppCache:
        from .app_cache import AppCache

        return AppCache()

    def wake_relay(self) -> None:
        """Wake this process's outbox relay, if it runs, for rows just committed."""
        relay = self.relay
        if relay is not None:
            relay.wake()

    @property
    def metrics(self) -> NullMetrics:
        """Prometheus metrics of this process (django_pulse.ops.metrics); does nothing when they are off."""
        metrics = self._metrics
        return metrics if metrics is not None else self._part("metrics", self._build_metrics)

    def _build_metrics(self) -> NullMetrics:
        from ..ops.metrics import build_metrics

        return build_metrics(self)

    def close(self) -> None:
        """Release what this runtime built (connections to Redis, timers); nothing is awaited."""
        with self._lock:
            broker, presence, liveness = self._broker, self._presence, self._liveness
            counter, relay = self._client_connections, self.relay
            self.relay = None
            self._broker = self._hub = self._presence = self._liveness = None
            self._client_connections = None
            self._apps = None
        metrics, self._metrics = self._metrics, None
        # The relay stops first: it publishes through the broker.
        releases = (
            None if relay is None else relay.stop,
            None if metrics is None else metrics.close,
            None if broker is None else broker.close_nowait,
            None if presence is None else presence.close,
            None if liveness is None else liveness.close,
            None if counter is None else counter.close,
        )
        for release in releases:
            if release is not None:
                release()


_runtime = Runtime()
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime."""
    return _runtime


def reset_runtime() -> None:
    """Drop this process's state; the next use rebuilds it from the current settings (tests, settings changes).

    Open connections keep the objects they hold; new ones get new ones.
    """
    global _runtime
    with _runtime_lock:
        old, _runtime = _runtime, Runtime()
        # Connections are the process's, not the settings': graceful shutdown must still find them all. So is
        # the server the process runs under: its path is decided and logged once.
        _runtime.connections = old.connections
        _runtime.fast_path = old.fast_path
        _runtime.database_claimed, _runtime.database_claim = old.database_claimed, old.database_claim
        _runtime.background_tasks = old.background_tasks
        _runtime.heartbeats, _runtime.expiries = old.heartbeats, old.expiries
        old._successor = _runtime
    old.close()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PULSE", "CHANNEL_LAYERS"):
        reset_runtime()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_pulse.runtime.reset")
