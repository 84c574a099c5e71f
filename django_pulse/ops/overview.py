"""``pulse status``: one dict describing the installation, built the same way by the command and the API.

With Redis the command builds it itself (the registry in Redis sees every process); with the embedded
in-memory default it asks the running server (``GET status/``), whose memory holds the state.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .. import __version__
from .._conf import pulse_settings
from ..exceptions import PulseError
from ..models import OutboxMessage, PulseApp

if TYPE_CHECKING:
    from ..cluster.liveness import Liveness

__all__ = ["collect", "metrics_exposition", "redis_health"]


def _mask(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_health() -> dict[str, Any] | None:
    """None without Redis; else ``{"url", "ok", "error"}`` after a PING (2 s timeout)."""
    url = pulse_settings.REDIS_URL
    if not url:
        return None
    import redis

    from ..broker.connection import sync_client

    client = sync_client(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        return {"url": _mask(url), "ok": False, "error": str(exc)}
    finally:
        client.close()
    return {"url": _mask(url), "ok": True, "error": None}


def collect(*, channel_lists: bool = False, liveness: Liveness | None = None) -> dict[str, Any]:
    """Version, apps, backends, Redis health, and live processes, connections and channels across all processes.

    ``processes``/``connections`` come from the process registry (``django_pulse.cluster.liveness``): with Redis,
    every live server process's last heartbeat; in memory, this process. With ``channel_lists`` (the admin's
    live view) each app also has ``channelList`` (``pulse.channels()``), and ``drainingList`` names the
    processes that stopped gracefully and still hold their members. ``liveness``: the runtime's, handed down by
    a caller in the server (the live view's watcher); None for the entry points (the command, the HTTP API and
    the admin's views), which look the runtime up here.
    """

    def registry() -> Liveness:
        if liveness is not None:
            return liveness
        from ..server.runtime import get_runtime

        return get_runtime().liveness

    redis = redis_health()
    reachable = redis is None or redis["ok"]
    rows = list(PulseApp.objects.all())
    enabled = [app.kb_id for app in rows if app.enabled]
    lists: dict[str, list[dict[str, Any]]] = {}
    lists_error: str | None = None
    if reachable and enabled:
        try:  # pulse.channels() of every enabled app, from one read of the process registry
            lists = registry().channels_of_apps_sync(enabled)
        except PulseError as exc:
            lists_error = exc.message
    apps: list[dict[str, Any]] = []
    for app in rows:
        entry: dict[str, Any] = {
            "kbId": app.kb_id,
            "enabled": app.enabled,
            "keys": app.api_keys.filter(revoked_at__isnull=True).count(),
            "channels": None,
        }
        if app.kb_id in lists:
            entry["channels"] = len(lists[app.kb_id])
            if channel_lists:
                entry["channelList"] = lists[app.kb_id]
        elif app.enabled and lists_error is not None:
            entry["error"] = lists_error
        apps.append(entry)
    live: dict[str, Any] = {"processes": None, "connections": None, "processList": []}
    if reachable:
        try:
            status = registry().status_sync()
        except PulseError as exc:
            live["error"] = exc.message
        else:
            live = {
                "processes": len(status["processes"]),
                "connections": status["connections"],
                "processList": status["processes"],
                "draining": len(status.get("draining", [])),
            }
            if channel_lists:
                live["drainingList"] = status.get("draining", [])
    try:
        outbox: dict[str, Any] | None = OutboxMessage.objects.backlog()
    except Exception:  # not migrated yet: the rest of the status still answers
        outbox = None
    return {
        "outbox": outbox,
        "version": __version__,
        "mode": "redis" if pulse_settings.REDIS_URL else "embedded",
        "broker": pulse_settings.BROKER_BACKEND,
        "presence": pulse_settings.PRESENCE_BACKEND,
        "redis": redis,
        "apps": apps,
        "channels": sum(a["channels"] or 0 for a in apps),
        **live,
    }


def metrics_exposition(*, app: str | None = None) -> tuple[bytes, str]:
    """This process's Prometheus metrics (``django_pulse.ops.metrics``) as exposition text, and its content type.
    With ``app``, only the series labelled with that app (``app="<kbId>"``): what one app's API key may read of a
    process that other apps share.

    The API's ``GET metrics/`` serves it: the HTTP layer reads the running process through this module, as it
    does for ``collect``, never through the server layer itself.
    """
    from ..server.runtime import get_runtime

    body, content_type = get_runtime().metrics.render()
    return (body if app is None else _series_of_app(body, app)), content_type


def _series_of_app(body: bytes, kb_id: str) -> bytes:
    """The samples of exposition text ``body`` labelled ``app="<kb_id>"``, each family with its HELP and TYPE."""
    label = re.compile(r'[{,]app="' + re.escape(kb_id) + r'"[,}]')
    kept: list[str] = []
    header: list[str] = []
    for line in body.decode().splitlines():
        if line.startswith("#"):
            header = [line] if line.startswith("# HELP") else [*header, line]
        elif label.search(line.split(" ", 1)[0]):
            kept += header
            header = []
            kept.append(line)
    return "".join(line + "\n" for line in kept).encode()
