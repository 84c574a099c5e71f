"""Prometheus metrics of one server process (docs/metrics.md), with the ``prometheus-client`` library.

Install the extra ``django-pulse[metrics]``; ``PULSE["METRICS"] = False`` turns them off (every call below is
then a no-op). Each server process counts what it does and serves its own numbers at
``GET <mount>/metrics/`` (``django_pulse.urls``); Prometheus scrapes every process (one target per process)
and ``sum()`` adds them up. Nothing is aggregated through Redis.

Cost: the hot paths count once per fan-out batch, not per socket (``delivered``: one message handed to all of
this process's subscribers of a topic is one call adding the subscriber count). Gauges (connections,
subscriptions, presence members) are not kept up to date at all: they are read from the hub and the presence
backend when Prometheus scrapes.

Metric names (all prefixed ``pulse_``) are listed in ``METRIC_NAMES`` and documented in docs/metrics.md.
The metric objects live in prometheus-client's default registry, which is per process by nature; the one
task this module runs (the loop-lag sampler) is held by the runtime (``get_runtime().loop_monitor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from .conf import pulse_settings

__all__ = [
    "METRIC_NAMES",
    "auth_failed",
    "broker_error",
    "broker_reconnected",
    "delivered",
    "discontinuity",
    "enabled",
    "ensure_loop_monitor",
    "publish_source",
    "published",
    "rate_limited",
    "render",
    "resumed",
    "slow_consumer",
]

logger = logging.getLogger("django_pulse.metrics")

SOURCES = ("sdk", "http", "client", "signal")
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


def _wanted() -> bool:
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


class _Noop:
    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass


_NOOP = _Noop()


class _Metrics:
    """The metric objects, created once per process in the default Prometheus registry."""

    def __init__(self) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        published = Counter(
            "pulse_messages_published", "Messages published through this process, by source.", ["source"]
        )
        self.published = {s: published.labels(source=s) for s in SOURCES}
        self.deliveries = Counter("pulse_deliveries", "Frames handed to local subscribers (messages x subscribers).")
        self.bytes_out = Counter("pulse_bytes_out", "UTF-8 bytes of the frames handed to local subscribers.")
        self.slow_consumer = Counter(
            "pulse_slow_consumer_disconnects", "Connections closed with 4010 slow_consumer (outbound buffer full)."
        )
        self.rate_limited = Counter("pulse_rate_limited", "Frames or publishes refused by a rate limit.")
        self.auth_failures = Counter(
            "pulse_auth_failures", "Failed WebSocket authentications, by error code.", ["code"]
        )
        self.broker_errors = Counter("pulse_broker_errors", "Broker (Redis) operations that failed.")
        self.broker_reconnects = Counter(
            "pulse_broker_reconnects", "Times the broker's subscription connection came back after a loss."
        )
        self.discontinuities = Counter(
            "pulse_discontinuities", "Discontinuity frames sent (subscribers that may have missed frames)."
        )
        resumes = Counter("pulse_resumes", "Subscriptions resumed after a reconnect, by result.", ["result"])
        self.resumes = {True: resumes.labels(result="succeeded"), False: resumes.labels(result="failed")}
        self.latency = Histogram(
            "pulse_publish_to_write_seconds",
            "From a message's publish (its timestamp) to its hand-over to this process's sockets.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.loop_lag = Gauge("pulse_event_loop_lag_seconds", "How late the event loop ran a 1 s timer, last sample.")
        REGISTRY.register(_LiveCollector())


class _LiveCollector:
    """Gauges read from the hub and the presence backend at scrape time (no bookkeeping on the hot path)."""

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        connections = GaugeMetricFamily(
            "pulse_connections", "Authenticated connections on this process.", labels=["transport", "app"]
        )
        subscriptions = GaugeMetricFamily("pulse_subscriptions", "Channel subscriptions on this process.")
        channels = GaugeMetricFamily("pulse_channels", "Channels with a subscriber on this process.")
        members = GaugeMetricFamily("pulse_presence_members", "Presence members held by this process.", labels=["app"])
        by_app, topics, owned = _read_live_state()
        for app, count in sorted(by_app.items()):
            connections.add_metric(["websocket", app], count)
        message_topics = [n for t, n in topics.items() if t.startswith("m:")]
        subscriptions.add_metric([], sum(message_topics))
        channels.add_metric([], len(message_topics))
        for app, count in sorted(owned.items()):
            members.add_metric([app], count)
        return [connections, subscriptions, channels, members]


def _read_live_state() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(connections by app, topic -> local sinks, presence members by app); read from a scrape thread while
    the loop may change the maps, so a copy that raced a change is taken again."""
    from .server.runtime import get_runtime

    runtime = get_runtime()
    hub, presence = runtime.hub, runtime.presence
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


