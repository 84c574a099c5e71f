"""How django-pulse reaches Redis: one URL, a master found through Redis Sentinel, or a Redis Cluster.

Every Redis client of django-pulse (broker, presence, process liveness, idempotency) is built here, from a
*target* string: the ``REDIS_URL`` itself; when ``PULSE["REDIS_SENTINEL"]`` is set, the marker
``sentinel://{service}`` (what ``pulse_settings.REDIS_URL`` returns then), which stands for "the current
master of that service"; when ``PULSE["REDIS_CLUSTER"]`` is set, the marker ``cluster://``, for which
``sync_client``/``async_client`` return redis-py's cluster clients (each command routed to the master of its
key's slot, MOVED/ASK followed, the slot map re-read after a failover) and ``node_endpoint`` gives the broker's
per-shard pub/sub connections their address and credentials.

Sentinel support is redis-py's own (``redis.sentinel``/``redis.asyncio.sentinel``): its clients ask the
sentinels for the master on every new connection and drop connections to a node that has become a replica,
so after a failover the next command reaches the new master. The broker's pub/sub reader (its own RESP
connection) asks ``master_endpoint`` for the address on every reconnect.
"""

from __future__ import annotations

import ssl as _ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis as redis_sync
import redis.asyncio as redis_async

__all__ = [
    "CLUSTER_TARGET",
    "SENTINEL_SCHEME",
    "ClusterConfig",
    "Endpoint",
    "SentinelConfig",
    "async_client",
    "async_no_retry",
    "cluster_config",
    "is_cluster",
    "master_endpoint",
    "no_retry",
    "node_endpoint",
    "sentinel_config",
    "sync_client",
]

SENTINEL_SCHEME = "sentinel://"
CLUSTER_TARGET = "cluster://"

_SENTINEL_KEYS = {
    "service",
    "sentinels",
    "db",
    "username",
    "password",
    "sentinel_username",
    "sentinel_password",
    "ssl",
    "sentinel_ssl",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
}


def _setting_dict(name: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    """``PULSE[name]`` checked to be a dict with only ``allowed`` keys (ValueError naming the setting)."""
    if not isinstance(value, dict):
        raise ValueError(f"PULSE['{name}'] must be a dict (docs/settings.md)")
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"PULSE['{name}'] has unknown keys: {', '.join(sorted(unknown))}")
    return value


def _tls_options(enabled: bool, ca: str | None, cert: str | None, key: str | None) -> dict[str, Any]:
    """redis-py's TLS options of a connection (none when TLS is off)."""
    if not enabled:
        return {}
    return {"ssl": True, "ssl_ca_certs": ca, "ssl_certfile": cert, "ssl_keyfile": key}


def _ssl_context(enabled: bool, ca: str | None, cert: str | None, key: str | None) -> _ssl.SSLContext | None:
    if not enabled:
        return None
    context = _ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True, kw_only=True)
class _Credentials:
    """The credentials and TLS of the Redis servers (the master and replicas, or the cluster's nodes)."""

    username: str | None = None
    password: str | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def _tls(self, enabled: bool) -> dict[str, Any]:
        return _tls_options(enabled, self.ssl_ca_certs, self.ssl_certfile, self.ssl_keyfile)

    def ssl_context(self) -> _ssl.SSLContext | None:
        return _ssl_context(self.ssl, self.ssl_ca_certs, self.ssl_certfile, self.ssl_keyfile)


