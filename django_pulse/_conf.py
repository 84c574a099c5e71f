"""The one settings object of django-pulse: ``pulse_settings``, read live over ``settings.PULSE``.

Every Pulse setting is read here and nowhere else. Each property reads ``settings.PULSE`` at access time,
so ``override_settings(PULSE=...)`` just works; hot paths copy the values they need once per connection.
``DEFAULTS`` documents every key (docs/settings.md mirrors it); unknown keys are reported by the system
check ``django_pulse.E001``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

__all__ = ["DEFAULTS", "PulseSettings", "pulse_settings"]

DEFAULTS: dict[str, Any] = {
    # The app (kbId) used when a call names none.
    "DEFAULT_KB_ID": "default",
    # Absolute ws(s):// URL of the WebSocket endpoint for get_token() when there is no request to derive
    # it from (e.g. "wss://example.com/pulse/ws/"). None: derived from the request or SERVER_URL.
    "ENDPOINT": None,
    # Base http(s) URL of the running server, used to build ENDPOINT when there is no request, and by the
    # management commands to reach an embedded (in-memory) server.
    "SERVER_URL": "http://127.0.0.1:8000",
    # The path the WebSocket consumer is routed at (django_pulse.routing).
    "WS_PATH": "pulse/ws/",
    # Token lifetime and verification leeway, in seconds.
    "TOKEN_TTL": 3600,
    "TOKEN_LEEWAY": 10,
    # Least privilege by default (a token nobody scoped must not let its holder publish): capabilities of a token
    # issued without explicit ones (channel pattern -> operations). Clients may listen, read history and be
    # present, not publish; grant "publish" explicitly, or restore the old default
    # {"*": ["subscribe", "publish", "presence", "history"]}.
    "DEFAULT_CAPABILITIES": {"*": ["subscribe", "presence", "history"]},
    # A channel no authorize hook matches: "open" (allowed by capabilities alone, private prefixes excepted)
    # or "refuse" (needs a capability naming it, as private channels do).
    "UNHOOKED_CHANNELS": "open",
    # Channel names starting with one of these need an authorize hook or an explicit (non-"*") capability.
    "PRIVATE_PREFIXES": ["private-"],
    # Dotted path of a callable(client_id) -> Django user or None, used by authorize hooks. None: look the
    # client id up as the primary key of the user model.
    "USER_RESOLVER": None,
    # Redis URL for the broker, presence and history. None: taken from a channels_redis default channel
    # layer if there is one, else everything stays in process memory (one server process).
    "REDIS_URL": None,
    # Prefix of every Redis key and pub/sub channel, so several projects can share one Redis.
    "REDIS_PREFIX": "pulse",
    # Dotted paths of backends; None picks memory or Redis from REDIS_URL.
    "BROKER_BACKEND": None,
    "PRESENCE_BACKEND": None,
    # Protocol limits (docs/protocol.md).
    "MAX_MESSAGE_SIZE": 65536,
    "MAX_SUBSCRIPTIONS": 128,
    "AUTH_TIMEOUT": 5.0,
    "HEARTBEAT_INTERVAL": 15.0,
    "HEARTBEAT_GRACE": 10.0,
    # Inbound frames per second per connection (token bucket of RATE_BURST), and client publishes/s.
    "RATE_LIMIT": 50,
    "RATE_BURST": 100,
    "PUBLISH_RATE": 50,
    # Whispers (client events: typing indicators) per second per connection, a limit of their own.
    "WHISPER_RATE": 10,
    # A connection whose unsent outbound bytes pass this is closed with 4010 slow_consumer.
    "OUTBOUND_BUFFER_LIMIT": 1024 * 1024,
    # Presence: seconds a member of an abruptly dropped connection is kept, data size, members per channel.
    "PRESENCE_GRACE": 15.0,
    "PRESENCE_MAX_DATA": 2048,
    "PRESENCE_MAX_MEMBERS": 1000,
    # Limits per identity (docs/security.md): open connections (WebSocket + SSE) of one client id of
    # one app, across every process with Redis (past it: close 4009); channels one connection may be present
    # on; presence slots one client id may hold in one channel (so no identity alone fills PRESENCE_MAX_MEMBERS).
    # 0 (or None) turns a limit off.
    "MAX_CONNECTIONS_PER_CLIENT": 50,
    "PRESENCE_MAX_CHANNELS": 32,
    "PRESENCE_MAX_MEMBERS_PER_CLIENT": 20,
    # Presence members of anonymous visitors (client ids the server minted: "anon-…", "anonymous-…") per
    # channel, counted apart from PRESENCE_MAX_MEMBERS: identities that cost nothing fill these slots only,
    # never those of signed-in clients. 0: anonymous visitors watch presence without entering it.
    "PRESENCE_MAX_ANONYMOUS_MEMBERS": 200,
    # Seconds after which an idle channel's state in Redis (serial counter and epoch, presence serial) or in
    # the in-memory broker expires; refreshed by every publish, read and presence change, kept while a member
    # is present. A channel recreated afterwards has a new epoch (a resume across it gets resumed: false).
    "CHANNEL_TTL": 86400.0,
    # Liveness of server processes in Redis: heartbeat period and the age after which a silent process's
    # members and registrations are swept by the live ones.
    "PROCESS_HEARTBEAT": 3.0,
    "PROCESS_TIMEOUT": 12.0,
    # WebSocket Origin allow-list: None allows the project's ALLOWED_HOSTS (Channels' AllowedHostsOriginValidator);
    # a list of origins/host patterns allows those; ["*"] allows any.
    "ALLOWED_ORIGINS": None,
    # HTTP API: maximum messages in one batch publish, and throttle rate per API key (DRF syntax).
    "MAX_BATCH": 100,
    "API_THROTTLE_RATE": "6000/min",
    # Idempotency window of message ids, in seconds.
    "IDEMPOTENCY_WINDOW": 120.0,
    # HTTP API: dotted path of a callable (request, user_id) -> capabilities dict | None deciding who gets a
    # token from POST token/ and with which capabilities (None: DEFAULT_CAPABILITIES); it refuses by raising
    # PermissionDenied or returning False. None: every logged-in user and API key gets default tokens.
    "TOKEN_PERMISSION": None,
    # HTTP API: a token issued with an API key names that key; True: once the key is revoked, its tokens are
    # refused when they connect or renew (within ENABLED_APP_TTL, 2 s, on every process). False: they stay
    # valid until they expire (rotating keys then disconnects no one).
    "REVOKE_TOKENS_WITH_KEY": False,
    # History of each channel (replay on resume, rewind, the history action): the last HISTORY_SIZE messages
    # published less than HISTORY_TTL seconds ago are kept. HISTORY_SIZE 0 keeps none (no recovery).
    "HISTORY_SIZE": 100,
    "HISTORY_TTL": 120.0,
    # Redis: a message younger than this many seconds stays in history even past HISTORY_SIZE, so what was
    # published while the subscribers of a failover reconnect can still be resumed (0: HISTORY_SIZE only).
    "HISTORY_MIN_RETENTION": 30.0,
    # Under daphne and uvicorn, write each fanned-out frame to the sockets directly, built once per message,
    # instead of through the server's ASGI send (docs/architecture.md, "The direct-write fast path").
    # False: everything through ASGI.
    "DIRECT_WRITE": True,
    # Live templates (docs/live-templates.md): visitors who are not logged in get, from POST token/anonymous/,
    # a token with no capabilities of its own, which only opens the signed streams of pages rendered for
    # them. False: that endpoint refuses, and live elements stay static for anonymous visitors.
    "LIVE_ANONYMOUS": True,
    # Live templates: the throttle of POST token/anonymous/ per IP address (DRF syntax; None: off).
    "LIVE_ANONYMOUS_RATE": "60/min",
    # The proxies whose X-Forwarded-For is believed when an IP address matters (the anonymous token's
    # throttle): None (trust no forwarding header), a number of proxies in front of the server (as DRF's
    # NUM_PROXIES), or a list of their addresses or networks ("10.0.0.0/8").
    "TRUSTED_PROXIES": None,
    # Installation: the site's public base URL (e.g. "https://shop.example") from which get_token()
    # builds the endpoint when there is no request (workers, shells, signals); None: SERVER_URL. ENDPOINT wins.
    "PUBLIC_URL": None,
    # SSE transport (docs/transports.md): the path of the SSE endpoint (django_pulse.routing.sse_urlpatterns),
    # seconds a connection ticket stays valid, seconds a stream that lost its client waits for the page's close
    # POST (so presence leaves at once), and the age in seconds after which a unidirectional (session) stream
    # is ended so the browser reconnects and the session is checked again.
    "SSE_PATH": "pulse/sse/",
    "SSE_TICKET_TTL": 30.0,
    "SSE_CLOSE_LINGER": 1.0,
    "SSE_MAX_AGE": 3600.0,
    # Past one Redis (docs/scaling.md). REDIS_SENTINEL: reach the master of a Sentinel-monitored service
    # instead of REDIS_URL: {"service", "sentinels": [(host, port), ...], "db", "username", "password",
    # "sentinel_username", "sentinel_password", "ssl", "sentinel_ssl", "ssl_ca_certs", "ssl_certfile",
    # "ssl_keyfile"}. REDIS_WAIT_REPLICAS: a publish succeeds only once this many replicas hold it (Redis
    # WAIT, at most REDIS_WAIT_TIMEOUT seconds), so a failover cannot lose a message reported as published.
    "REDIS_SENTINEL": None,
    # REDIS_CLUSTER: a Redis Cluster instead of REDIS_URL: {"nodes": [(host, port), ...], "username",
    # "password", "ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}; sharded pub/sub, one connection per
    # shard per process (django_pulse.broker.redis_cluster).
    "REDIS_CLUSTER": None,
    "REDIS_WAIT_REPLICAS": 0,
    "REDIS_WAIT_TIMEOUT": 1.0,
    # Durable publishes (docs/durability.md). OUTBOX: publish-on-save registrations write their messages to the
    # outbox table in the transaction of the change (False: published from an on_commit callback, lost if the
    # process dies or the broker fails at that moment). OUTBOX_RELAY: server processes relay outbox rows (False:
    # run `manage.py pulse relay` instead). OUTBOX_POLL_INTERVAL: seconds between a relay's looks for rows
    # committed by other processes. OUTBOX_MAX_ATTEMPTS: failed publishes of a row for its own reasons (a template
    # error, too large) before it is kept as a dead letter. OUTBOX_LEASE: seconds a relay holds the rows it took
    # (another relay takes them after that if it died). OUTBOX_DATABASES: the database aliases whose outbox the
    # relays publish (None: every database Django's router lets the outbox table migrate to, aliases that are a
    # test mirror of another left out); a durable publish on a database not among them is refused.
    "OUTBOX": True,
    "OUTBOX_RELAY": True,
    "OUTBOX_POLL_INTERVAL": 0.2,
    "OUTBOX_MAX_ATTEMPTS": 5,
    "OUTBOX_LEASE": 30.0,
    "OUTBOX_DATABASES": None,
    # Operations: Prometheus metrics (django_pulse.ops.metrics, docs/metrics.md). None: on when the
    # prometheus-client package is installed (extra "metrics"); False: off (every counter call is a no-op).
    "METRICS": None,
    # The admin's live view (docs/admin.md): while staff watch it, the server process holding their connection
    # publishes a snapshot at most this often (seconds), and only when something changed.
    "LIVE_VIEW_INTERVAL": 2.0,
}


class PulseSettings:
    """Typed, live view of ``settings.PULSE`` merged over ``DEFAULTS``."""

    # -- operations --
    @property
    def METRICS(self) -> bool | None:
        value = self._get("METRICS")
        return None if value is None else bool(value)

    def _get(self, name: str) -> Any:
        user = getattr(settings, "PULSE", None) or {}
        return user.get(name, DEFAULTS[name])

    @property
    def user_keys(self) -> set[str]:
        return set((getattr(settings, "PULSE", None) or {}).keys())

    @property
    def DEFAULT_KB_ID(self) -> str:
        return str(self._get("DEFAULT_KB_ID"))

    @property
    def ENDPOINT(self) -> str | None:
        value = self._get("ENDPOINT")
        return None if value is None else str(value)

    @property
    def SERVER_URL(self) -> str:
        return str(self._get("SERVER_URL")).rstrip("/")

    @property
    def WS_PATH(self) -> str:
        return str(self._get("WS_PATH")).strip("/") + "/"

    @property
    def TOKEN_TTL(self) -> int:
        return int(self._get("TOKEN_TTL"))

    @property
    def TOKEN_LEEWAY(self) -> int:
        return int(self._get("TOKEN_LEEWAY"))

    @property
    def DEFAULT_CAPABILITIES(self) -> dict[str, list[str]]:
        return {str(k): list(v) for k, v in dict(self._get("DEFAULT_CAPABILITIES")).items()}

    @property
    def UNHOOKED_CHANNELS(self) -> str:
        return str(self._get("UNHOOKED_CHANNELS"))

    @property
    def PRIVATE_PREFIXES(self) -> list[str]:
        return [str(p) for p in self._get("PRIVATE_PREFIXES")]

    @property
    def USER_RESOLVER(self) -> str | None:
        value = self._get("USER_RESOLVER")
        return None if value is None else str(value)

    @property
    def REDIS_URL(self) -> str | None:
        """The explicit PULSE REDIS_URL, else the first host of a channels_redis default layer, else None."""
        value = self._get("REDIS_URL")
        if value:
            return str(value)
        if self._get("REDIS_CLUSTER"):
            # Stands for "the Redis Cluster of REDIS_CLUSTER" (django_pulse.broker.connection).
            return "cluster://"
        sentinel = self._get("REDIS_SENTINEL")
        if sentinel:
            # Stands for "the current master of the service" (django_pulse.broker.connection).
            return f"sentinel://{dict(sentinel).get('service', '')}"
        layer = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default", {})
        if "channels_redis" in str(layer.get("BACKEND", "")):
            hosts = (layer.get("CONFIG") or {}).get("hosts") or []
            if hosts:
                host = hosts[0]
                if isinstance(host, str):
                    return host
                if isinstance(host, dict) and "address" in host:
                    return str(host["address"])
                if isinstance(host, list | tuple) and len(host) == 2:
                    return f"redis://{host[0]}:{host[1]}/0"
        return None

    @property
    def REDIS_PREFIX(self) -> str:
        return str(self._get("REDIS_PREFIX"))

    @property
    def BROKER_BACKEND(self) -> str:
        value = self._get("BROKER_BACKEND")
        if value:
            return str(value)
        if self.REDIS_URL == "cluster://":
            return "django_pulse.broker.redis_cluster.RedisClusterBroker"
        if self.REDIS_URL:
            return "django_pulse.broker.redis.RedisBroker"
        return "django_pulse.broker.memory.MemoryBroker"

    @property
    def PRESENCE_BACKEND(self) -> str:
        value = self._get("PRESENCE_BACKEND")
        if value:
            return str(value)
        if self.REDIS_URL:
            return "django_pulse.presence.redis.RedisPresence"
        return "django_pulse.presence.memory.MemoryPresence"

    @property
    def MAX_MESSAGE_SIZE(self) -> int:
        return int(self._get("MAX_MESSAGE_SIZE"))

    @property
    def MAX_SUBSCRIPTIONS(self) -> int:
        return int(self._get("MAX_SUBSCRIPTIONS"))

    @property
    def AUTH_TIMEOUT(self) -> float:
        return float(self._get("AUTH_TIMEOUT"))

    @property
    def HEARTBEAT_INTERVAL(self) -> float:
        return float(self._get("HEARTBEAT_INTERVAL"))

    @property
    def HEARTBEAT_GRACE(self) -> float:
        return float(self._get("HEARTBEAT_GRACE"))

    @property
    def RATE_LIMIT(self) -> float:
        return float(self._get("RATE_LIMIT"))

    @property
    def RATE_BURST(self) -> float:
        return float(self._get("RATE_BURST"))

    @property
    def PUBLISH_RATE(self) -> float:
        return float(self._get("PUBLISH_RATE"))

    @property
    def WHISPER_RATE(self) -> float:
        return float(self._get("WHISPER_RATE"))

    @property
    def OUTBOUND_BUFFER_LIMIT(self) -> int:
        return int(self._get("OUTBOUND_BUFFER_LIMIT"))

    @property
    def PRESENCE_GRACE(self) -> float:
        return float(self._get("PRESENCE_GRACE"))

    @property
    def PRESENCE_MAX_DATA(self) -> int:
        return int(self._get("PRESENCE_MAX_DATA"))

    @property
    def LIVE_VIEW_INTERVAL(self) -> float:
        return float(self._get("LIVE_VIEW_INTERVAL"))

    @property
    def PRESENCE_MAX_MEMBERS(self) -> int:
        return int(self._get("PRESENCE_MAX_MEMBERS"))

    @property
    def MAX_CONNECTIONS_PER_CLIENT(self) -> int:
        return int(self._get("MAX_CONNECTIONS_PER_CLIENT") or 0)

    @property
    def PRESENCE_MAX_CHANNELS(self) -> int:
        return int(self._get("PRESENCE_MAX_CHANNELS") or 0)

    @property
    def PRESENCE_MAX_MEMBERS_PER_CLIENT(self) -> int:
        return int(self._get("PRESENCE_MAX_MEMBERS_PER_CLIENT") or 0)

    @property
    def PRESENCE_MAX_ANONYMOUS_MEMBERS(self) -> int:
        return int(self._get("PRESENCE_MAX_ANONYMOUS_MEMBERS") or 0)

    @property
    def CHANNEL_TTL(self) -> float:
        return float(self._get("CHANNEL_TTL"))

    @property
    def PROCESS_HEARTBEAT(self) -> float:
        return float(self._get("PROCESS_HEARTBEAT"))

    @property
    def PROCESS_TIMEOUT(self) -> float:
        return float(self._get("PROCESS_TIMEOUT"))

    @property
    def ALLOWED_ORIGINS(self) -> list[str] | None:
        value = self._get("ALLOWED_ORIGINS")
        return None if value is None else [str(v) for v in value]

    @property
    def MAX_BATCH(self) -> int:
        return int(self._get("MAX_BATCH"))

    # Live templates ---------------------------------------------------------------------------------------

    @property
    def LIVE_ANONYMOUS(self) -> bool:
        return bool(self._get("LIVE_ANONYMOUS"))

    @property
    def LIVE_ANONYMOUS_RATE(self) -> str | None:
        value = self._get("LIVE_ANONYMOUS_RATE")
        return None if value is None else str(value)

    @property
    def REVOKE_TOKENS_WITH_KEY(self) -> bool:
        return bool(self._get("REVOKE_TOKENS_WITH_KEY"))

    @property
    def TRUSTED_PROXIES(self) -> int | list[str] | None:
        value = self._get("TRUSTED_PROXIES")
        if value is None or isinstance(value, int):
            return value
        return [str(v) for v in value]

    @property
    def API_THROTTLE_RATE(self) -> str | None:
        value = self._get("API_THROTTLE_RATE")
        return None if value is None else str(value)

    @property
    def IDEMPOTENCY_WINDOW(self) -> float:
        return float(self._get("IDEMPOTENCY_WINDOW"))

    @property
    def HISTORY_SIZE(self) -> int:
        return int(self._get("HISTORY_SIZE"))

    @property
    def HISTORY_TTL(self) -> float:
        return float(self._get("HISTORY_TTL"))

    @property
    def HISTORY_MIN_RETENTION(self) -> float:
        return float(self._get("HISTORY_MIN_RETENTION"))

    @property
    def DIRECT_WRITE(self) -> bool:
        return bool(self._get("DIRECT_WRITE"))

    @property
    def REDIS_SENTINEL(self) -> dict[str, Any] | None:
        value = self._get("REDIS_SENTINEL")
        return None if value is None else dict(value)

    @property
    def REDIS_CLUSTER(self) -> dict[str, Any] | None:
        value = self._get("REDIS_CLUSTER")
        return None if value is None else dict(value)

    @property
    def REDIS_WAIT_REPLICAS(self) -> int:
        return int(self._get("REDIS_WAIT_REPLICAS"))

    @property
    def REDIS_WAIT_TIMEOUT(self) -> float:
        return float(self._get("REDIS_WAIT_TIMEOUT"))

    @property
    def TOKEN_PERMISSION(self) -> str | None:
        value = self._get("TOKEN_PERMISSION")
        return None if value is None else str(value)

    @property
    def PUBLIC_URL(self) -> str | None:
        value = self._get("PUBLIC_URL")
        return None if not value else str(value).rstrip("/")

    # SSE transport
    @property
    def OUTBOX(self) -> bool:
        return bool(self._get("OUTBOX"))

    @property
    def OUTBOX_RELAY(self) -> bool:
        return bool(self._get("OUTBOX_RELAY"))

    @property
    def OUTBOX_POLL_INTERVAL(self) -> float:
        return max(0.01, float(self._get("OUTBOX_POLL_INTERVAL")))

    @property
    def OUTBOX_MAX_ATTEMPTS(self) -> int:
        return max(1, int(self._get("OUTBOX_MAX_ATTEMPTS")))

    @property
    def OUTBOX_LEASE(self) -> float:
        return max(1.0, float(self._get("OUTBOX_LEASE")))

    @property
    def OUTBOX_DATABASES(self) -> list[str] | None:
        value = self._get("OUTBOX_DATABASES")
        return None if value is None else [str(alias) for alias in value]

    @property
    def SSE_PATH(self) -> str:
        return str(self._get("SSE_PATH")).strip("/") + "/"

    @property
    def SSE_TICKET_TTL(self) -> float:
        return float(self._get("SSE_TICKET_TTL"))

    @property
    def SSE_CLOSE_LINGER(self) -> float:
        return float(self._get("SSE_CLOSE_LINGER"))

    @property
    def SSE_MAX_AGE(self) -> float:
        return float(self._get("SSE_MAX_AGE"))

    def endpoint_from_base(self, base_url: str) -> str:
        """The ws(s) endpoint URL under an http(s) base URL."""
        parts = urlsplit(base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/{self.WS_PATH}"


pulse_settings = PulseSettings()
