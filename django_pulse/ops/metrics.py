"""Prometheus metrics of one server process (docs/metrics.md), with the ``prometheus-client`` library.

Install the extra ``django-pulse-realtime[metrics]``; ``PULSE["METRICS"] = False`` turns them off (every call below is
then a no-op). Each server process counts what it does and serves its own numbers at
``GET <mount>/metrics/`` (``django_pulse.urls``); Prometheus scrapes every process (one target per process)
and ``sum()`` adds them up. Nothing is aggregated through Redis.

Cost: the hot paths count once per fan-out batch, not per socket (``delivered``: one message handed to all of
this process's subscribers of a topic is one call adding the subscriber count). Gauges (connections,
subscriptions, presence members) are not kept up to date at all: they are read from the hub and the presence
backend when Prometheus scrapes.

Metric names (all prefixed ``pulse_``) are listed in ``METRIC_NAMES`` and documented in docs/metrics.md.
The runtime owns the metrics (``get_runtime().metrics``, built by ``build_metrics``): a ``PulseMetrics`` with
its own ``CollectorRegistry`` (the library's ``process_*``/``python_*`` metrics from the default registry are
served with it), or a ``NullMetrics`` whose methods do nothing when metrics are off. This module imports
nothing of the server: the runtime hands it the objects it reads at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from .._conf import pulse_settings

__all__ = ["METRIC_NAMES", "NullMetrics", "PulseMetrics", "build_metrics", "publish_source"]

logger = logging.getLogger("django_pulse.ops.metrics")

SOURCES = ("sdk", "http", "client", "signal", "outbox")
METRIC_NAMES = (
    "pulse_connections",
    "pulse_subscriptions",
    "pulse_channels",
    "pulse_presence_members",
    "pulse_messages_published_total",
    "pulse_deliveries_total",
    "pulse_bytes_out_total",
    "pulse_slow_consumer_disconnects_total",
    "pulse_rate_limited_total",
    "pulse_auth_failures_total",
    "pulse_broker_errors_total",
    "pulse_broker_reconnects_total",
    "pulse_discontinuities_total",
    "pulse_resumes_total",
    "pulse_publish_to_write_seconds",
    "pulse_event_loop_lag_seconds",
    "pulse_outbox_pending",
    "pulse_outbox_oldest_age_seconds",
    "pulse_outbox_dead_letters",
)

# Who publishes: the SDK by default; the HTTP API, client publishes and publish-on-save set it around their
# call (``with publish_source("http"): ...``), so ``published()`` needs no argument on the publish path.
_source: contextvars.ContextVar[str] = contextvars.ContextVar("pulse_publish_source", default="sdk")


@contextlib.contextmanager
def publish_source(name: str) -> Iterator[None]:
    token = _source.set(name)
    try:
        yield
    finally:
        _source.reset(token)


def wanted() -> bool:
    """Whether this process counts: ``PULSE["METRICS"]`` is not False and prometheus-client is installed."""
    setting = pulse_settings.METRICS
    if setting is False:
        return False
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        if setting:
            logger.warning("PULSE['METRICS'] is True but prometheus-client is not installed: no metrics")
        return False
    return True


class NullMetrics:
    """Metrics off: every call does nothing."""

    enabled = False

    def published(self, count: int = 1) -> None:
        pass

    def delivered(self, sinks: int, nbytes: int, text: str, now_ms: float) -> None:
        pass

    def slow_consumer(self) -> None:
        pass

    def rate_limited(self) -> None:
        pass

    def auth_failed(self, code: str) -> None:
        pass

    def discontinuity(self, count: int = 1) -> None:
        pass

    def resumed(self, ok: bool) -> None:
        pass

    def ensure_loop_monitor(self) -> None:
        pass

    def close(self) -> None:
        pass

    def render(self) -> tuple[bytes, str]:
        return b"# django-pulse metrics are off (PULSE['METRICS'] or prometheus-client missing)\n", "text/plain"


_MESSAGE_PREFIX = '{"action":"message"'
_TIMESTAMP_KEY = '"timestamp":'


class PulseMetrics(NullMetrics):
    """The metric objects of one runtime, in a registry of their own. ``live`` is the runtime: its ``hub``,
    ``presence`` and ``broker`` are read when Prometheus scrapes."""

    enabled = True

    def __init__(self, live: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        published = Counter(
            "pulse_messages_published",
            "Messages published through this process, by source.",
            ["source"],
            registry=registry,
        )
        self._published = {s: published.labels(source=s) for s in SOURCES}
        self._deliveries = Counter(
            "pulse_deliveries", "Frames handed to local subscribers (messages x subscribers).", registry=registry
        )
        self._bytes_out = Counter(
            "pulse_bytes_out", "UTF-8 bytes of the frames handed to local subscribers.", registry=registry
        )
        self._slow_consumer = Counter(
            "pulse_slow_consumer_disconnects",
            "Connections closed with 4010 slow_consumer (outbound buffer full).",
            registry=registry,
        )
        self._rate_limited = Counter(
            "pulse_rate_limited", "Frames or publishes refused by a rate limit.", registry=registry
        )
        self._auth_failures = Counter(
            "pulse_auth_failures", "Failed WebSocket authentications, by error code.", ["code"], registry=registry
        )
        self._discontinuities = Counter(
            "pulse_discontinuities",
            "Discontinuity frames sent (subscribers that may have missed frames).",
            registry=registry,
        )
        resumes = Counter(
            "pulse_resumes", "Subscriptions resumed after a reconnect, by result.", ["result"], registry=registry
        )
        self._resumes = {True: resumes.labels(result="succeeded"), False: resumes.labels(result="failed")}
        self._latency = Histogram(
            "pulse_publish_to_write_seconds",
            "From a message's publish (its timestamp) to its hand-over to this process's sockets.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self._loop_lag = Gauge(
            "pulse_event_loop_lag_seconds", "How late the event loop ran a 1 s timer, last sample.", registry=registry
        )
        registry.register(_LiveCollector(live))
        self._monitor: asyncio.Task[None] | None = None

    def published(self, count: int = 1) -> None:
        self._published.get(_source.get(), self._published["sdk"]).inc(count)

    def delivered(self, sinks: int, nbytes: int, text: str, now_ms: float) -> None:
        """One frame handed to ``sinks`` local subscribers: one call per fan-out batch. For a ``message`` frame
        the publish-to-write latency is its age (``now_ms`` minus its ``timestamp``; wall clocks, so across
        hosts it includes their clock difference)."""
        self._deliveries.inc(sinks)
        self._bytes_out.inc(sinks * nbytes)
        if text.startswith(_MESSAGE_PREFIX):
            # The frame's own "timestamp" key is the last one: the data comes before it, and the id and clientId
            # after it are JSON strings, where a quote is always escaped.
            at = text.rfind(_TIMESTAMP_KEY)
            if at > 0:
                end = text.find(",", at)
                with contextlib.suppress(ValueError):
                    self._latency.observe(max(0.0, (now_ms - int(text[at + len(_TIMESTAMP_KEY) : end])) / 1000))

    def slow_consumer(self) -> None:
        self._slow_consumer.inc()

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def auth_failed(self, code: str) -> None:
        self._auth_failures.labels(code=code).inc()

    def discontinuity(self, count: int = 1) -> None:
        self._discontinuities.inc(count)

    def resumed(self, ok: bool) -> None:
        self._resumes[ok].inc()

    def ensure_loop_monitor(self) -> None:
        """Sample the running loop's lag every second (started with the process registration and with each
        connection; one task)."""
        loop = asyncio.get_running_loop()
        task = self._monitor
        if task is None or task.done() or task.get_loop() is not loop:
            self._monitor = loop.create_task(self._watch_loop(), name="pulse-loop-lag")

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(1.0)
            self._loop_lag.set(max(0.0, loop.time() - start - 1.0))

    def close(self) -> None:
        task, self._monitor = self._monitor, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                task.cancel()

    def render(self) -> tuple[bytes, str]:
        """This runtime's metrics and the library's default process_/python_ ones, as exposition text."""
        import prometheus_client

        body = prometheus_client.generate_latest(self.registry) + prometheus_client.generate_latest(
            prometheus_client.REGISTRY
        )
        return body, prometheus_client.CONTENT_TYPE_LATEST


def build_metrics(live: Any) -> NullMetrics:
    """The runtime's metrics: ``PulseMetrics`` when wanted, else ``NullMetrics``."""
    return PulseMetrics(live) if wanted() else NullMetrics()