@dataclass(frozen=True)
class SentinelConfig(_Credentials):
    """``PULSE["REDIS_SENTINEL"]``, validated (docs/settings.md)."""

    service: str
    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    sentinel_ssl: bool = False

    @classmethod
    def from_setting(cls, value: Any) -> SentinelConfig:
        value = _setting_dict("REDIS_SENTINEL", value, _SENTINEL_KEYS)
        if not value.get("service") or not value.get("sentinels"):
            raise ValueError("PULSE['REDIS_SENTINEL'] needs 'service' and 'sentinels'")
        sentinels = tuple((str(host), int(port)) for host, port in value["sentinels"])
        options = {k: v for k, v in value.items() if k not in ("service", "sentinels")}
        return cls(service=str(value["service"]), sentinels=sentinels, **options)

    def node_kwargs(self) -> dict[str, Any]:
        """Connection options for the master (and replicas)."""
        return {"db": self.db, "username": self.username, "password": self.password, **self._tls(self.ssl)}

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection options for the sentinels themselves."""
        return {
            "username": self.sentinel_username,
            "password": self.sentinel_password,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            **self._tls(self.sentinel_ssl),
        }


_CLUSTER_KEYS = {"nodes", "username", "password", "ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}


@dataclass(frozen=True)
class ClusterConfig(_Credentials):
    """``PULSE["REDIS_CLUSTER"]``, validated (docs/settings.md): startup nodes, credentials and TLS of the nodes."""

    nodes: tuple[tuple[str, int], ...]

    @classmethod
    def from_setting(cls, value: Any) -> ClusterConfig:
        value = _setting_dict("REDIS_CLUSTER", value, _CLUSTER_KEYS)
        if not value.get("nodes"):
            raise ValueError("PULSE['REDIS_CLUSTER'] needs 'nodes': [(host, port), ...] (any of the cluster's nodes)")
        nodes = tuple((str(host), int(port)) for host, port in value["nodes"])
        options = {k: v for k, v in value.items() if k != "nodes"}
        return cls(nodes=nodes, **options)

    def node_kwargs(self) -> dict[str, Any]:
        """Connection options of every node (redis-py's, for ``Redis`` and ``RedisCluster`` alike)."""
        return {"username": self.username, "password": self.password, **self._tls(self.ssl)}


def cluster_config() -> ClusterConfig | None:
    from .._conf import pulse_settings

    value = pulse_settings.REDIS_CLUSTER
    return None if value is None else ClusterConfig.from_setting(value)


def is_cluster(target: str) -> bool:
    """True if ``target`` stands for the Redis Cluster of ``PULSE["REDIS_CLUSTER"]``."""
    return target == CLUSTER_TARGET


def _cluster_for(target: str) -> ClusterConfig:
    config = cluster_config()
    if config is None:
        raise ValueError(f"{target!r} names a Redis Cluster, but PULSE['REDIS_CLUSTER'] is not set")
    return config


class _LazySyncCluster:
    """redis-py's synchronous ``RedisCluster`` reads the slot map in its constructor, so it cannot be built while
    the cluster is down; this stands in for it and builds it on first use (a process starts during an outage
    and its calls fail with ``RedisError`` until the cluster answers, as with one Redis)."""

    # A caller's ``retry`` (the broker passes none) is redis-py's cluster-level retry: a command is not run again
    # on another node after a connection error, so a publish script whose reply was lost never runs twice.
    # MOVED and ASK are followed either way (the node refused the command: nothing ran).

    def __init__(self, config: ClusterConfig, kwargs: dict[str, Any]) -> None:
        self._config = config
        self._kwargs = kwargs
        self._client: Any = None

    def _real(self) -> Any:
        if self._client is None:
            from redis.cluster import ClusterNode, RedisCluster

            nodes = [ClusterNode(host, port) for host, port in self._config.nodes]  # type: ignore[no-untyped-call, unused-ignore]
            self._client = RedisCluster(startup_nodes=nodes, **self._config.node_kwargs(), **self._kwargs)
        return self._client

    def register_script(self, script: str) -> Any:
        from redis.commands.core import Script

        return Script(self, script)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


def _async_cluster_class() -> type[Any]:
    from redis.asyncio.cluster import RedisCluster

    class _AsyncCluster(RedisCluster):
        """redis-py's async cluster client, read the slot map before the first command: when many coroutines
        send their first command at once (a burst of subscribes), redis-py's own lazy initialisation can close
        connections that other coroutines are already using ("Connection closed by server")."""

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            if self._initialize:
                await self.initialize()
            return await super().execute_command(*args, **kwargs)

    return _AsyncCluster


def sentinel_config() -> SentinelConfig | None:
    from .._conf import pulse_settings

    value = pulse_settings.REDIS_SENTINEL
    return None if value is None else SentinelConfig.from_setting(value)


def _sentinel_for(target: str) -> SentinelConfig:
    config = sentinel_config()
    if config is None or target != SENTINEL_SCHEME + config.service:
        raise ValueError(f"{target!r} names a Sentinel service, but PULSE['REDIS_SENTINEL'] does not configure it")
    return config


class _SyncSentinelRedis(redis_sync.Redis):
    """The master's client; closing it closes the sentinels' connections too."""

    pulse_sentinel: Any = None

    def close(self) -> None:
        super().close()
        for client in getattr(self.pulse_sentinel, "sentinels", ()):
            client.close()


class _AsyncSentinelRedis(redis_async.Redis):
    pulse_sentinel: Any = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in getattr(self.pulse_sentinel, "sentinels", ()):
            await client.aclose()


# redis-py 8 caps a client's connection pool at 100 (earlier versions had no cap) and refuses a command that finds
# all of them busy (MaxConnectionsError: "Unavailable" to Pulse). An asyncio client holds one connection per
# command in flight, and a reconnect storm (a rolling restart: hundreds of clients continuing their connections on
# this process at once) has more than 100 in flight: their recovery announcements failed. Every client is built
# with this cap instead; Redis's own limit (maxclients, 10,000 by default) is shared by every process.
MAX_CONNECTIONS = 2000


def sync_client(target: str, **kwargs: Any) -> redis_sync.Redis:
    """A thread-safe synchronous client of ``target`` (a Redis URL, ``sentinel://service`` or ``cluster://``)."""
    if is_cluster(target):
        return cast("redis_sync.Redis", _LazySyncCluster(_cluster_for(target), kwargs))
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)
    if not target.startswith(SENTINEL_SCHEME):
        return redis_sync.Redis.from_url(target, **kwargs)
    from redis.sentinel import Sentinel

    config = _sentinel_for(target)
    sentinel = Sentinel(list(config.sentinels), sentinel_kwargs=config.sentinel_kwargs(), **config.node_kwargs())  # type: ignore[no-untyped-call, unused-ignore]
    client = cast("_SyncSentinelRedis", sentinel.master_for(config.service, redis_class=_SyncSentinelRedis, **kwargs))  # type: ignore[no-untyped-call, unused-ignore]
    client.pulse_sentinel = sentinel
    return client