_metrics: _Metrics | None = None
_checked = False


def _get() -> _Metrics | None:
    global _metrics, _checked
    if not _checked:
        _checked = True
        if _wanted():
            _metrics = _Metrics()
    return _metrics


def enabled() -> bool:
    return _get() is not None


# -- what the code calls (each a few attribute loads when metrics are off) --------------------------------------


def published(count: int = 1) -> None:
    m = _metrics or _get()
    if m is not None:
        m.published.get(_source.get(), m.published["sdk"]).inc(count)


_MESSAGE_PREFIX = '{"action":"message"'
_TIMESTAMP_KEY = '"timestamp":'


def delivered(sinks: int, nbytes: int, text: str, now_ms: float) -> None:
    """One frame handed to ``sinks`` local subscribers: one call per fan-out batch. For a ``message`` frame the
    publish-to-write latency is its age (``now_ms`` minus its ``timestamp``; wall clocks, so across hosts it
    includes their clock difference)."""
    m = _metrics or _get()
    if m is None:
        return
    m.deliveries.inc(sinks)
    m.bytes_out.inc(sinks * nbytes)
    if text.startswith(_MESSAGE_PREFIX):
        # The frame's own "timestamp" key is the last one: the data comes before it, and the id and clientId
        # after it are JSON strings, where a quote is always escaped.
        at = text.rfind(_TIMESTAMP_KEY)
        if at > 0:
            end = text.find(",", at)
            with contextlib.suppress(ValueError):
                m.latency.observe(max(0.0, (now_ms - int(text[at + len(_TIMESTAMP_KEY) : end])) / 1000))


def slow_consumer() -> None:
    m = _metrics or _get()
    if m is not None:
        m.slow_consumer.inc()


def rate_limited() -> None:
    m = _metrics or _get()
    if m is not None:
        m.rate_limited.inc()


def auth_failed(code: str) -> None:
    m = _metrics or _get()
    if m is not None:
        m.auth_failures.labels(code=code).inc()


def broker_error() -> None:
    m = _metrics or _get()
    if m is not None:
        m.broker_errors.inc()


def broker_reconnected() -> None:
    m = _metrics or _get()
    if m is not None:
        m.broker_reconnects.inc()


def discontinuity(count: int = 1) -> None:
    m = _metrics or _get()
    if m is not None:
        m.discontinuities.inc(count)


def resumed(ok: bool) -> None:
    m = _metrics or _get()
    if m is not None:
        m.resumes[ok].inc()


# -- event-loop lag --------------------------------------------------------------------------------------------


def ensure_loop_monitor() -> None:
    """Sample the running loop's lag every second (started with the process registration and with each
    connection; one task per runtime and loop, held by the runtime)."""
    m = _metrics or _get()
    if m is None:
        return
    from .server.runtime import get_runtime

    runtime = get_runtime()
    loop = asyncio.get_running_loop()
    task = runtime.loop_monitor
    if task is None or task.done() or task.get_loop() is not loop:
        runtime.loop_monitor = loop.create_task(_watch_loop(m), name="pulse-loop-lag")


async def _watch_loop(m: _Metrics) -> None:
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(1.0)
        m.loop_lag.set(max(0.0, loop.time() - start - 1.0))


def render() -> tuple[bytes, str]:
    """The exposition text of this process's metrics (and the library's default process_/python_ ones) and
    its content type; empty when metrics are off."""
    from_lib: Any
    if _get() is None:
        return b"# django-pulse metrics are off (PULSE['METRICS'] or prometheus-client missing)\n", "text/plain"
    import prometheus_client as from_lib

    return from_lib.generate_latest(from_lib.REGISTRY), from_lib.CONTENT_TYPE_LATEST