class _LiveCollector:
    """Gauges read from the hub and the presence backend at scrape time (no bookkeeping on the hot path), and the
    broker's own error and reconnect counts."""

    def __init__(self, live: Any) -> None:
        self._live = weakref.ref(live)

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        connections = GaugeMetricFamily(
            "pulse_connections", "Authenticated connections on this process.", labels=["transport", "app"]
        )
        subscriptions = GaugeMetricFamily("pulse_subscriptions", "Channel subscriptions on this process.")
        channels = GaugeMetricFamily("pulse_channels", "Channels with a subscriber on this process.")
        members = GaugeMetricFamily("pulse_presence_members", "Presence members held by this process.", labels=["app"])
        errors = CounterMetricFamily("pulse_broker_errors", "Broker (Redis) operations that failed.")
        reconnects = CounterMetricFamily(
            "pulse_broker_reconnects", "Times the broker's subscription connection came back after a loss."
        )
        database = ["database"]
        outbox = [
            GaugeMetricFamily(
                "pulse_outbox_pending", "Outbox rows waiting to be published (every process's).", labels=database
            ),
            GaugeMetricFamily(
                "pulse_outbox_oldest_age_seconds", "Age of the oldest outbox row waiting, in seconds.", labels=database
            ),
            GaugeMetricFamily(
                "pulse_outbox_dead_letters", "Outbox rows given up after OUTBOX_MAX_ATTEMPTS failures.", labels=database
            ),
        ]
        live = self._live()
        if live is not None:
            from ..models import OutboxMessage

            try:
                backlog = OutboxMessage.objects.backlog()
            except Exception:  # the database is down or not migrated: the other metrics still answer
                outbox = []
            else:
                for alias, each in backlog["databases"].items():
                    for family, key in zip(outbox, ("pending", "oldestAge", "dead"), strict=True):
                        family.add_metric([alias], each[key])
            by_app, topics, owned = _read_live_state(live.hub, live.presence)
            broker = live.broker
            for app, count in sorted(by_app.items()):
                connections.add_metric(["websocket", app], count)
            message_topics = [n for t, n in topics.items() if t.startswith("m:")]
            subscriptions.add_metric([], sum(message_topics))
            channels.add_metric([], len(message_topics))
            for app, count in sorted(owned.items()):
                members.add_metric([app], count)
            errors.add_metric([], getattr(broker, "errors", 0))
            reconnects.add_metric([], getattr(broker, "reconnects", 0))
        return [connections, subscriptions, channels, members, errors, reconnects, *outbox]


def _read_live_state(hub: Any, presence: Any) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(connections by app, topic -> local sinks, presence members by app); read from a scrape thread while
    the loop may change the maps, so a copy that raced a change is taken again."""
    for _attempt in range(10):
        try:
            by_app = {kb: len(conns) for kb, conns in list(hub.connections.items()) if conns}
            topics = {t: len(s) for t, s in list(hub.topics.items())}
            owned: dict[str, int] = {}
            for held in list(presence._owned.values()):
                for kb, _channel in list(held):
                    owned[kb] = owned.get(kb, 0) + 1
            return by_app, topics, owned
        except RuntimeError:
            continue
    return {}, {}, {}