def async_client(target: str, **kwargs: Any) -> redis_async.Redis:
    """An asyncio client of ``target``, for the running event loop."""
    if is_cluster(target):
        from redis.asyncio.cluster import ClusterNode

        cluster = _cluster_for(target)
        nodes = [ClusterNode(host, port) for host, port in cluster.nodes]
        # redis-py's async cluster client refuses a command (MaxConnectionsError) when a node has this many
        # connections busy, where the single-Redis client opens another: a burst of subscribes (each reads the
        # channel's history) must not fail for that.
        kwargs.setdefault("max_connections", 2**16)
        return cast("redis_async.Redis", _async_cluster_class()(startup_nodes=nodes, **cluster.node_kwargs(), **kwargs))
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)
    if not target.startswith(SENTINEL_SCHEME):
        return redis_async.Redis.from_url(target, **kwargs)
    from redis.asyncio.sentinel import Sentinel

    config = _sentinel_for(target)
    sentinel = Sentinel(list(config.sentinels), sentinel_kwargs=config.sentinel_kwargs(), **config.node_kwargs())  # type: ignore[no-untyped-call, unused-ignore]
    client = cast("_AsyncSentinelRedis", sentinel.master_for(config.service, redis_class=_AsyncSentinelRedis, **kwargs))
    client.pulse_sentinel = sentinel
    return client


@dataclass(frozen=True)
class Endpoint:
    """Where a raw connection goes, and how it authenticates."""

    host: str
    port: int
    ssl: _ssl.SSLContext | None
    username: str | None
    password: str | None


async def master_endpoint(target: str, timeout: float) -> Endpoint:
    """The address of ``target`` now: the URL's host, or the master the sentinels name at this moment."""
    if not target.startswith(SENTINEL_SCHEME):
        parts = urlsplit(target)
        return Endpoint(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            _ssl.create_default_context() if parts.scheme == "rediss" else None,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )
    import asyncio

    from redis.asyncio.sentinel import Sentinel

    config = _sentinel_for(target)
    sentinel = Sentinel(list(config.sentinels), sentinel_kwargs=config.sentinel_kwargs())  # type: ignore[no-untyped-call, unused-ignore]
    try:
        host, port = await asyncio.wait_for(sentinel.discover_master(config.service), timeout)
    except redis_sync.RedisError as exc:
        raise ConnectionError(f"no master of {config.service!r}: {exc}") from exc
    finally:
        for client in sentinel.sentinels:
            await client.aclose()
    return Endpoint(str(host), int(port), config.ssl_context(), config.username, config.password)


def sentinel_endpoints(target: str) -> tuple[str, list[Endpoint]]:
    """The Sentinel service of ``target`` (``sentinel://<service>``) and its sentinels, with their credentials."""
    config = _sentinel_for(target)
    ssl = _ssl_context(config.sentinel_ssl, config.ssl_ca_certs, config.ssl_certfile, config.ssl_keyfile)
    endpoints = [
        Endpoint(host, port, ssl, config.sentinel_username, config.sentinel_password) for host, port in config.sentinels
    ]
    return config.service, endpoints


def node_endpoint(host: str, port: int) -> Endpoint:
    """A node of the Redis Cluster of ``PULSE["REDIS_CLUSTER"]`` (a shard master), with the cluster's credentials."""
    config = _cluster_for(CLUSTER_TARGET)
    return Endpoint(host, int(port), config.ssl_context(), config.username, config.password)


def no_retry() -> Any:
    """Each publish runs its script once: redis-py's default retries (10, on a timeout or a broken connection)
    would run it again when only the reply was lost, delivering the message twice under two serials. A failed
    publish raises ``Unavailable`` instead, and the caller retries with the same message id (idempotent)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def async_no_retry() -> Any:
    """``no_retry`` for redis-py's asyncio clients."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Retry(NoBackoff(), 0)
